"""Durable waits: a long wait suspends the run (WAITING, slot freed), any daemon resumes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.lowlevel
import asyncpg

from taskd import Client, Context, RunStatus, task, wait
from tests.support.waiting import wait_for, wait_for_run

CALLS: dict[str, int] = {}


def count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


@task(id="waits.welcome")
async def welcome(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await ctx.step("email", count, f"email:{ctx.run_id}")
    await wait.for_(seconds=payload["seconds"])
    await ctx.step("list", count, f"list:{ctx.run_id}")
    return {"executions": count(f"exec:{ctx.run_id}")}


@task(id="waits.short")
async def short(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    entered = count(f"entered:{ctx.run_id}")  # a suspended run enters its function again
    await wait.for_(seconds=payload["seconds"])
    return {"entered": entered}


@task(id="waits.quick")
async def quick(payload: Any, ctx: Context) -> str:
    return "quick"


def suspensions(daemon: Any, task_id: str) -> float:
    """The daemon's taskd_runs_suspended_total for this task."""
    value = daemon.metrics.registry.get_sample_value(
        "taskd_runs_suspended_total", {"task": task_id}
    )
    return value or 0.0


async def skip_wait(db: asyncpg.Connection, run_id: Any) -> None:
    """Move a waiting run's wake-up time (the run's and its wait step's) to now."""
    await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1;", run_id)
    await db.execute(
        "UPDATE taskd.steps SET result = to_jsonb((now() - interval '1 second')::text)"
        " WHERE run_id = $1 AND name = 'wait:1'",
        run_id,
    )


async def status_of(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


async def test_a_long_wait_frees_the_slot_and_resumes_after_it(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    CALLS.clear()
    async with start_daemon([welcome, quick], concurrency=1, wait_threshold=0.2) as daemon:
        run_id = await client.trigger("waits.welcome", {"seconds": 60})
        await wait_for(lambda: status_of(client, run_id, RunStatus.WAITING))
        waiting = await client.get_run(run_id)
        assert waiting.run_at > datetime.now(UTC) + timedelta(seconds=50)  # the wake-up time
        assert waiting.worker_id is None and waiting.attempt == 0  # not spent
        # the only slot is free: other work runs meanwhile
        other = await client.trigger("waits.quick", {})
        assert (await wait_for_run(client, other)).output == "quick"
        assert (await client.get_run(run_id)).status is RunStatus.WAITING
        # the rest of the minute is skipped, not waited for: the wake-up time (the run's and
        # the wait's recorded one) moves to now, as the clock would have
        await skip_wait(db, run_id)
        done = await wait_for_run(client, run_id, timeout=10)
        assert suspensions(daemon, "waits.welcome") == 1
    assert done.status is RunStatus.COMPLETED and done.attempt == 1
    # the email step ran once; the code after the wait ran once, on the resumed execution
    assert CALLS[f"email:{run_id}"] == 1 and CALLS[f"list:{run_id}"] == 1
    assert done.output == {"executions": 1}
    assert [s.name for s in done.steps] == ["email", "wait:1", "list"]
    assert [a.outcome.value for a in done.attempts] == ["completed"]


async def test_a_short_wait_sleeps_in_its_slot(client: Client, start_daemon) -> None:
    CALLS.clear()
    async with start_daemon([short], wait_threshold=5) as daemon:
        run_id = await client.trigger("waits.short", {"seconds": 0.3})
        done = await wait_for_run(client, run_id)
        suspended = suspensions(daemon, "waits.short")
    assert done.status is RunStatus.COMPLETED
    # never suspended: one execution of the function, no suspension counted
    assert CALLS[f"entered:{run_id}"] == 1 and done.output == {"entered": 1}
    assert suspended == 0
    assert [s.name for s in done.steps] == ["wait:1"]
    assert done.finished_at is not None and done.started_at is not None
    assert (done.finished_at - done.started_at).total_seconds() >= 0.3


async def test_a_two_day_wait_survives_a_restart(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    CALLS.clear()
    async with start_daemon([welcome], wait_threshold=1):
        run_id = await client.trigger("waits.welcome", {"seconds": 2 * 86_400})
        await wait_for(lambda: status_of(client, run_id, RunStatus.WAITING))
    # no daemon now; the run waits in the database. Two days pass (the database's clock is
    # moved for this run: its wake-up time and the wait's recorded one).
    waiting = await client.get_run(run_id)
    assert waiting.run_at - datetime.now(UTC) > timedelta(days=1, hours=23)
    await skip_wait(db, run_id)
    async with start_daemon([welcome], wait_threshold=1):  # a new daemon resumes it
        done = await wait_for_run(client, run_id, timeout=10)
    assert done.status is RunStatus.COMPLETED
    assert CALLS[f"email:{run_id}"] == 1 and CALLS[f"list:{run_id}"] == 1


async def test_canceling_a_waiting_run(client: Client, start_daemon) -> None:
    async with start_daemon([welcome], wait_threshold=0.1):
        run_id = await client.trigger("waits.welcome", {"seconds": 60})
        await wait_for(lambda: status_of(client, run_id, RunStatus.WAITING))
        assert await client.cancel(run_id) is RunStatus.CANCELED
        await anyio.lowlevel.checkpoint()
        run = await client.get_run(run_id)
    assert run.status is RunStatus.CANCELED and run.finished_at is not None

"""Burst mode in-process (`taskd run --until-empty`): the daemon runs what is due, then drains and
returns by itself, with the exit code and the counts its summary prints.

Every burst runs with a poll interval of a minute: it must end (and claim what becomes due
during it) on its own signals, never by waiting for a poll.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import (
    Client,
    Context,
    Queue,
    Rate,
    Retry,
    RunFailed,
    RunStatus,
    TaskDefinition,
    task,
    wait,
)
from taskd.app import EXIT_RUNS_FAILED, Daemon
from taskd.config import Settings
from taskd.sdk.registry import Registry
from tests.support.in_process import test_settings
from tests.support.runs import insert_run, insert_runs, sql
from tests.support.waiting import wait_for

ATTEMPTS: dict[str, int] = {}
GATES: dict[str, anyio.Event] = {}
SINGLE = Queue("burst-single", concurrency=1)


@task(id="burst.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


@task(id="burst.boom", retry=Retry(max_attempts=1))
async def boom(payload: Any, ctx: Context) -> None:
    raise ValueError("boom")


@task(id="burst.later", retry=Retry(max_attempts=3, min_delay=3600, max_delay=3600))
async def later(payload: Any, ctx: Context) -> None:
    raise ValueError("try again in an hour")


@task(id="burst.flaky", retry=Retry(max_attempts=3, min_delay=0, max_delay=0, jitter=False))
async def flaky(payload: Any, ctx: Context) -> str:
    key = str(ctx.run_id)
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] < 3:
        raise ValueError(f"attempt {ATTEMPTS[key]} fails")
    return "third time"


@task(id="burst.leaf", retry=Retry(max_attempts=1))
async def leaf(payload: dict[str, Any], ctx: Context) -> int:
    if payload.get("fail"):
        raise ValueError("leaf failed")
    return int(payload["n"]) * 10


@task(id="burst.branch")
async def branch(payload: dict[str, Any], ctx: Context) -> int:
    values = await leaf.batch_trigger_and_wait([{"n": n} for n in payload["leaves"]])
    return sum(v for v in values if not isinstance(v, RunFailed))


@task(id="burst.root")
async def root(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    branches = await branch.batch_trigger_and_wait([{"leaves": ls} for ls in payload["branches"]])
    single = await leaf.trigger_and_wait({"n": 1})
    return {"branches": branches, "single": single}


@task(id="burst.sleeper")
async def sleeper(payload: Any, ctx: Context) -> None:
    await wait.for_(hours=1)


@task(id="burst.gated", queue=SINGLE)
async def gated(payload: Any, ctx: Context) -> None:
    await GATES[payload].wait()


@task(id="burst.single", queue=SINGLE)
async def single(payload: Any, ctx: Context) -> str:
    return "single"


@task(id="burst.rated", queue=Queue("burst-rated", rate_limit=Rate(2, per="300ms")))
async def rated(payload: Any, ctx: Context) -> str:
    return "rated"


async def burst(
    database: str,
    tasks: Sequence[TaskDefinition[Any, Any]],
    configure: Callable[[Settings], None] | None = None,
    **worker: Any,
) -> Daemon:
    """A daemon in burst mode, run until it returns by itself (a deadline fails the test)."""
    settings = test_settings(database, poll_interval=worker.pop("poll_interval", 60.0), **worker)
    if configure is not None:
        configure(settings)
    daemon = Daemon(settings, Registry(tasks), database, until_empty=True)
    with anyio.fail_after(60):
        await daemon.run(handle_signals=False)
    return daemon


async def statuses(db: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> list[str]:
    rows = await db.fetch(
        "SELECT status FROM taskd.runs r JOIN unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)"
        " ON u.id = r.id ORDER BY u.n",
        list(ids),
    )
    return [row["status"] for row in rows]


def summary(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    [record] = [r for r in caplog.records if r.name == "taskd.burst"]
    return record


async def test_due_runs_are_drained_and_a_delayed_run_is_left_queued(
    database: str, client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    due = [await client.trigger("burst.echo", {"n": n}) for n in range(5)]
    delayed = await client.trigger("burst.echo", {"n": "later"}, delay="1h")
    caplog.set_level(logging.INFO, logger="taskd.burst")

    daemon = await burst(database, [echo])

    assert daemon.exit_code == 0
    assert await statuses(db, due) == ["completed"] * 5
    assert await statuses(db, [delayed]) == ["queued"]
    assert daemon.burst is not None and daemon.burst.emptied
    line = summary(caplog)
    assert line.getMessage().startswith("burst done (nothing due left): claimed 5, completed 5,")
    assert "left for later: 1 delayed, 0 waiting, 0 due but held back; exit 0" in (
        line.getMessage()
    )
    # the worker stopped like any drained daemon
    assert await db.fetchval("SELECT stopped_at IS NOT NULL FROM taskd.workers") is True


async def test_an_empty_queue_ends_the_burst_at_once(
    database: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # runs of a task it does not serve, and of a queue it does not serve, are not its business
    await insert_run(db, task_id="someone-else")
    await insert_run(db, task_id="burst.echo", queue="elsewhere")
    caplog.set_level(logging.INFO, logger="taskd.burst")

    # the poll interval (a minute) is beyond the deadline: the burst must not wait for it
    daemon = await burst(database, [echo], queues=["default"])

    assert daemon.exit_code == 0
    assert daemon.burst is not None and daemon.burst.emptied
    assert summary(caplog).getMessage().startswith("burst done (nothing due left): claimed 0,")
    assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'queued'") == 2


async def test_a_failed_run_gives_the_failure_exit_code(
    database: str, client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    ok = await client.trigger("burst.echo", {})
    failed = await client.trigger("burst.boom", {})
    caplog.set_level(logging.INFO, logger="taskd.burst")

    daemon = await burst(database, [echo, boom])

    assert daemon.exit_code == EXIT_RUNS_FAILED == 3
    assert await statuses(db, [ok, failed]) == ["completed", "failed"]
    line = summary(caplog)
    assert line.levelno == logging.WARNING
    assert "completed 1, failed 1, left to retry 0" in line.getMessage()


async def test_a_retry_not_due_yet_is_left_for_later_and_fails_the_burst(
    database: str, client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await client.trigger("burst.later", {})
    caplog.set_level(logging.INFO, logger="taskd.burst")

    daemon = await burst(database, [later])

    # the work is not done: a CI job must not read this burst as a success
    assert daemon.exit_code == EXIT_RUNS_FAILED
    row = await db.fetchrow("SELECT status, attempt, run_at > now() AS later FROM taskd.runs")
    assert dict(row) == {"status": "queued", "attempt": 1, "later": True}
    assert await statuses(db, [run_id]) == ["queued"]
    assert "failed 0, left to retry 1" in summary(caplog).getMessage()
    assert "left for later: 1 delayed" in summary(caplog).getMessage()


async def test_retries_due_at_once_run_within_the_burst(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    run_id = await client.trigger("burst.flaky", {})

    daemon = await burst(database, [flaky])

    assert daemon.exit_code == 0  # two attempts failed, the run completed: the work is done
    assert await statuses(db, [run_id]) == ["completed"]
    assert ATTEMPTS[str(run_id)] == 3


async def test_the_configured_queues_limit_the_burst(database: str, db: asyncpg.Connection) -> None:
    ids = await insert_runs(
        db,
        4,
        task_id="burst.echo",
        queue=sql("(ARRAY['a', 'b', 'c', 'a'])[n]"),
        payload=sql("to_jsonb(n)"),
    )

    daemon = await burst(database, [echo], queues=["a", "b"])

    assert daemon.exit_code == 0
    assert await statuses(db, ids) == ["completed", "completed", "queued", "completed"]


async def test_a_parent_and_its_whole_tree_of_children_complete_within_one_burst(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    run_id = await client.trigger("burst.root", {"branches": [[1, 2], [3], [4, 5, 6]]})

    daemon = await burst(database, [root, branch, leaf])

    assert daemon.exit_code == 0
    run = await client.get_run(run_id)
    assert run.status is RunStatus.COMPLETED, run
    assert run.output == {"branches": [30, 30, 150], "single": 10}
    counts = dict(await db.fetch("SELECT status, count(*) FROM taskd.runs GROUP BY status"))
    assert counts == {"completed": 1 + 3 + 6 + 1}


async def test_a_parent_whose_last_child_ended_before_it_suspended_is_not_left_waiting(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    # The race wake_parents misses (the child's outcome written while the parent still
    # executed), set up as it ends: the parent waits for its recheck, the child has finished
    # since the parent's attempt began. A resident daemon wakes it at the recheck; a burst,
    # which would otherwise find nothing due and leave, wakes it at once.
    parent_id = await insert_run(
        db,
        task_id="burst.branch",
        status="waiting",
        run_at=sql("now() + interval '1 hour'"),
        attempt_started_at=sql("now() - interval '1 second'"),
        started_at=sql("now() - interval '1 second'"),
        payload='{"leaves": [7]}',
    )
    child_id = await insert_run(
        db,
        task_id="burst.leaf",
        status="completed",
        parent_id=parent_id,
        payload='{"n": 7}',
        output="70",
        finished_at=sql("now()"),
    )
    await db.execute(
        "INSERT INTO taskd.steps"
        " (run_id, name, status, result, attempts, run_attempt, started_at, finished_at)"
        " VALUES ($1, 'children:1', 'completed', $2::text::jsonb, 1, 1,"
        "         now() - interval '1 second', now() - interval '1 second')",
        parent_id,
        f'["{child_id}"]',
    )

    daemon = await burst(database, [branch, leaf])

    assert daemon.exit_code == 0
    assert await statuses(db, [parent_id, child_id]) == ["completed", "completed"]
    assert await db.fetchval("SELECT output FROM taskd.runs WHERE id = $1", parent_id) == "70"


async def test_a_long_wait_is_left_waiting(
    database: str, client: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = await client.trigger("burst.sleeper", {})
    caplog.set_level(logging.INFO, logger="taskd.burst")

    daemon = await burst(database, [sleeper])

    assert daemon.exit_code == 0  # not failed: left for later, like a delayed run
    assert await statuses(db, [run_id]) == ["waiting"]
    assert "left for later: 0 delayed, 1 waiting" in summary(caplog).getMessage()


async def test_runs_a_limit_held_by_another_daemon_holds_back_are_left_to_it(
    database: str,
    client: Client,
    db: asyncpg.Connection,
    start_daemon: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    GATES["held"] = gate = anyio.Event()
    async with start_daemon([gated, single]):
        holder = await client.trigger("burst.gated", "held")

        async def executing() -> bool:
            return await statuses(db, [holder]) == ["executing"]

        await wait_for(executing)
        waiting = await client.trigger("burst.single", {})
        caplog.set_level(logging.INFO, logger="taskd.burst")

        # the slot of the queue (concurrency 1) is the resident daemon's: the burst does not
        # wait on a run it does not control, and leaves the due run to the daemon that holds it
        daemon = await burst(database, [single])

        assert daemon.exit_code == 0
        assert await statuses(db, [waiting]) == ["queued"]
        assert "claimed 0" in summary(caplog).getMessage()
        assert "0 delayed, 0 waiting, 1 due but held back" in summary(caplog).getMessage()
        gate.set()

        async def both_done() -> bool:
            return await statuses(db, [holder, waiting]) == ["completed", "completed"]

        await wait_for(both_done)


async def test_a_rate_limited_queue_is_drained_window_by_window(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    ids = [await client.trigger("burst.rated", n, queue="burst-rated") for n in range(5)]

    daemon = await burst(database, [rated])

    assert daemon.exit_code == 0
    assert await statuses(db, ids) == ["completed"] * 5
    starts = await db.fetch("SELECT started_at FROM taskd.runs ORDER BY started_at")
    # 2 per 300 ms: the fifth start is at least two windows after the first
    assert (starts[4][0] - starts[0][0]).total_seconds() >= 0.59

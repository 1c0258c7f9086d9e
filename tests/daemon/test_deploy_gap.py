"""A task unserved for a moment (a deploy's gap between the old daemon's stop and the new one's
start) loses nothing: `unknown_task_timeout` counts from when the task became unserved and
only for due runs, and event subscriptions are retired only once a task has gone unserved
for long (review findings M3 and M7).

Time is skipped, never waited for: the tests move the workers' stop times and the runs'
run_at back in the database, and call the maintenance chores directly.
"""

from __future__ import annotations

import re
import uuid

import asyncpg

from taskd import Client, Context, RunStatus, task
from taskd.store.store import Store
from taskd.worker.subscription_retirer import RETIRE_SUBSCRIPTIONS_AFTER
from tests.support.waiting import wait_for, wait_for_run


@task(id="gap.t", on_event="gap.happened")
async def deployed(payload: dict, ctx: Context) -> str:
    return "ran"


@task(id="gap.u")
async def other(payload: dict, ctx: Context) -> str:
    return "other"


async def status_of(db: asyncpg.Connection, run_id: uuid.UUID) -> str:
    status: str = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id)
    return status


async def skip_back(db: asyncpg.Connection, task_id: str, seconds: float) -> None:
    """The workers that served ``task_id`` registered it and stopped ``seconds`` earlier than
    they did."""
    await db.execute(
        "UPDATE taskd.workers SET stopped_at = stopped_at - make_interval(secs => $2)"
        " WHERE $1 = ANY(tasks) AND stopped_at IS NOT NULL",
        task_id,
        seconds,
    )
    await db.execute(
        "UPDATE taskd.tasks SET updated_at = updated_at - make_interval(secs => $2),"
        " last_served_at = last_served_at - make_interval(secs => $2) WHERE id = $1",
        task_id,
        seconds,
    )


async def test_a_deploy_gap_fails_no_run_of_the_briefly_unserved_task(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    # The review's probe: B serves U with unknown_task_timeout=60; A, the only daemon serving
    # T, stops cleanly (a deploy) with a run of T created two hours ago, due or delayed.
    async with start_daemon([other], unknown_task_timeout=60, heartbeat=0.5, lease=2) as b:
        assert b.unknown_task_failer is not None
        async with start_daemon([deployed]):
            delayed = await client.trigger("gap.t", {}, delay="1h")
            due = await client.trigger("gap.t", {}, delay="1h")
            await db.execute(
                "UPDATE taskd.runs SET created_at = now() - interval '2 hours' WHERE id = ANY($1)",
                [delayed, due],
            )
        # A has stopped: T is unserved, for a moment. One run was due long before (a retry in
        # backoff, a run woken from a long wait) and A had not claimed it yet.
        await db.execute(
            "UPDATE taskd.runs SET run_at = now() - interval '2 hours' WHERE id = $1", due
        )
        assert await b.unknown_task_failer.run_once() == 0
        assert await status_of(db, delayed) == "queued"
        assert await status_of(db, due) == "queued"

        # Even after the stopped worker's row is pruned, the moment T became unserved is kept.
        assert (
            await Store(client.pool).retention.prune_workers(await db.fetchval("SELECT now()")) >= 1
        )
        assert (
            await db.fetchval("SELECT count(*) FROM taskd.workers WHERE 'gap.t' = ANY(tasks)") == 0
        )
        assert (
            await db.fetchval("SELECT last_served_at FROM taskd.tasks WHERE id = 'gap.t'")
            is not None
        )
        assert await b.unknown_task_failer.run_once() == 0
        assert await status_of(db, due) == "queued"

        # Unserved for longer than the timeout: the due run fails, the delayed one waits for
        # its time (then for the timeout again).
        await db.execute(
            "UPDATE taskd.tasks SET last_served_at = now() - interval '2 minutes',"
            " updated_at = now() - interval '3 minutes' WHERE id = 'gap.t'"
        )
        await b.unknown_task_failer.run_once()  # (or the daemon's own tick, meanwhile)
        run = await wait_for_run(client, due, (RunStatus.FAILED,), timeout=5)
        assert run.status is RunStatus.FAILED and run.error["type"] == "UnknownTask"
        # waited since T became unserved (two minutes), not since the run was due (two hours)
        waited = re.search(r"waited (\d+) s", run.error["message"])
        assert waited is not None and 120 <= int(waited.group(1)) < 7200, run.error
        assert await status_of(db, delayed) == "queued"


async def test_a_due_run_of_a_task_never_served_fails_after_the_timeout_from_its_run_at(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([other], unknown_task_timeout=60, heartbeat=0.5, lease=2) as b:
        assert b.unknown_task_failer is not None
        fresh = await client.trigger("gap.never", {})
        old = await client.trigger("gap.never", {})
        await db.execute(
            "UPDATE taskd.runs SET run_at = now() - interval '61 seconds' WHERE id = $1", old
        )
        await b.unknown_task_failer.run_once()
        await wait_for_run(client, old, (RunStatus.FAILED,), timeout=5)
        assert await status_of(db, fresh) == "queued"


async def test_subscriptions_of_a_task_no_daemon_serves_any_more_are_retired(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    # The review's probe: T subscribed to an event; its daemon stops; a daemon without T
    # starts; events keep coming.
    async with start_daemon([deployed]):
        pass
    assert (
        await db.fetchval("SELECT count(*) FROM taskd.subscriptions WHERE task_id = 'gap.t'") == 1
    )

    async with start_daemon([other], heartbeat=0.5, lease=2) as daemon:
        assert daemon.subscription_retirer is not None
        # a deploy's gap: T stopped being served a moment ago, and keeps its subscription
        assert await daemon.subscription_retirer.run_once() == []
        gap_event = await db.fetchval("SELECT taskd.send_event('gap.happened', '{}')")
        assert await db.fetchval("SELECT runs FROM taskd.events WHERE id = $1", gap_event) == 1

        # T's code was removed: nobody has served it for longer than the grace
        await skip_back(db, "gap.t", RETIRE_SUBSCRIPTIONS_AFTER + 60)

        async def retired() -> bool:
            count = await db.fetchval(
                "SELECT count(*) FROM taskd.subscriptions WHERE task_id = 'gap.t'"
            )
            return bool(count == 0)

        await wait_for(retired, timeout=10)  # the daemon's own maintenance does it
        before = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE task_id = 'gap.t'")
        for _ in range(20):
            await db.fetchval("SELECT taskd.send_event('gap.happened', '{}')")
        after = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE task_id = 'gap.t'")
        assert after == before, "runs of a task nobody serves still pile up"

    # A daemon that serves T again subscribes it again.
    async with start_daemon([deployed]):
        assert (
            await db.fetchval("SELECT count(*) FROM taskd.subscriptions WHERE task_id = 'gap.t'")
            == 1
        )


async def test_a_task_being_registered_keeps_its_subscription(
    db: asyncpg.Connection, start_daemon
) -> None:
    # A daemon starting with a new task writes the task and its subscriptions before its
    # worker row: another daemon's maintenance in between must not take them for removed.
    async with start_daemon([other], heartbeat=0.5, lease=2) as daemon:
        assert daemon.subscription_retirer is not None
        await db.execute(
            "INSERT INTO taskd.tasks (id, queue, max_attempts) VALUES ('gap.new', 'default', 3)"
        )
        await db.execute(
            "INSERT INTO taskd.subscriptions (event_name, task_id) VALUES ('gap.new', 'gap.new')"
        )
        assert await daemon.subscription_retirer.run_once() == []
        await db.execute(  # and once its registration is old, with no worker ever serving it
            "UPDATE taskd.tasks SET updated_at = now() - make_interval(secs => $1)"
            " WHERE id = 'gap.new'",
            RETIRE_SUBSCRIPTIONS_AFTER + 1,
        )
        await daemon.subscription_retirer.run_once()  # (or its own tick, meanwhile)
        assert await db.fetchval("SELECT count(*) FROM taskd.subscriptions") == 0

"""Every failure reaches the dead-letter hook (review finding L2): a run failed outside its
attempt's code (its worker lost on the last attempt, its task unserved past
unknown_task_timeout, its outcome refused by the database) gets its task's ``on_failure`` run
by a daemon that serves the task, at least once."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from taskd import Client, Context, Retry, RunStatus, task
from taskd.errors import FailedOutsideAttempt
from tests.support.daemon_process import daemons
from tests.support.runs import insert_run, sql
from tests.support.tasks.failure_hook import CREATE_HOOK_CALLS
from tests.support.waiting import wait_for, wait_for_run

MODULE = {"TASKD_TASKS__MODULES": '["tests.support.tasks.failure_hook"]'}


async def test_a_run_whose_daemon_dies_on_its_last_attempt_gets_its_on_failure_hook(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    # The review's probe: os._exit(1) in the task with max_attempts=1, under a real daemon.
    await db.execute(CREATE_HOOK_CALLS)
    async with daemons() as group:
        first = await group.start(database, **MODULE)
        await first.ready()
        run_id = await client.trigger("hook.exits", {"n": 1})
        code = await first.stop(signum=None)  # the task kills it
        assert code == 1, first.output()

        second = await group.start(database, **MODULE)
        await second.ready()
        run = await wait_for_run(client, run_id, (RunStatus.FAILED,), timeout=15)
        assert run.error is not None and run.error["type"] == "WorkerLost", run.error

        async def calls() -> list[asyncpg.Record]:
            return await db.fetch("SELECT * FROM hook_calls")

        rows = await wait_for(calls, timeout=15)
        assert [(r["run_id"], r["error_type"], r["attempts"]) for r in rows] == [
            (run_id, "WorkerLost", 1)
        ], second.output()
        assert rows[0]["pid"] == second.pid
        await wait_for(lambda: _no_pending(db), timeout=10)
        assert second.alive


HOOKED: list[tuple[uuid.UUID, str, int, Any]] = []


async def remember(payload: Any, error: BaseException, attempts: int, ctx: Context) -> None:
    assert isinstance(error, FailedOutsideAttempt)
    HOOKED.append((ctx.run_id, error.type, attempts, payload))


@task(id="hook.unserved", on_failure=remember)
async def unserved(payload: dict, ctx: Context) -> None:
    return None


@task(id="hook.other")
async def other(payload: dict, ctx: Context) -> None:
    return None


async def test_an_unknown_task_failure_gets_its_hook_from_a_daemon_that_serves_the_task(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    HOOKED.clear()
    async with start_daemon([other], unknown_task_timeout=60, heartbeat=0.5, lease=2) as b:
        assert b.unknown_task_failer is not None and b.failure_hooks is not None
        run_id = await client.trigger("hook.unserved", {"order": 7})
        await db.execute(  # nobody ever served it, and it was due two minutes ago
            "UPDATE taskd.runs SET run_at = now() - interval '2 minutes' WHERE id = $1", run_id
        )
        await b.unknown_task_failer.run_once()
        run = await wait_for_run(client, run_id, (RunStatus.FAILED,), timeout=5)
        assert run.error is not None and run.error["type"] == "UnknownTask"
        # B does not serve the task: the hook waits for a daemon that does
        assert await b.failure_hooks.run_once() == 0
        assert await db.fetchval("SELECT count(*) FROM taskd.failure_hooks") == 1

        async with start_daemon([unserved], heartbeat=0.5, lease=2):
            await wait_for(lambda: _true(HOOKED), timeout=10)
            await wait_for(lambda: _no_pending(db), timeout=10)
    assert HOOKED == [(run_id, "UnknownTask", 0, {"order": 7})]


async def _true(value: list[Any]) -> bool:
    return bool(value)


async def _no_pending(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM taskd.failure_hooks") == 0)


REFUSED: list[tuple[uuid.UUID, str]] = []


async def remember_refused(payload: Any, error: BaseException, attempts: int, ctx: Context) -> None:
    REFUSED.append((ctx.run_id, getattr(error, "type", type(error).__name__)))


@task(id="hook.refused", retry=Retry(max_attempts=3), on_failure=remember_refused)
async def refused(payload: dict, ctx: Context) -> dict:
    return {"verdict": "refused"}


async def test_an_outcome_the_database_refuses_gets_the_hook(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    # Whatever makes the database refuse an outcome (a constraint of the operator's here), the
    # run fails with OutcomeNotStored, and the executor never saw a failure to hook.
    REFUSED.clear()
    await db.execute(
        "ALTER TABLE taskd.runs ADD CONSTRAINT test_refuses CHECK "
        "(output IS NULL OR output->>'verdict' IS DISTINCT FROM 'refused')"
    )
    async with start_daemon([refused], heartbeat=0.5, lease=2):
        run_id = await client.trigger("hook.refused", {})
        run = await wait_for_run(client, run_id, (RunStatus.FAILED,), timeout=10)
        assert run.error is not None and run.error["type"] == "OutcomeNotStored"
        await wait_for(lambda: _true(REFUSED), timeout=10)
        await wait_for(lambda: _no_pending(db), timeout=10)
    assert REFUSED == [(run_id, "OutcomeNotStored")]


async def test_a_hook_cut_short_by_its_daemon_s_death_runs_again(
    client: Client, database: str, db: asyncpg.Connection, start_daemon
) -> None:
    # A daemon claimed the hook and died before it finished (its row says stopped): the claim
    # is taken again. A claim by a live worker (its lock held) is left alone.
    HOOKED.clear()
    holder = await asyncpg.connect(database)
    await holder.execute("SELECT pg_advisory_lock(4711)")
    dead, live = uuid.uuid4(), uuid.uuid4()
    for worker, stopped in ((dead, "now()"), (live, "NULL")):
        await db.execute(
            "INSERT INTO taskd.workers (id, host, pid, version, concurrency, tasks, lock_key,"
            f" stopped_at) VALUES ($1, 'h', 1, 't', 1, '{{hook.unserved}}', 4711, {stopped})",
            worker,
        )
    runs = []
    for claimer in (dead, live):
        run_id = await insert_run(
            db,
            task_id="hook.unserved",
            status="failed",
            attempt=1,
            finished_at=sql("now()"),
            error='{"type": "WorkerLost", "message": "lost"}',
        )
        await db.execute(
            "INSERT INTO taskd.failure_hooks (run_id, task_id, claimed_by, claimed_at)"
            " VALUES ($1, 'hook.unserved', $2, now())",
            run_id,
            claimer,
        )
        runs.append(run_id)
    try:
        async with start_daemon([unserved], heartbeat=0.5, lease=2) as daemon:
            assert daemon.failure_hooks is not None
            await wait_for(lambda: _true(HOOKED), timeout=10)

            async def one_left() -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM taskd.failure_hooks") == 1)

            await wait_for(one_left, timeout=10)
            await daemon.failure_hooks.run_once()  # the live claim stays put
    finally:
        await holder.close()
    assert [h[:3] for h in HOOKED] == [(runs[0], "WorkerLost", 1)]
    left = await db.fetch("SELECT run_id, claimed_by FROM taskd.failure_hooks")
    assert [(r["run_id"], r["claimed_by"]) for r in left] == [(runs[1], live)]


EXITS: list[uuid.UUID] = []


async def exit_in_hook(payload: Any, error: BaseException, attempts: int, ctx: Context) -> None:
    EXITS.append(ctx.run_id)
    raise SystemExit(3)  # a hook calling sys.exit(): logged, the daemon keeps running


@task(id="hook.exits", retry=Retry(max_attempts=3), on_failure=exit_in_hook)
async def exits(payload: dict, ctx: Context) -> dict:
    return {"verdict": "refused"}


@task(id="hook.after")
async def after(payload: dict, ctx: Context) -> str:
    return "still serving"


async def test_a_hook_raising_systemexit_is_logged_and_the_daemon_goes_on(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    EXITS.clear()
    await db.execute(
        "ALTER TABLE taskd.runs ADD CONSTRAINT test_refuses CHECK "
        "(output IS NULL OR output->>'verdict' IS DISTINCT FROM 'refused')"
    )
    async with start_daemon([exits, after], heartbeat=0.5, lease=2):
        run_id = await client.trigger("hook.exits", {})
        await wait_for_run(client, run_id, (RunStatus.FAILED,), timeout=10)
        await wait_for(lambda: _true(EXITS), timeout=10)
        await wait_for(lambda: _no_pending(db), timeout=10)
        later = await client.trigger("hook.after", {})
        assert (await wait_for_run(client, later, timeout=10)).output == "still serving"
    assert EXITS == [run_id]

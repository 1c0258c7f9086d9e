"""The outcome compare-and-set: an outcome that lost the race is logged, never applied.

README "Guarantees and limits": a run's outcome is written with a compare-and-set on its
status, lease owner and attempt. Here a real attempt outlives its lease: daemon A claims the
run (attempt 1) and is still running it when the run is handed back (the rescuer's own
statement, as for a worker found gone) and daemon B claims it (attempt 2). A's attempt then
ends and A writes its outcome through the real completer: nothing changes, and A logs
"outcome not written". The stale-attempt variant writes, as the run's current owner, the
outcome of its own earlier attempt: refused too, whatever that outcome says.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, RunStatus, task
from taskd.models import AttemptOutcome, Outcome
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.store.workers import WorkerRegistration
from tests.support.in_process import StartDaemon
from tests.support.waiting import wait_for, wait_for_run

gates: dict[int, anyio.Event] = {}


@task(id="cas.block")
async def block(payload: Any, ctx: Context) -> dict[str, int]:
    await gates[ctx.attempt].wait()
    return {"attempt": ctx.attempt}


async def executing(db: asyncpg.Connection, run_id: uuid.UUID) -> asyncpg.Record | None:
    row = await db.fetchrow(
        "SELECT status, attempt, worker_id FROM taskd.runs WHERE id = $1", run_id
    )
    return row if row["status"] == "executing" else None


async def attempts(db: asyncpg.Connection, run_id: uuid.UUID) -> list[tuple[int, str, Any]]:
    rows = await db.fetch(
        "SELECT attempt, outcome, worker_id FROM taskd.attempts WHERE run_id = $1 ORDER BY 1",
        run_id,
    )
    return [(r["attempt"], r["outcome"], r["worker_id"]) for r in rows]


async def test_an_outcome_written_after_the_run_was_rescued_and_reclaimed_is_not_applied(
    client: Client,
    db: asyncpg.Connection,
    database: str,
    start_daemon: StartDaemon,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gates.clear()
    gates[1], gates[2] = anyio.Event(), anyio.Event()
    caplog.set_level(logging.WARNING, logger="taskd")
    run_id = await client.trigger("cas.block", {}, max_attempts=5)
    # concurrency 1: A's only slot stays busy with attempt 1, so it cannot claim attempt 2
    async with start_daemon([block], concurrency=1) as a:
        first = await wait_for(lambda: executing(db, run_id))
        assert (first["attempt"], first["worker_id"]) == (1, a.worker_id)

        pool = await create_pool(database)
        try:
            handed_back = await Store(pool).runs.rescue([a.worker_id])
        finally:
            await pool.close()
        assert [(r[0], r[1], r[4]) for r in handed_back] == [(run_id, "queued", 1)]

        async with start_daemon([block]) as b:
            second = await wait_for(lambda: executing(db, run_id))
            assert (second["attempt"], second["worker_id"]) == (2, b.worker_id)

            gates[1].set()  # A's attempt ends: A writes its (stale) outcome

            def not_written() -> list[logging.LogRecord]:
                return [
                    r
                    for r in caplog.records
                    if r.getMessage().startswith("outcome not written")
                    and str(run_id) in str(vars(r))
                ]

            async def logged() -> list[logging.LogRecord]:
                return not_written()

            await wait_for(logged, timeout=10)
            now = await executing(db, run_id)
            assert now is not None, "the stale outcome ended the run"
            assert (now["attempt"], now["worker_id"]) == (2, b.worker_id)
            assert await attempts(db, run_id) == [(1, "lost", a.worker_id)]

            gates[2].set()
            run = await wait_for_run(client, run_id, (RunStatus.COMPLETED, RunStatus.FAILED))
            assert run.status == RunStatus.COMPLETED and run.output == {"attempt": 2}
            assert await attempts(db, run_id) == [
                (1, "lost", a.worker_id),
                (2, "completed", b.worker_id),
            ]
            assert len(not_written()) == 1
            assert a.completer is not None and a.completer.completed_total == 0


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (RunStatus.COMPLETED, AttemptOutcome.COMPLETED),
        (RunStatus.FAILED, AttemptOutcome.FAILED),
        (RunStatus.QUEUED, AttemptOutcome.FAILED),  # a retry
    ],
)
async def test_the_outcome_of_an_earlier_attempt_of_the_same_worker_is_not_applied(
    client: Client,
    db: asyncpg.Connection,
    database: str,
    status: RunStatus,
    outcome: AttemptOutcome,
) -> None:
    worker = uuid.uuid4()
    run_id = await client.trigger("cas.block", {}, max_attempts=5)
    pool = await create_pool(database)
    try:
        store = Store(pool)
        await store.workers.register(
            WorkerRegistration(
                worker,
                host="test",
                pid=1,
                version="test",
                concurrency=1,
                queues=["default"],
                tasks=["cas.block"],
                lock_key=4242,
            )
        )
        claimed = await store.runs.claim(["cas.block"], None, 1, worker, 60)
        assert [(r.id, r.attempt) for r in claimed.runs] == [(run_id, 1)]
        # attempt 1 is lost (its lease expired), and the same worker claims attempt 2
        await db.execute(
            "UPDATE taskd.runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
            run_id,
        )
        assert [r[0] for r in await store.runs.rescue([])] == [run_id]
        claimed = await store.runs.claim(["cas.block"], None, 1, worker, 60)
        assert [(r.id, r.attempt) for r in claimed.runs] == [(run_id, 2)]

        stale = Outcome(
            run_id,
            1,
            status,
            outcome,
            output=b'{"stale": true}' if status == RunStatus.COMPLETED else None,
            error=None if status == RunStatus.COMPLETED else b'{"type": "Stale"}',
        )
        assert await store.runs.complete_many(worker, [stale]) == {}
        row = await db.fetchrow(
            "SELECT status, attempt, worker_id FROM taskd.runs WHERE id = $1", run_id
        )
        assert (row["status"], row["attempt"], row["worker_id"]) == ("executing", 2, worker)
        assert [a[:2] for a in await attempts(db, run_id)] == [(1, "lost")]

        current = Outcome(run_id, 2, RunStatus.COMPLETED, AttemptOutcome.COMPLETED, output=b"2")
        assert await store.runs.complete_many(worker, [current]) == {run_id: "completed"}
        # written once: the same outcome again is a lost race too
        assert await store.runs.complete_many(worker, [current]) == {}
    finally:
        await pool.close()
    run = await client.get_run(run_id)
    assert run.status == RunStatus.COMPLETED and run.output == 2
    assert [a[:2] for a in await attempts(db, run_id)] == [(1, "lost"), (2, "completed")]

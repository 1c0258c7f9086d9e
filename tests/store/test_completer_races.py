"""The completer's statement against rows changed after its snapshot (review of issue 12).

The completer locks the outcome rows with SKIP LOCKED, then updates them. A row that another
transaction updated and committed after the statement's snapshot, before the lock reached it
(the daemon's own heartbeat renewing that lease, a cancel request, a metadata write), is
locked in its newest version: the update must still apply there, not miss it and drop the
outcome (which left the run executing until its lease expired, then ran it again).

To put the commit exactly in that window, the test runs the real statement with one gate
added at its start: an advisory lock the test holds, taken after the statement's snapshot.
"""

from __future__ import annotations

import uuid

import anyio
import asyncpg

from taskd.models import AttemptOutcome, Outcome, RunStatus
from taskd.store.database import create_pool
from taskd.store.runs import SQL as RUN_SQL
from taskd.store.store import Store
from tests.support.runs import insert_run, sql
from tests.support.waiting import wait_for

GATE = 7_300_001
OUTCOME_CTE = "WITH outcome AS (\n    SELECT * FROM unnest("


def gated_statement() -> str:
    sql = RUN_SQL["complete_many"]
    assert sql.count(OUTCOME_CTE) == 1, "the statement's first CTE changed: update the gate"
    # the gate: read with the outcomes, so after the snapshot and before any row is locked
    return sql.replace(
        OUTCOME_CTE,
        "WITH gate AS MATERIALIZED (SELECT pg_advisory_lock(7300001)),\n"
        "outcome AS (\n    SELECT o.* FROM gate, unnest(",
    )


async def test_an_outcome_is_written_when_its_row_changed_after_the_statements_snapshot(
    database: str, db: asyncpg.Connection
) -> None:
    worker = uuid.uuid4()
    await db.execute(
        "INSERT INTO taskd.workers (id, host, pid, version, concurrency, tasks, lock_key)"
        " VALUES ($1, 'h', 1, 'test', 1, '{t}', 1)",
        worker,
    )
    run_id = await insert_run(
        db,
        task_id="t",
        status="executing",
        attempt=1,
        worker_id=worker,
        lease_expires_at=sql("now() + interval '1 minute'"),
        attempt_started_at=sql("now()"),
        started_at=sql("now()"),
    )
    pool = await create_pool(database)
    holder = await asyncpg.connect(database)
    try:
        store = Store(pool)
        await holder.execute("SELECT pg_advisory_lock($1)", GATE)
        outcome = Outcome(
            run_id, 1, RunStatus.COMPLETED, AttemptOutcome.COMPLETED, output=b'{"ok": true}'
        )
        written: dict[uuid.UUID, str] = {}

        async def complete() -> None:
            original = RUN_SQL["complete_many"]
            RUN_SQL["complete_many"] = gated_statement()
            try:
                written.update(await store.runs.complete_many(worker, [outcome], set()))
            finally:
                RUN_SQL["complete_many"] = original

        async with anyio.create_task_group() as group:
            group.start_soon(complete)
            # the statement has its snapshot and waits at the gate
            await wait_for(
                lambda: db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid = $1",
                    GATE,
                )
            )
            # what the daemon's heartbeat does to the run meanwhile, committed
            await store.workers.heartbeat(worker, 60, [(run_id, 1)])
            await holder.execute("SELECT pg_advisory_unlock($1)", GATE)
        row = await db.fetchrow("SELECT status, worker_id FROM taskd.runs WHERE id = $1", run_id)
        assert written == {run_id: "completed"}, written
        assert (row["status"], row["worker_id"]) == ("completed", None)
    finally:
        await holder.close()
        await pool.close()

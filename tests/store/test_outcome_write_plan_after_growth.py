"""The outcome write (store ``complete_many``, every batch of finished runs) stays a primary-key
lookup per outcome when the daemon's connection prepared it on an empty database and the table
grew afterwards, the way every new deployment starts (found by bench/soak.py, issue 18).

A daemon's pooled connection prepares the statement once; after five executions PostgreSQL may
keep a generic plan, built from the table's size at that moment, until the table is next
analyzed. Planned on an empty ``taskd.runs``, that plan reads the runs table by a sequential
scan (the CTE ``locked``: ``Seq Scan on runs ... Filter: status = 'executing' AND worker_id =
$1``, joined to the outcomes). Under a steady load it reads the whole table per batch: in
``bench/soak.py --minutes 1 --rate 4000`` on this machine the outcome writes stopped within
30 s (one statement active for 19 s with 61,600 runs executing), claims went on (a finished
function frees its slot before its outcome is written), the daemon's RSS grew from 150 MB to
540 MB in a minute and the backlog to 134,000 runs.

The daemon's worker pool plans each statement for its arguments
(``plan_cache_mode = force_custom_plan``, store/database.py ``create_worker_pool``): this
prepares the statement on a connection of that pool. Not a timing test: the prepared statement
runs under ``EXPLAIN (ANALYZE)`` in a transaction rolled back, and the rows its plan's scans of
``taskd.runs`` visit are counted.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from taskd.config import DatabaseSettings
from taskd.store.database import create_worker_pool
from taskd.store.runs import SQL
from tests.support.runs import insert_runs, sql

HISTORY = 50_000
BATCH = 100


def rows_visited(plan: dict[str, Any], table: str) -> int:
    """Rows the scans of ``table`` returned or filtered out, over every loop."""
    seen = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        rows = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        seen += int(rows * plan.get("Actual Loops", 1))
    for child in plan.get("Plans", []):
        seen += rows_visited(child, table)
    return seen


def arguments(worker: uuid.UUID, ids: list[uuid.UUID]) -> list[Any]:
    n = len(ids)
    return [
        worker, ids, [1] * n, ["completed"] * n, ["completed"] * n,
        [None] * n, [None] * n, [0.0] * n, [False] * n,
    ]  # fmt: skip


async def test_an_outcome_write_prepared_on_an_empty_table_reads_its_runs_not_the_table(
    database: str, db: asyncpg.Connection
) -> None:
    # the daemon's worker pool, as it is made (store/database.py create_worker_pool)
    pool = await create_worker_pool(database, DatabaseSettings())
    try:
        async with pool.acquire() as worker_connection:
            await outcome_write_after_growth(worker_connection, db)
    finally:
        await pool.close()


async def outcome_write_after_growth(conn: Any, db: asyncpg.Connection) -> None:
    worker = uuid.uuid4()
    # the daemon's first batches, on a fresh database: the statement prepared and run ten
    # times (PostgreSQL weighs a generic plan from the sixth execution on)
    statement = await conn.prepare(SQL["complete_many"], name="outcome_write")
    for _ in range(10):
        await statement.fetch(*arguments(worker, [uuid.uuid4() for _ in range(BATCH)]))
    # the table grows before anything analyzes it (autovacuum looks once a minute)
    await insert_runs(db, HISTORY, task_id="t", status="completed", attempt=1)
    executing = await insert_runs(
        db, BATCH, task_id="t", status="executing", attempt=1, worker_id=worker,
        started_at=sql("now()"), attempt_started_at=sql("now()"),
        lease_expires_at=sql("now() + interval '1 minute'"),
    )  # fmt: skip
    transaction = conn.transaction()
    await transaction.start()
    try:
        ids = ",".join(f"'{i}'" for i in executing)
        n = len(executing)
        [plan_json] = await conn.fetchrow(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE outcome_write("
            f"'{worker}', ARRAY[{ids}]::uuid[], array_fill(1, ARRAY[{n}]),"
            f" array_fill('completed'::text, ARRAY[{n}]),"
            f" array_fill('completed'::text, ARRAY[{n}]),"
            f" array_fill(NULL::text, ARRAY[{n}]), array_fill(NULL::text, ARRAY[{n}]),"
            f" array_fill(0.0::float8, ARRAY[{n}]), array_fill(false, ARRAY[{n}]))"
        )
        written = await conn.fetchval(
            "SELECT count(*) FROM taskd.attempts WHERE worker_id = $1", worker
        )
    finally:
        await transaction.rollback()
    plan = orjson.loads(plan_json) if isinstance(plan_json, str) else plan_json
    assert written == BATCH
    visited = rows_visited(plan[0]["Plan"], "runs")
    # a few primary-key probes per outcome (lock, update, ownership check), not the history
    assert visited <= 5 * BATCH, f"{visited} rows of taskd.runs visited for {BATCH} outcomes"

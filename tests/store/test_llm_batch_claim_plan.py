"""The batch poller's claim, run every tick on every daemon, is an index range: with 10,000
open batches not yet due (seed 004's premium tier keeps one open per active user for hours), it
visits the few that are due, not the open batches nor their runs. (A batch whose run ended is
made due by a separate look the poller takes every few ticks.)

Not a timing test: the claim runs under ``EXPLAIN (ANALYZE)`` in a transaction rolled back,
and the rows its plan's scans return or filter out are counted."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from taskd.store.llm_batches import SQL
from tests.support.runs import insert_run

OPEN = 10_000
DUE = 3
TABLES = {"llm_batches", "runs"}


def rows_visited(plan: dict[str, Any]) -> dict[str, int]:
    """Rows each table's scans returned or filtered out, over every loop."""
    counts: dict[str, int] = {}
    table = plan.get("Relation Name")
    if table in TABLES and "Scan" in plan["Node Type"]:
        loops = plan.get("Actual Loops", 1)
        seen = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        seen += plan.get("Rows Removed by Index Recheck", 0)
        counts[table] = counts.get(table, 0) + int(seen * loops)
    for child in plan.get("Plans", []):
        for name, count in rows_visited(child).items():
            counts[name] = counts.get(name, 0) + count
    return counts


async def test_the_claim_visits_the_due_batches_not_every_open_one(
    db: asyncpg.Connection,
) -> None:
    waiting = await insert_run(db, task_id="t", status="waiting")
    canceled = await insert_run(db, task_id="t", status="canceled")
    await db.execute(
        """INSERT INTO taskd.llm_batches (batch_id, run_id, step, task_id, attempt, custom_ids,
                                          models, request_count, next_poll_at)
           SELECT 'msgbatch_' || i, CASE WHEN i % 2 = 0 THEN $1::uuid ELSE $2::uuid END,
                  'llm-batch:1', 't', 1, '{a}', '{m}', 1,
                  CASE WHEN i <= $4 THEN now() - interval '1 second'
                       ELSE now() + interval '1 hour' END
             FROM generate_series(1, $3) AS i""",
        waiting,
        canceled,
        OPEN,
        DUE,
    )
    await db.execute("ANALYZE taskd.llm_batches")
    transaction = db.transaction()
    await transaction.start()
    try:
        [plan_json] = await db.fetchrow(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + SQL["claim_due"], 60.0, 8
        )
        # EXPLAIN ANALYZE ran the claim: the due batches claimed, no other
        claimed = await db.fetchval("SELECT count(*) FROM taskd.llm_batches WHERE polls = 1")
    finally:
        await transaction.rollback()
    plan = orjson.loads(plan_json) if isinstance(plan_json, str) else plan_json
    assert claimed == DUE
    visited = rows_visited(plan[0]["Plan"])
    assert visited.get("llm_batches", 0) <= 2 * DUE + 8, visited
    assert visited.get("runs", 0) <= 2 * DUE, visited  # the claimed batches' runs only

"""A large fan-out: waking a parent costs the children left, not the children finished.

waits.wake_parents runs after every completion batch. Not a timing test: its plan is run under
``EXPLAIN (ANALYZE)`` (rolled back) when most of a parent's children have finished, and the
rows it visits in taskd.runs are counted. Before migration 0014 it walked every finished
child at each batch (or the whole table), O(n^2 / batch) over the fan-out.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from taskd.store.waits import SQL as WAIT_SQL
from tests.support.runs import insert_run, insert_runs, sql

CHILDREN = 5_000
LEFT = 100  # children not finished yet
BATCH = 100  # the completion batch that asks
HISTORY = 20_000  # finished runs of no parent: a table that is not only this fan-out
# The batch's own rows, the parent and a few unfinished children; never the finished ones.
MOST_ROWS_VISITED = BATCH + 50


def rows_visited(plan: dict[str, Any], table: str = "runs") -> int:
    """Rows the plan's scans of ``table`` returned or filtered out, over every loop."""
    seen = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        rows = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        seen += int(rows * plan.get("Actual Loops", 1))
    return seen + sum(rows_visited(child, table) for child in plan.get("Plans", []))


async def explain(db: asyncpg.Connection, query: str, *args: Any) -> dict[str, Any]:
    transaction = db.transaction()
    await transaction.start()
    try:
        plan = await db.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
    finally:
        await transaction.rollback()
    return json.loads(plan)[0]["Plan"]  # type: ignore[no-any-return]


async def seed_fan_out(db: asyncpg.Connection) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A waiting parent whose children finished in claim order, all but the last LEFT; the
    finished ones went through executing, as a claim leaves them (dead row versions too)."""
    # Autovacuum must not analyze behind the test's back: the test picks the statistics.
    await db.execute("ALTER TABLE taskd.runs SET (autovacuum_enabled = false)")
    await insert_runs(
        db, HISTORY, task_id="fanout.history", status="completed", finished_at=sql("now()")
    )
    parent = await insert_run(db, task_id="fanout.parent", status="waiting", attempt=1)
    children = await insert_runs(db, CHILDREN, task_id="fanout.child", parent_id=parent)
    children.sort()
    finished = children[: CHILDREN - LEFT]
    for start in range(0, len(finished), 1_000):
        chunk = finished[start : start + 1_000]
        await db.execute(
            "UPDATE taskd.runs SET status = 'executing', attempt = 1 WHERE id = ANY($1)", chunk
        )
        await db.execute(
            "UPDATE taskd.runs SET status = 'completed', finished_at = now() WHERE id = ANY($1)",
            chunk,
        )
    return parent, finished


@pytest.mark.parametrize("statistics", ["none", "analyzed"])
async def test_parents_wake_visits_only_the_unfinished_children(
    db: asyncpg.Connection, statistics: str
) -> None:
    parent, finished = await seed_fan_out(db)
    if statistics == "analyzed":
        await db.execute("ANALYZE taskd.runs")
    batch = finished[-BATCH:]  # the batch that just finished

    plan = await explain(db, WAIT_SQL["wake_parents"], batch)

    visited = rows_visited(plan)
    assert visited <= MOST_ROWS_VISITED, (
        f"waits.wake_parents visited {visited} rows of taskd.runs for a batch of {BATCH} with "
        f"{len(finished)} children finished and {LEFT} left"
    )
    # Still the right answer: not woken while children are left, woken by the last batch.
    assert await db.fetch(WAIT_SQL["wake_parents"], batch) == []
    left = await db.fetch(
        "UPDATE taskd.runs SET status = 'completed', finished_at = now() "
        "WHERE parent_id = $1 AND status = 'queued' RETURNING id",
        parent,
    )
    woken = await db.fetch(WAIT_SQL["wake_parents"], [row[0] for row in left])
    assert [row[0] for row in woken] == [parent]
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", parent) == "queued"

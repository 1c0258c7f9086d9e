"""The outcome write does work in proportion to its batch, whatever the statistics say.

`complete_many` once joined the runs to the outcomes in a way the planner, told by the
statistics that nothing executes, ran as a scan of the executing runs for each outcome: 500
outcomes compared 300,000 pairs and took 70 ms (bench/throughput.py's profiled drain found it
at 66 % of the drain's statement time). Now each run is looked up by its key from the
outcomes. This counts the rows the plan threw away after comparing them (EXPLAIN ANALYZE's
"Rows Removed by Join Filter"), which does not move with the machine's speed.

It also counts every row the plan's nodes produced or filtered out, over all their loops: the
statements after the UPDATE once joined the outcomes to the updated runs again, which the
planner ran as a scan of the updated runs per outcome (302,500 rows for 500 outcomes, thrown
away by a filter rather than a join filter), and on an analyzed table the UPDATE hashed a scan
of all 20,000 runs (33,500 rows); about 13,500 now, 27 per outcome.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from taskd.store.runs import SQL
from tests.support.runs import insert_runs

BATCH = 500


def removed_by_join_filter(node: dict[str, Any]) -> int:
    own = int(node.get("Rows Removed by Join Filter", 0)) * int(node.get("Actual Loops", 1))
    return own + sum(removed_by_join_filter(child) for child in node.get("Plans", []))


def rows_handled(node: dict[str, Any]) -> int:
    """Rows every node of the plan produced or threw away, over all its loops."""
    own = int(node.get("Actual Loops", 1)) * (
        int(node.get("Actual Rows", 0))
        + int(node.get("Rows Removed by Filter", 0))
        + int(node.get("Rows Removed by Join Filter", 0))
    )
    return own + sum(rows_handled(child) for child in node.get("Plans", []))


@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
async def test_a_batch_of_outcomes_compares_each_run_once(
    db: asyncpg.Connection, analyzed: bool
) -> None:
    await insert_runs(db, 20_000, task_id="plan.task")
    if analyzed:  # statistics taken while nothing executes, as after a quiet night
        await db.execute("ANALYZE taskd.runs")
    worker = uuid.uuid4()
    for _ in range(6):
        await db.execute(
            "SELECT * FROM taskd.claim_runs(ARRAY['plan.task'], NULL, 100, $1, 300)", worker
        )
    runs = await db.fetch(
        "SELECT id, attempt FROM taskd.runs WHERE status = 'executing' ORDER BY id LIMIT $1", BATCH
    )
    assert len(runs) == BATCH
    n = len(runs)
    args = [
        worker,
        [r["id"] for r in runs],
        [r["attempt"] for r in runs],
        ["completed"] * n,
        ["completed"] * n,
        ['{"ok": true}'] * n,
        [None] * n,
        [0.0] * n,
        [False] * n,
    ]
    async with db.transaction():
        plan = await db.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + SQL["complete_many"], *args)
        [top] = orjson.loads(plan) if isinstance(plan, str) else plan
        # every outcome written
        assert (
            await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'completed'") == BATCH
        )
    removed = removed_by_join_filter(top["Plan"])
    assert removed < 5 * BATCH, f"{removed} rows compared and thrown away for {BATCH} outcomes"
    handled = rows_handled(top["Plan"])
    assert handled < 40 * BATCH, f"{handled} rows handled by the plan for {BATCH} outcomes"

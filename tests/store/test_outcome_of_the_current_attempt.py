"""An outcome batch that carries two outcomes of one run (a superseded attempt's and its
successor's) writes the outcome of the attempt the run is at, whatever their order, and the
attempts row of that attempt only (review 18b, finding 11)."""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest

from taskd.store.runs import SQL
from tests.support.runs import insert_run, sql


@pytest.mark.parametrize("current_first", [True, False])
async def test_the_outcome_of_the_attempt_the_run_is_at_wins(
    db: asyncpg.Connection, current_first: bool
) -> None:
    worker = uuid.uuid4()
    run = await insert_run(
        db, task_id="t", status="executing", attempt=2, worker_id=worker,
        started_at=sql("now()"), attempt_started_at=sql("now()"),
        lease_expires_at=sql("now() + interval '1 minute'"),
    )  # fmt: skip
    stale = (1, "failed", "failed", None, '{"message": "stale"}')
    current = (2, "completed", "completed", '{"n": 2}', None)
    outcomes = [current, stale] if current_first else [stale, current]
    await db.fetch(
        SQL["complete_many"],
        worker,
        [run, run],
        [o[0] for o in outcomes],
        [o[1] for o in outcomes],
        [o[2] for o in outcomes],
        [o[3] for o in outcomes],
        [o[4] for o in outcomes],
        [0.0, 0.0],
        [False, False],
    )
    row = await db.fetchrow("SELECT status, output::text, error FROM taskd.runs WHERE id = $1", run)
    assert (row["status"], orjson.loads(row["output"]), row["error"]) == (
        "completed",
        {"n": 2},
        None,
    )
    attempts = await db.fetch(
        "SELECT attempt, outcome FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt", run
    )
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(2, "completed")]

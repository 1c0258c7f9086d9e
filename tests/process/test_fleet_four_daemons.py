"""Four `taskd run` processes on one database drain one backlog of 2,000 runs (issue 18 item 4):
every run's function runs once and its run has exactly one attempt, the one that completed; a
queue's concurrency limit, its per-key limit and another queue's rate limit hold across the four,
measured from the attempts' own start and finish times (database time: the claim and the
outcome's write bound the slot a run held).
"""

from __future__ import annotations

from collections import Counter

import asyncpg
import pytest

from taskd import Client
from tests.support.daemon_process import daemons, wait_all_completed
from tests.support.spans import max_overlap
from tests.support.tasks.fleet import CREATE_EFFECTS

pytestmark = pytest.mark.timeout(120)

MODULES = {"TASKD_TASKS__MODULES": '["tests.support.tasks.fleet"]'}
FREE, KEYS, PER_KEY, RATED = 1_000, 20, 30, 400
TOTAL = FREE + KEYS * PER_KEY + RATED
KEYED_LIMIT, KEY_LIMIT, RATE_PER_SECOND = 8, 2, 100


async def test_four_daemons_drain_one_backlog_once_each_within_every_limit(
    database: str, client: Client
) -> None:
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_EFFECTS)
        async with daemons() as group:
            fleet = [await group.start(database, concurrency=20, **MODULES) for _ in range(4)]
            for daemon in fleet:
                await daemon.ready(timeout=60)
            # the whole backlog at once, while all four are claiming
            runs = list(await client.batch_trigger("fleet.free", [{}] * FREE))
            for key in range(KEYS):
                runs += await client.batch_trigger(
                    "fleet.keyed", [{}] * PER_KEY, concurrency_key=f"key-{key}"
                )
            runs += await client.batch_trigger("fleet.rated", [{}] * RATED)
            await wait_all_completed(db, TOTAL, fleet, timeout=90)
            for daemon in fleet:
                assert await daemon.stop() == 0, daemon.output()
        attempts = await db.fetch(
            "SELECT a.run_id, a.attempt, a.outcome, a.worker_id, r.task_id, r.status,"
            "       r.concurrency_key AS key,"
            "       extract(epoch FROM a.started_at)::float8 AS started,"
            "       extract(epoch FROM a.finished_at)::float8 AS ended"
            "  FROM taskd.runs r LEFT JOIN taskd.attempts a ON a.run_id = r.id"
        )
        effects = Counter(
            row["run_id"] for row in await db.fetch("SELECT run_id FROM fleet_effects")
        )
    finally:
        await db.close()

    # every run once: one attempt, completed, and its function's side effect exactly once
    assert len(runs) == len(set(runs)) == TOTAL
    per_run = Counter(row["run_id"] for row in attempts)
    assert set(per_run) == set(runs)
    assert [run for run, n in per_run.items() if n != 1] == []
    assert {(r["attempt"], r["outcome"], r["status"]) for r in attempts} == {
        (1, "completed", "completed")
    }
    assert effects == Counter(runs), [run for run in runs if effects[run] != 1][:5]

    # the four shared the work: each claimed runs of its own
    assert {str(r["worker_id"]) for r in attempts} == {d.worker_id for d in fleet}

    # the keyed queue's slots, claim to outcome: at most 8 at once, and the bound was reached;
    # at most 2 at once per key
    keyed = [r for r in attempts if r["task_id"] == "fleet.keyed"]
    assert len(keyed) == KEYS * PER_KEY
    assert max_overlap([(r["started"], r["ended"]) for r in keyed]) == KEYED_LIMIT
    per_key = {
        key: max_overlap([(r["started"], r["ended"]) for r in keyed if r["key"] == key])
        for key in {r["key"] for r in keyed}
    }
    assert len(per_key) == KEYS and max(per_key.values()) <= KEY_LIMIT, per_key

    # the rated queue: in every window of one second, wherever it begins, at most 100 starts
    starts = sorted(r["started"] for r in attempts if r["task_id"] == "fleet.rated")
    assert len(starts) == RATED
    for i, start in enumerate(starts):
        in_window = sum(1 for later in starts[i : i + RATE_PER_SECOND + 1] if later < start + 1.0)
        assert in_window <= RATE_PER_SECOND, f"{in_window} starts in the second after start {i}"
    # 400 starts at 100 per second: the last one at least 3 seconds after the first
    assert starts[-1] - starts[0] >= 3.0

"""Where a claim of one run spends its round trip: what trigger-to-start waits for once the
daemon has the NOTIFY. On a fresh embedded PostgreSQL with default settings, one run queued
before each claim, alternating in rounds, the round trip as the caller sees it (median):

- ``select 1``: the protocol's floor on this machine (bind, execute, sync, one row);
- ``claim_runs, nothing queued``: taskd's claim statement entering its plpgsql function and
  finding no queue (its first statement only);
- ``claim_runs, one run``: the claim as the daemon sends it, on a bare connection;
- ``claim_runs before 0020, one run``: the same with the function as migration 0017 left it
  (its loop alone, no one-key path), loaded beside the real one: what 0020 saved;
- ``claim_runs, one run, through a pool``: the same through an asyncpg pool (acquire and
  release around it), as the daemon claimed before it held its connection;
- ``claim_runs, one run, as the daemon claims``: through taskd's store on a claim pool whose
  connection the claimer holds (Store(hold_claim_connection=True), as taskd.app builds it);
- ``the pick and update alone``: the claim's one writing statement (pick the oldest due run
  FOR UPDATE SKIP LOCKED, update it, return it) as a plain statement, without the function's
  queue and key round-robin, limits and cursors: what the function adds is the difference;
- ``raw claim``: bench/peer_raw.py's SELECT ... FOR UPDATE SKIP LOCKED of one row (in its
  transaction; its DELETE comes after the job starts, so it is not in its latency).

    .venv/bin/python bench/claim_parts.py [--rounds 3] [--claims 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

import taskd
from bench.peer_raw import CLAIM as RAW_CLAIM
from bench.peer_raw import DDL as RAW_DDL
from bench.peer_raw import DELETE as RAW_DELETE
from bench.peer_raw import INSERT_ONE as RAW_INSERT
from bench.throughput import pg_server
from taskd.store.database import create_pool, init_connection
from taskd.store.migrations import baseline_function, shipped_migrations
from taskd.store.runs import SQL
from taskd.store.store import Store

TASK = "bench.noop"

# claim_runs' writing statement for one unlimited queue and the empty concurrency key, with
# the same filters on the same index (runs_claim_idx), as one statement
PICK_AND_UPDATE = """
WITH picked AS (
    SELECT r.id FROM taskd.runs r
     WHERE r.queue = 'default' AND r.concurrency_key = '' AND r.status = 'queued'
       AND r.run_at <= now() AND r.task_id = ANY($1::text[])
       AND (r.expires_at IS NULL OR r.expires_at > now() OR r.started_at IS NOT NULL)
       AND r.cancel_requested_at IS NULL
     ORDER BY r.priority DESC, r.run_at, r.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE taskd.runs r
   SET status = 'executing', attempt = r.attempt + 1, worker_id = $3,
       lease_expires_at = now() + interval '60 seconds', attempt_started_at = now(),
       started_at = coalesce(r.started_at, now())
  FROM picked
 WHERE r.id = picked.id
RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue, r.tags, r.metadata,
          r.concurrency_key, r.retry, r.max_duration
"""


def claim_before_0020() -> str:
    """0017's taskd.claim_runs (the loop alone) as taskd.claim_runs_0017."""
    [versions] = [m for m in shipped_migrations() if m.filename == "0017_versions.sql"]
    created = baseline_function(versions, "claim_runs")
    return created.replace("taskd.claim_runs(", "taskd.claim_runs_0017(", 1)


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append(time.perf_counter() - started)
    return result


async def main(args: argparse.Namespace) -> None:
    with pg_server() as server:
        dsn = server.dsn
        await taskd.migrate(dsn)
        setup = await asyncpg.connect(dsn)
        await setup.execute(RAW_DDL)
        await setup.execute(claim_before_0020())
        claim_0017 = SQL["claim"].replace("taskd.claim_runs(", "taskd.claim_runs_0017(")
        await setup.execute(
            "INSERT INTO taskd.tasks (id, queue, max_attempts) VALUES ($1, 'default', 3)", TASK
        )
        # as the daemon's claim connections are (taskd.app): asynchronous commit, its codecs
        bare = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
        await init_connection(bare)
        pool = await create_pool(dsn, size=1, synchronous_commit=False, reset_session=False)
        held_pool = await create_pool(dsn, size=1, synchronous_commit=False, reset_session=False)
        store = Store(held_pool, claim_pool=held_pool, hold_claim_connection=True)
        worker = uuid.uuid4()
        claim_args = ([TASK], None, 100, worker, 60.0, None, "{}", [None], True)
        parts: dict[str, list[float]] = {
            "select 1": [],
            "claim_runs, nothing queued": [],
            "claim_runs, one run": [],
            "claim_runs before 0020, one run": [],
            "claim_runs, one run, through a pool": [],
            "claim_runs, one run, as the daemon claims": [],
            "the pick and update alone": [],
            "raw claim": [],
        }
        async with taskd.Client.connect(dsn) as client:

            async def raw_claim(started: float) -> list[asyncpg.Record]:
                async with setup.transaction():
                    rows = await setup.fetch(RAW_CLAIM, 100)
                    parts["raw claim"].append(time.perf_counter() - started)
                    await setup.execute(RAW_DELETE, [row["id"] for row in rows])
                return rows

            for _ in range(args.rounds):
                for _ in range(args.claims):
                    await timed(parts["select 1"], lambda: bare.fetchval("SELECT 1"))
                    none = await timed(
                        parts["claim_runs, nothing queued"],
                        lambda: bare.fetch(SQL["claim"], *claim_args),
                    )
                    assert not [row for row in none if row[0] is not None]
                    await client.trigger(TASK, {})
                    one = await timed(
                        parts["claim_runs, one run"], lambda: bare.fetch(SQL["claim"], *claim_args)
                    )
                    assert len([row for row in one if row[0] is not None]) == 1
                    await client.trigger(TASK, {})
                    one = await timed(
                        parts["claim_runs before 0020, one run"],
                        lambda: bare.fetch(claim_0017, *claim_args),
                    )
                    assert len([row for row in one if row[0] is not None]) == 1
                    await client.trigger(TASK, {})
                    one = await timed(
                        parts["claim_runs, one run, through a pool"],
                        lambda: pool.fetch(SQL["claim"], *claim_args),
                    )
                    assert len([row for row in one if row[0] is not None]) == 1
                    await client.trigger(TASK, {})
                    claim = await timed(
                        parts["claim_runs, one run, as the daemon claims"],
                        lambda: store.runs.claim(
                            [TASK], None, 100, worker, 60.0, task_versions=[None]
                        ),
                    )
                    assert len(claim.runs) == 1
                    await client.trigger(TASK, {})
                    one = await timed(
                        parts["the pick and update alone"],
                        lambda: bare.fetch(PICK_AND_UPDATE, [TASK], 100, worker),
                    )
                    assert len(one) == 1
                    await setup.execute(RAW_INSERT, "{}")
                    assert len(await raw_claim(time.perf_counter())) == 1
        await store.runs.release_claim_connection()
        await held_pool.close()
        await pool.close()
        await bare.close()
        await setup.close()
    print(f"claim round trips, median of {args.rounds} x {args.claims} (ms):")
    for name, samples in parts.items():
        print(f"  {name:<46} {statistics.median(samples) * 1000:6.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claims", type=int, default=300)
    asyncio.run(main(parser.parse_args()))

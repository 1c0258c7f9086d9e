"""What versions cost the claim (README: "Versions: runs pinned to their code"): microseconds of
``store.runs.claim`` per run claimed, 1,000 at a time (``--batch``), draining 20,000 queued
runs, by a daemon serving version 2.0.0 (``version_policy`` pinned), with and without runs
pinned to another version ahead of the backlog (the filtered case: each is probed for steps and
left).

    .venv/bin/python bench/versions_claim.py [--runs 20000] [--stuck 2000] [--repeat 3]
        [--batch 1000]

Each configuration on a fresh embedded PostgreSQL; the database's time is included (the claim
is one statement). ``--stuck 0`` measures the common claim only. To compare with the claim
before versions, run the same loop from an older checkout without ``task_versions``/``pinned``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import fresh_server, run_async

SEED_STUCK = """
INSERT INTO taskd.runs (id, task_id, queue, payload, run_at, version, attempt, started_at)
SELECT gen_random_uuid(), 'noop', 'default', '{}', now() - interval '1 hour', '1.0.0', 1, now()
  FROM generate_series(1, $1::int);
INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt, started_at,
                         finished_at)
SELECT id, 'wait:1', 'completed', 'null', 1, 1, now(), now()
  FROM taskd.runs WHERE version = '1.0.0' AND status = 'queued'
ON CONFLICT DO NOTHING
"""


async def measure(runs: int, stuck: int, repeat: int, batch: int) -> list[float]:
    import asyncpg

    from taskd.store.database import create_pool
    from taskd.store.migrations import apply_migrations
    from taskd.store.store import Store

    samples = []
    with fresh_server() as dsn:
        connection = await asyncpg.connect(dsn)
        await apply_migrations(connection)
        pool = await create_pool(dsn)
        store = Store(pool)
        try:
            if stuck:  # (they stay queued: no daemon of 1.0.0 ever claims them)
                for statement in SEED_STUCK.split(";"):
                    if statement.strip():
                        await connection.execute(statement, *([stuck] if "$1" in statement else []))
            for _ in range(repeat):
                await connection.execute(
                    "INSERT INTO taskd.runs (id, task_id, queue, payload, run_at)"
                    " SELECT gen_random_uuid(), 'noop', 'default', '{}',"
                    " now() - interval '1 second' FROM generate_series(1, $1::int)",
                    runs,
                )
                await connection.execute("VACUUM ANALYZE taskd.runs")
                worker, claimed = uuid.uuid4(), 0
                started = time.perf_counter()
                while True:
                    claim = await store.runs.claim(
                        ["noop"], None, batch, worker, 60.0, task_versions=["2.0.0"], pinned=True
                    )
                    if not claim.runs:
                        break
                    claimed += len(claim.runs)
                samples.append((time.perf_counter() - started) / claimed * 1e6)
                assert claimed == runs, (claimed, runs)
                await connection.execute(
                    "UPDATE taskd.runs SET status = 'completed', lease_expires_at = NULL,"
                    " worker_id = NULL WHERE status = 'executing'"
                )
        finally:
            await pool.close()
            await connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--stuck", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="runs per claim")
    args = parser.parse_args()
    for stuck in dict.fromkeys((0, args.stuck)):
        samples = run_async(measure(args.runs, stuck, args.repeat, args.batch))
        print(
            f"{stuck:>6} runs pinned to another version ahead: "
            f"{statistics.median(samples):.1f} us per run claimed "
            f"(median of {len(samples)}: {', '.join(f'{s:.1f}' for s in samples)})"
        )


if __name__ == "__main__":
    main()

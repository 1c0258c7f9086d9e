"""PgQueuer side of bench/throughput.py: the worker, run as its own process.

    BENCH_DSN=postgresql://... python -m bench.peer_pgqueuer --batch-size 100

This does what `pgq run bench.peer_pgqueuer:create --batch-size 100` does (pgqueuer.run on the
factory, under uvloop as the CLI does), because the `pgq run` command of PgQueuer 1.6.0 stops
at start-up with "AttributeError: 'str' object has no attribute 'name'" in setup_fancy_logger.

The entrypoint "noop" decodes the JSON payload and, in the latency phase, records the time at
which its body starts (bench/_record.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pgqueuer
from pgqueuer import Queries, QueueManager
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

from bench._record import record_start


@asynccontextmanager
async def create() -> AsyncIterator[QueueManager]:
    conn = await asyncpg.connect(os.environ["BENCH_DSN"])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        if job.payload:
            record_start(json.loads(job.payload))

    try:
        yield qm
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--max-concurrent-tasks", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    coro = pgqueuer.run(
        create,
        batch_size=args.batch_size,
        max_concurrent_tasks=args.max_concurrent_tasks or None,
        dequeue_timeout=timedelta(seconds=30),
    )
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover
        import asyncio

        asyncio.run(coro)


if __name__ == "__main__":
    main()

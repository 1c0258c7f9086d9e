"""The raw asyncpg queue of bench/throughput.py: the smallest SKIP LOCKED queue, as a reference.

    BENCH_DSN=postgresql://... python -m bench.peer_raw --connections 4 --batch-size 100

One table (`raw_jobs`: a bigserial id and a jsonb payload), a statement-level trigger that
sends one NOTIFY per INSERT statement, and this worker: N connections, each a loop of

    BEGIN; SELECT id, payload FROM raw_jobs ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED;
    (run the jobs); DELETE FROM raw_jobs WHERE id = ANY($1); COMMIT

so a job is deleted only after its body ran (a crash gives the batch back). With nothing to
claim, a connection waits for the NOTIFY (or 1 s) and looks again. No history, no retries, no
leases, no timeouts: what a queue costs when it does nothing but hand out rows.

The producer side (the DDL and the enqueue statements) is in bench/throughput.py's `Raw`. On
SIGTERM the worker finishes its batches and prints `processed N` (checked by the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import asyncpg

from bench._record import record_start

DDL = """
create table if not exists raw_jobs (id bigserial primary key, payload jsonb not null);
create or replace function raw_jobs_notify() returns trigger language plpgsql as $$
begin perform pg_notify('raw_jobs', ''); return null; end $$;
create or replace trigger raw_jobs_notify after insert on raw_jobs
    for each statement execute function raw_jobs_notify();
"""
INSERT_ONE = "insert into raw_jobs (payload) values ($1::jsonb)"
INSERT_MANY = "insert into raw_jobs (payload) select unnest($1::jsonb[])"
CLAIM = "select id, payload from raw_jobs order by id limit $1 for update skip locked"
DELETE = "delete from raw_jobs where id = any($1::bigint[])"


async def consume(conn: asyncpg.Connection, batch: int, stop: asyncio.Event) -> int:
    wake = asyncio.Event()
    await conn.add_listener("raw_jobs", lambda *_: wake.set())
    done = 0
    while not stop.is_set():
        wake.clear()
        async with conn.transaction():
            rows = await conn.fetch(CLAIM, batch)
            for row in rows:
                record_start(json.loads(row["payload"]))
            if rows:
                await conn.execute(DELETE, [r["id"] for r in rows])
        done += len(rows)
        if not rows:
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
    return done


async def main_async(dsn: str, connections: int, batch: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    try:
        counts = await asyncio.gather(*(consume(c, batch, stop) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    coro = main_async(os.environ["BENCH_DSN"], args.connections, args.batch_size)
    try:
        import uvloop

        done = uvloop.run(coro)
    except ImportError:  # pragma: no cover
        done = asyncio.run(coro)
    print(f"processed {done}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()

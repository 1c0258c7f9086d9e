"""Cron math under load (review M8): the scheduler's tick with many schedules, and catch-up.

    .venv/bin/python bench/cron.py [--schedules 10000] [--repeat 5] [--dsn URL]

On a fresh embedded PostgreSQL (or ``--dsn``), with nothing else running:
1. N active schedules (per-user style: a few hundred distinct crons, none due) are inserted;
   ``Scheduler.tick`` is timed cold (first tick: triggers built, next fire times computed) and
   warm (the median of ``--repeat`` ticks), with the longest time the event loop went without
   waking a 1 ms sleeper during a tick (what the daemon's other tasks would wait).
   ``Client.list_schedules`` (``/api/schedules``) is timed the same way.
2. One per-second schedule paused for 30 days, for each catch-up policy: the time to compute
   what is due (``due_fire_times``) and the whole tick (the runs' inserts included).
   For comparison, what walking every fire time would cost (measured on one hour, times 720).
3. A cron that never fires (``0 0 30 2 *``): refusing it, and APScheduler's unbounded answer.

Prints one line per figure, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import fresh_server, run_async

# per-user schedules share crons: minute x hour x weekday of a weekly digest, and a few dense ones
CRONS = [f"{m} {h} * * {d}" for m in (0, 15, 30, 45) for h in range(6, 12) for d in range(1, 6)]
CRONS += ["* * * * *", "*/5 * * * *", "0 * * * *", "*/10 * * * * *"]


class LoopWatch:
    """How long the loop was held: the most CPU time its thread spent between two wake-ups of
    a 1 ms sleeper (CPU time, so that other processes on a shared machine do not count)."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        while True:
            before = time.thread_time()
            await asyncio.sleep(0.001)
            self.longest = max(self.longest, time.thread_time() - before)


async def timed(action: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(wall time of ``action``, longest loop hold during it), in milliseconds."""
    watch = LoopWatch()
    watcher = asyncio.create_task(watch.run())
    await asyncio.sleep(0.005)
    watch.longest = 0.0
    started = time.perf_counter()
    await action()
    took = time.perf_counter() - started
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    return took * 1000, watch.longest * 1000


async def main(dsn: str, schedules: int, repeat: int) -> None:
    import asyncpg

    from taskd import Client
    from taskd.sdk.cron import cron_trigger, due_fire_times, next_fire_after
    from taskd.store.database import create_pool
    from taskd.store.migrations import apply_migrations
    from taskd.store.store import Store
    from taskd.worker.scheduler import Scheduler

    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        await conn.execute(
            """INSERT INTO taskd.schedules (id, task_id, cron, catch_up, last_fired_at)
               SELECT 'user-' || i, 'digest', ($2::text[])[1 + i % cardinality($2::text[])],
                      'latest', now()
                 FROM generate_series(1, $1) AS i""",
            schedules,
            CRONS,
        )
    finally:
        await conn.close()
    pool = await create_pool(dsn)
    try:
        store = Store(pool)
        scheduler = Scheduler(store)
        # a fresh process: the cold tick builds every trigger and computes every next fire time
        now = datetime.now(UTC)
        cold = await timed(lambda: scheduler.tick(now=now))
        warm = [await timed(lambda: scheduler.tick(now=now)) for _ in range(repeat)]
        fetch = [await timed(store.schedules.active) for _ in range(repeat)]
        print(f"{schedules} schedules, {len(CRONS)} distinct crons, none due:")
        print(f"  tick, cold:           {cold[0]:8.1f} ms   loop held at most {cold[1]:6.1f} ms")
        print(
            f"  tick, warm (median):  {statistics.median(w[0] for w in warm):8.1f} ms   "
            f"loop held at most {max(w[1] for w in warm):6.1f} ms"
        )
        print(
            f"    of which the read:  {statistics.median(f[0] for f in fetch):8.1f} ms   "
            f"loop held at most {max(f[1] for f in fetch):6.1f} ms"
        )
        async with Client.connect(dsn) as client:
            listing = [await timed(client.list_schedules) for _ in range(repeat)]
        print(
            f"  list_schedules:       {statistics.median(x[0] for x in listing):8.1f} ms   "
            f"loop held at most {max(x[1] for x in listing):6.1f} ms"
        )

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE taskd.schedules SET active = false")
            print("one per-second schedule paused for 30 days, then resumed:")
            for policy in ("latest", "all", "none"):
                now = datetime.now(UTC).replace(microsecond=0)
                paused = now - timedelta(days=30)
                await conn.execute(
                    """INSERT INTO taskd.schedules (id, task_id, cron, catch_up, last_fired_at)
                       VALUES ($1, 'beat', '* * * * * *', $2, $3)""",
                    f"paused-{policy}",
                    policy,
                    paused,
                )
                trigger = cron_trigger("* * * * * *")
                started = time.perf_counter()
                due = due_fire_times(
                    trigger, paused, now, policy, grace=timedelta(seconds=60), limit=100
                )
                math = (time.perf_counter() - started) * 1000
                tick = await timed(lambda now=now: Scheduler(store).tick(now=now))
                fired = await conn.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE schedule_id = $1", f"paused-{policy}"
                )
                await conn.execute(
                    "UPDATE taskd.schedules SET active = false WHERE id = $1", f"paused-{policy}"
                )
                print(
                    f"  {policy:6}: {len(due.times):3} due, computed in {math:6.2f} ms; "
                    f"tick {tick[0]:7.1f} ms (loop held at most {tick[1]:5.1f} ms), "
                    f"{fired} runs"
                )
        finally:
            await conn.close()
    finally:
        await pool.close()

    trigger = cron_trigger("* * * * * *")
    end = datetime.now(UTC)
    started = time.perf_counter()
    current: datetime | None = end - timedelta(hours=1)
    while current is not None and current <= end:
        current = next_fire_after(trigger, current)
    hour = time.perf_counter() - started
    print(f"  walking every fire time instead: {hour * 720:6.1f} s (1 hour: {hour * 1000:.1f} ms)")

    print("a cron that never fires (0 0 30 2 *):")
    started = time.perf_counter()
    with contextlib.suppress(ValueError):
        cron_trigger("0 0 30 2 *")
    refused = (time.perf_counter() - started) * 1000
    from apscheduler.triggers.cron import CronTrigger

    raw = CronTrigger(day=30, month=2, hour=0, minute=0, second=0, timezone=UTC)
    started = time.perf_counter()
    raw.get_next_fire_time(None, datetime.now(UTC))
    walk = (time.perf_counter() - started) * 1000
    print(f"  refused in {refused:.1f} ms; APScheduler alone answers None in {walk:.1f} ms")


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
    else:
        with fresh_server() as fresh:
            yield fresh


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", help="an existing database (default: a fresh embedded one)")
    args = parser.parse_args()
    with server(args.dsn) as url:
        run_async(main(url, args.schedules, args.repeat))

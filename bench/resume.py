"""Resume latency of suspended runs: 1,000 runs wait (durably) until one same moment; how long
after that moment does each restart its function? (issue 7's figure; no peer here has durable
waits to compare with).

    .venv/bin/python bench/resume.py [--runs 1000] [--repeat 3]

Each repeat: a fresh embedded PostgreSQL, one `taskd run` (wait_threshold 0.5 s), N runs of
`bench.sleeper` that suspend on `wait.until(T)` with T a few seconds ahead (all are WAITING,
holding no slot, well before T), then the time from T to each run's restart is recorded by the
task itself. Prints p50/p95/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import ROOT, Worker, base_env, fresh_server, percentile, run_async

LEAD = 6.0  # seconds between the triggers and the common wake-up moment


async def one_round(dsn: str, runs: int, workdir: Path) -> list[float]:
    import asyncpg

    from taskd import Client
    from taskd.store.migrations import apply_migrations

    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    record = workdir / "resume.txt"
    env = base_env(dsn)
    env |= {
        "TASKD_DATABASE__URL": dsn,
        "TASKD_TASKS__MODULES": json.dumps(["bench.bench_tasks"]),
        "TASKD_WORKER__WAIT_THRESHOLD": "0.5",
        "TASKD_LOG__LEVEL": "WARNING",
        "TASKD_ADMIN__LISTEN": "",
        "BENCH_RESUME_FILE": str(record),
    }
    worker = Worker([str(ROOT / ".venv/bin/taskd"), "run"], env, workdir / "daemon.log")
    await worker.start()
    try:
        async with Client.connect(dsn) as client:
            await wait_ready(client)
            until = time.time() + LEAD
            await client.batch_trigger("bench.sleeper", [{"until": until}] * runs)
            waiting = await count_waiting(client, runs, until)
            if waiting < runs:
                raise SystemExit(f"only {waiting}/{runs} runs were waiting before the moment")
            deadline = until + 60
            while time.time() < deadline:
                lines = record.read_text().splitlines() if record.exists() else []
                if len(lines) >= runs:
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"only {len(lines)}/{runs} runs resumed\n{worker.tail()}")
    finally:
        await worker.stop()
    return [(float(b) - float(a)) * 1000 for a, b in (line.split() for line in lines)]


async def wait_ready(client: object) -> None:
    from taskd import Client

    assert isinstance(client, Client)
    for _ in range(300):
        if (await client.health()).workers:
            return
        await asyncio.sleep(0.05)
    raise SystemExit("the daemon did not start")


async def count_waiting(client: object, runs: int, until: float) -> int:
    from taskd import Client

    assert isinstance(client, Client)
    count = 0
    while time.time() < until - 0.5:
        count = await client.pool.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE status = 'waiting'"
        )
        if count >= runs:
            return int(count)
        await asyncio.sleep(0.05)
    return int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rounds = []
    for number in range(args.repeat):
        with fresh_server() as dsn, tempfile.TemporaryDirectory() as tmp:
            latencies = sorted(run_async(one_round(dsn, args.runs, Path(tmp))))
        figures = {q: percentile(latencies, q) for q in (0.5, 0.95, 0.99)}
        rounds.append(figures)
        print(
            f"round {number + 1}: {args.runs} runs resumed; wake-up to restart "
            f"p50 {figures[0.5]:.0f} ms, p95 {figures[0.95]:.0f} ms, p99 {figures[0.99]:.0f} ms, "
            f"max {latencies[-1]:.0f} ms"
        )
    for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        values = sorted(r[q] for r in rounds)
        print(f"median of {len(rounds)} rounds, {label}: {values[len(values) // 2]:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

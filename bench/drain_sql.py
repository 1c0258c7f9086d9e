"""The drain's database side alone: claims and outcome batches through taskd's own SQL
(store/runs.sql `claim` and `complete_many`) on one connection, measured physically: the
backend's CPU from /proc, WAL bytes, and on Debian's PostgreSQL 15 pg_stat_statements with
nested statements (track = all). No daemon, no start-up: what the database spends per run.

    .venv/bin/python bench/drain_sql.py [--runs 20000] [--claim 100] [--outcomes 500]
        [--pg 15|18] [--subs K [--match]] [--no-trigger] [--explain FILE]

--subs K: K enabled status-webhook subscriptions (to run.completed of another task; --match:
of every run). --explain FILE: one more claim and outcome write with auto_explain (ANALYZE,
BUFFERS, WAL, nested statements, triggers), their plans written to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.throughput import lsn_bytes, pg_server
from taskd.store.runs import SQL

CLK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


async def claim(conn: asyncpg.Connection, worker: uuid.UUID, n: int) -> list[asyncpg.Record]:
    """One claim of up to ``n`` no-op runs through taskd's own statement."""
    return await conn.fetch(
        SQL["claim"], ["bench.noop"], None, n, worker, 60.0, None, "{}", [None], True
    )


async def complete(
    conn: asyncpg.Connection, worker: uuid.UUID, claimed: list[tuple[uuid.UUID, int]]
) -> None:
    """One outcome write: every claimed (id, attempt) completed."""
    n = len(claimed)
    await conn.fetch(
        SQL["complete_many"], worker, [c[0] for c in claimed], [c[1] for c in claimed],
        ["completed"] * n, ["completed"] * n, ["null"] * n, [None] * n, [0.0] * n, [False] * n,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import taskd

    with pg_server(debian_with_statements=args.pg == 15) as server:
        dsn = server.dsn
        await taskd.migrate(dsn)
        conn = await asyncpg.connect(
            dsn, server_settings={"plan_cache_mode": "force_custom_plan", "jit": "off"}
        )
        if args.pg == 15:
            await conn.execute("create extension if not exists pg_stat_statements")
        await conn.execute(
            "insert into taskd.tasks (id, queue, max_attempts) values ('bench.noop', 'default', 3)"
            " on conflict do nothing"
        )
        for k in range(args.subs):
            await conn.execute(
                "INSERT INTO taskd.webhook_subscriptions (name, url, events, tasks, secret)"
                " VALUES ($1, 'http://127.0.0.1:9/hook', $2, $3, 'whsec_x')",
                f"s{k}",
                ["run.completed"],
                None if args.match else ["other.task"],
            )
        # history first (finished runs), then the backlog
        if args.history:
            await conn.execute(
                "insert into taskd.runs (task_id, payload, status, attempt, finished_at)"
                " select 'bench.noop', jsonb_build_object('i', g), 'completed', 1, now()"
                " from generate_series(1, $1) g",
                args.history,
            )
        await conn.execute(
            "insert into taskd.runs (task_id, payload) select 'bench.noop',"
            " jsonb_build_object('i', g) from generate_series(1, $1) g",
            args.runs,
        )
        await conn.execute("vacuum analyze taskd.runs")
        if args.no_trigger:
            await conn.execute("alter table taskd.runs disable trigger webhook_capture")
        worker = uuid.uuid4()
        pid = await conn.fetchval("select pg_backend_pid()")
        if args.pg == 15:
            await conn.execute("set pg_stat_statements.track = 'all'")
            await conn.execute("select pg_stat_statements_reset()")
        lsn0 = await conn.fetchval("select pg_current_wal_lsn()::text")
        c0 = cpu(pid)
        done = 0
        pending: list[tuple[uuid.UUID, int]] = []
        claims = writes = 0
        while done < args.runs:
            rows = await claim(conn, worker, args.claim)
            claims += 1
            got = [r for r in rows if r[0] is not None]
            pending += [(r[0], r[3]) for r in got]
            if not got and not pending:
                break
            if len(pending) >= args.outcomes or not got or done + len(pending) >= args.runs:
                n = len(pending)
                pending.sort()
                await complete(conn, worker, pending)
                writes += 1
                done += n
                pending = []
        c1 = cpu(pid)
        explained = ""
        if args.explain:
            await conn.execute(
                "insert into taskd.runs (task_id, payload) select 'bench.noop',"
                " jsonb_build_object('i', g) from generate_series(1, 1000) g"
            )
            msgs: list[str] = []
            conn.add_log_listener(lambda c, m: msgs.append(m.message))
            await conn.execute("load 'auto_explain'")
            for k, v in (
                ("log_min_duration", "0"),
                ("log_analyze", "on"),
                ("log_buffers", "on"),
                ("log_nested_statements", "on"),
                ("log_timing", "on"),
                ("log_triggers", "on"),
                ("log_wal", "on"),
            ):
                await conn.execute(f"set auto_explain.{k} = '{v}'")
            await conn.execute("set client_min_messages = log")
            rows = await claim(conn, worker, args.claim)
            got = [(r[0], r[3]) for r in rows if r[0] is not None]
            got.sort()
            n = len(got)
            await complete(conn, worker, got)
            await conn.execute("set client_min_messages = notice")
            explained = "\n\n".join(msgs)
        lsn1 = await conn.fetchval("select pg_current_wal_lsn()::text")
        stmts = []
        if args.pg == 15:
            stmts = [
                dict(r)
                for r in await conn.fetch(
                    "select calls, round(total_exec_time::numeric, 1) as ms,"
                    " shared_blks_hit + shared_blks_read as blks, wal_bytes::bigint as wal,"
                    " left(regexp_replace(query, '\\s+', ' ', 'g'), 90) as q"
                    " from pg_stat_statements where query not like '%pg_stat_statements%'"
                    " order by total_exec_time desc limit 14"
                )
            ]
        left = await conn.fetchval("select count(*) from taskd.runs where status <> 'completed'")
        att = await conn.fetchval("select count(*) from taskd.attempts")
        dels = await conn.fetchval("select count(*) from taskd.webhook_deliveries")
        await conn.close()
    n = done
    return {
        "runs": n,
        "left": left,
        "attempts": att,
        "deliveries": dels,
        "claims": claims,
        "writes": writes,
        "pg_cpu_us_per_run": round((c1 - c0) * 1e6 / n, 2),
        "wal_per_run": round((lsn_bytes(lsn1) - lsn_bytes(lsn0)) / n, 1),
        "statements": stmts,
        "explained": explained,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--history", type=int, default=0)
    ap.add_argument("--claim", type=int, default=100)
    ap.add_argument("--outcomes", type=int, default=500)
    ap.add_argument("--subs", type=int, default=0)
    ap.add_argument("--pg", type=int, default=15)
    ap.add_argument("--label", default="")
    ap.add_argument("--explain", default="")
    ap.add_argument("--no-trigger", action="store_true")
    ap.add_argument("--match", action="store_true")
    a = ap.parse_args()
    res = asyncio.run(main(a))
    if a.explain:
        Path(a.explain).write_text(res["explained"])
    out = {k: v for k, v in res.items() if k not in ("statements", "explained")}
    print(a.label, json.dumps(out))
    for s in res["statements"]:
        print("   ", s["calls"], s["ms"], "ms", s["blks"], "blks", s["wal"], "wal", s["q"])

"""The drain through PgBouncer in transaction mode, beside the same drain on PostgreSQL itself.

    .venv/bin/python bench/pgbouncer.py [--quick] [--runs 20000] [--repeat 3]

One embedded PostgreSQL 18 (default settings) and one PgBouncer (Debian's package, transaction
mode, default_pool_size 20) in front of it. Each round seeds --runs no-op runs in a fresh
database (one batch_trigger per 1,000) and drains them with one in-process daemon in burst mode
(``taskd run --until-empty``, concurrency 100), either

* direct: ``database.url`` on PostgreSQL, asyncpg's statement cache on (named prepared
  statements, the default), or
* pgbouncer: ``database.url`` through PgBouncer with ``statement_cache_size = 0`` (PgBouncer
  1.18 keeps no prepared statement: asyncpg sends each statement unnamed, Parse and Bind in
  one message), ``database.direct_url`` on PostgreSQL for the session connections.

Per mode, the medians of --repeat rounds: runs/s from the daemon's start to empty, the
daemon's CPU ms per run (this process's CPU time during the drain: the daemon is the only
thing running in it), transactions per run (``pg_stat_database.xact_commit``). PostgreSQL's
and PgBouncer's CPU are not split here (they share the machine with the daemon). The rate
includes the daemon's start-up, as the issue's spawn-to-empty figure does.
``--quick``: 5,000 runs, 1 round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import fresh_server
from taskd import Client, Context, task
from taskd.app import Daemon
from taskd.config import DatabaseSettings, load_settings
from taskd.sdk.registry import Registry
from taskd.store.migrations import apply_migrations
from tests.support.pgbouncer import pgbouncer_missing, running_pgbouncer

CONCURRENCY = 100
BATCH = 1000


@task(id="bench.pgb.noop")
async def noop(payload: Any, ctx: Context) -> None:
    return None


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def fresh_database(server_dsn: str, name: str) -> str:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    connection = await asyncpg.connect(dsn)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    return dsn


async def commits(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return value
    finally:
        await connection.close()


async def one_round(direct: str, url: str, runs: int, pooled: bool) -> dict[str, float]:
    settings = load_settings(None)
    settings.database.url = url
    settings.database.direct_url = direct if pooled else ""
    settings.database.statement_cache_size = 0 if pooled else 1024
    settings.admin.listen = ""
    settings.worker.concurrency = CONCURRENCY
    async with Client.connect(url, DatabaseSettings(statement_cache_size=0)) as client:
        for start in range(0, runs, BATCH):
            await client.batch_trigger("bench.pgb.noop", [{}] * min(BATCH, runs - start))
    await anyio.sleep(1.0)  # the statistics collector's view of the seeding settles
    before = await commits(direct)
    daemon = Daemon(settings, Registry([noop]), url, until_empty=True)
    cpu, wall = time.process_time(), time.perf_counter()
    await daemon.run(handle_signals=False)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await anyio.sleep(1.0)
    after = await commits(direct)
    if daemon.exit_code != 0:
        raise RuntimeError(f"the drain exited with {daemon.exit_code}")
    return {"rate": runs / wall, "cpu_ms": cpu * 1000 / runs, "xacts": (after - before) / runs}


async def bench(server_dsn: str, bouncer_url: Any, runs: int, repeat: int) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"direct": [], "pgbouncer": []}
    for index in range(repeat):
        for mode in ("direct", "pgbouncer"):
            direct = await fresh_database(server_dsn, f"pgb_{mode}_{index}")
            url = bouncer_url(direct) if mode == "pgbouncer" else direct
            results[mode].append(await one_round(direct, url, runs, mode == "pgbouncer"))
    return {
        mode: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for mode, rounds in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5,000 runs, one round")
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    missing = pgbouncer_missing()
    if missing:
        print(f"bench/pgbouncer.py: {missing}", file=sys.stderr)
        return 1
    runs, repeat = (5_000, 1) if args.quick else (args.runs, args.repeat)
    with fresh_server() as server_dsn, running_pgbouncer(server_dsn, pool_size=20) as bouncer:
        figures = anyio.run(bench, server_dsn, bouncer.through, runs, repeat)
    print(f"drain of {runs:,} no-op runs, concurrency {CONCURRENCY}, median of {repeat}")
    print(f"{'mode':<10} {'runs/s':>8} {'CPU ms/run':>11} {'xacts/run':>10}")
    for mode, f in figures.items():
        print(f"{mode:<10} {f['rate']:>8,.0f} {f['cpu_ms']:>11.3f} {f['xacts']:>10.2f}")
    ratio = figures["pgbouncer"]["rate"] / figures["direct"]["rate"]
    print(f"pgbouncer / direct: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

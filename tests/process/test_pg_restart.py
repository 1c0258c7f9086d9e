"""PostgreSQL restarted under load: the daemon keeps its process, reconnects and finishes.

A PostgreSQL of this test's own (the session server is shared with every other test), 1,000
runs of ``crash.work`` and two `taskd run`; the server is stopped (``pg_ctl stop``, fast mode:
every connection is cut) and started again on the same socket while the runs execute. Each
daemon must survive (same process, same worker), log the outage and its reconnect, write the
outcomes it computed meanwhile (or retry those attempts), and every run finish exactly once.
Neither daemon hands the other's runs over (no `lost` attempt): both re-take their worker lock
before the other finds it free twice.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations
from tests.support.daemon_process import (
    check_completed_once,
    count_runs,
    create_effects_table,
    daemons,
    private_postgres,
    wait_all_completed,
)
from tests.support.waiting import wait_for

RUNS = 1_000
CONCURRENCY = 20
RESTART_AFTER = 250  # completed runs before the restart

pytestmark = pytest.mark.timeout(60)


async def test_postgres_restart_under_load() -> None:
    began = time.monotonic()
    async with private_postgres("taskd-pgrestart-", durable=False) as server, daemons() as group:
        dsn: str = server.get_uri()
        connection = await connect(dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        await create_effects_table(dsn)

        daemon = await group.start(dsn, concurrency=CONCURRENCY // 2)
        other = await group.start(dsn, concurrency=CONCURRENCY // 2)
        await daemon.ready()
        await other.ready()
        pid, other_pid = daemon.pid, other.pid
        async with Client.connect(dsn) as client:
            run_ids = await client.batch_trigger(
                "crash.work", [{"i": i} for i in range(RUNS)], max_attempts=20
            )

        db = await asyncpg.connect(dsn)
        try:

            async def some_completed() -> int:
                done = (await count_runs(db)).get("completed", 0)
                return done if done >= RESTART_AFTER else 0

            done_at_restart = await wait_for(some_completed, timeout=20, interval=0.01)
        finally:
            await db.close()

        stopped_at = time.time()
        await anyio.to_thread.run_sync(server._stop)
        stop_took = time.time() - stopped_at
        # Postgres stays down until the daemon has noticed (and logged) the outage; the
        # daemon must keep running meanwhile.
        await daemon.wait_for_record(
            lambda r: r["level"] in {"warning", "error"} and _after(r, stopped_at), timeout=10
        )
        assert daemon.alive and other.alive, group.output()
        await anyio.to_thread.run_sync(server.ensure_postgres_running)
        back_at = time.time()
        assert server.get_uri() == dsn, "the socket moved"

        db = await asyncpg.connect(dsn)
        try:
            await wait_all_completed(db, RUNS, [daemon, other], timeout=30)
            finished_at = time.time()

            assert daemon.alive and daemon.pid == pid, daemon.output()
            assert other.alive and other.pid == other_pid, other.output()
            workers = await db.fetch("SELECT id, pid, heartbeat_at, stopped_at FROM taskd.workers")
            assert {(str(w["id"]), w["pid"]) for w in workers} == {
                (daemon.worker_id, pid),
                (other.worker_id, other_pid),
            }, f"the two workers expected: {workers}"
            assert all(w["stopped_at"] is None for w in workers)
            # still serving: a run triggered now completes
            async with Client.connect(dsn) as client:
                late = await client.trigger("crash.work", {"late": True})

            async def late_done() -> bool:
                status = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", late)
                return bool(status == "completed")

            await wait_for(late_done, timeout=10)
            run_ids.append(late)

            async def heartbeats_resumed() -> bool:
                beats: list[datetime] = [
                    row[0] for row in await db.fetch("SELECT heartbeat_at FROM taskd.workers")
                ]
                return all(beat.timestamp() > back_at for beat in beats)

            await wait_for(heartbeats_resumed, timeout=5)

            for each in (daemon, other):
                code = await each.stop(signal.SIGTERM)
                assert code == 0, each.output()

            # "failed" only: a lost attempt would be a run handed over from a live daemon
            figures = await check_completed_once(
                db, run_ids, allowed_failures=frozenset({"failed"})
            )
            both = await db.fetchval(
                "SELECT count(DISTINCT worker_id) FROM taskd.attempts WHERE outcome = 'completed'"
            )
            assert both == 2, "both daemons worked"
            failed_types = await db.fetch(
                "SELECT error->>'type' AS type, count(*) AS n FROM taskd.attempts"
                " WHERE outcome <> 'completed' GROUP BY 1 ORDER BY 2 DESC"
            )
        finally:
            await db.close()

    # the outage and the reconnect are in the log, after the stop
    outage = daemon.find(lambda r: r["level"] in {"warning", "error"} and _after(r, stopped_at))
    for each in (daemon, other):
        reconnected = each.find(
            lambda r: (
                re.search(r"reconnected|restored", r["msg"]) is not None and _after(r, stopped_at)
            )
        )
        assert reconnected, f"no reconnect logged\n{each.output()}"
        assert not any("Traceback" in line for line in each.stderr), each.output()

    print(
        f"\npostgres restart: {RUNS} runs, restart after {done_at_restart} completed "
        f"(pg_ctl stop {stop_took:.2f} s, down {back_at - stopped_at:.2f} s); "
        f"all completed {finished_at - back_at:.2f} s after postgres was back\n"
        f"  attempt outcomes: {figures['outcomes']}; failed attempts by error: "
        f"{[(r['type'], r['n']) for r in failed_types]}; "
        f"side-effect rows: {figures['effect_rows']}\n"
        f"  outage log lines: {len(outage)}, e.g. "
        f"{sorted({r['msg'][:70] for r in outage})[:6]}\n"
        f"  total: {time.monotonic() - began:.1f} s"
    )


async def test_a_stop_while_postgres_is_down_exits_1_and_leaves_the_run_leased() -> None:
    """README: a daemon that stops while the database is unreachable keeps trying to write for
    10 s after its runs end, then exits with code 1; those runs stay leased to it. A real
    `taskd run`, its PostgreSQL stopped under it, then a SIGTERM."""
    async with private_postgres("taskd-pgrestart-", durable=False) as server, daemons() as group:
        dsn: str = server.get_uri()
        connection = await connect(dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        daemon = await group.start(dsn, concurrency=2, shutdown_grace="0.5s")
        await daemon.ready()
        async with Client.connect(dsn) as client:
            run_id = await client.trigger("crash.hold", {})
        db = await asyncpg.connect(dsn)
        try:

            async def executing() -> bool:
                status = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id)
                return bool(status == "executing")

            await wait_for(executing, timeout=10)
        finally:
            await db.close()

        await anyio.to_thread.run_sync(server._stop)
        daemon.process.send_signal(signal.SIGTERM)
        # the drain (0.5 s) cancels the run; its hand-back cannot be written
        drained = await daemon.wait_for_record(
            lambda r: r["msg"].startswith("draining"), timeout=10
        )
        code = await daemon.stop(None, timeout=60)
        exited = time.time()
        assert code == 1, daemon.output()
        given_up = daemon.find(lambda r: "database unreachable at shutdown" in r["msg"])
        assert len(given_up) == 1, daemon.output()
        assert str(run_id) in given_up[0].get("run_ids", []), given_up
        # it kept trying for 10 s after the run ended (the drain's grace)
        assert exited - datetime.fromisoformat(drained["ts"]).timestamp() >= 10.0

        await anyio.to_thread.run_sync(server.ensure_postgres_running)
        db = await asyncpg.connect(dsn)
        try:
            row = await db.fetchrow(
                "SELECT status, worker_id, attempt FROM taskd.runs WHERE id = $1",
                run_id,
            )
        finally:
            await db.close()
        # leased to the exited worker: the rescue (or its restart's reconciliation) takes it
        assert (row["status"], str(row["worker_id"]), row["attempt"]) == (
            "executing",
            daemon.worker_id,
            1,
        ), row


def _after(record: dict[str, Any], moment: float) -> bool:
    """The log record is from ``moment`` (wall clock) or later."""
    return datetime.fromisoformat(record["ts"]).timestamp() >= moment - 0.005

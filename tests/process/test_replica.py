"""A streaming replica ([admin] read_url) and a failover (multi-host DSN), with real servers.

Both tests start a primary and its replica from the embedded binaries (tests/support/replica.py:
initdb, pg_basebackup -R, synchronous replication on) and real `taskd run` processes.

1. Reads: the admin API's reads of history and `taskd runs` come from the replica (a replica
   whose replay is paused does not show a run the primary has; the answer says
   ``Taskd-Read-From: replica`` and the lag), a run just triggered is still found (the primary
   answers what the replica does not know yet), the lag is on /api/replica and /metrics, and a
   replica that stops makes the reads fall back to the primary with one warning.
2. Failover: two daemons on ``postgresql://primary,replica/...?target_session_attrs=read-write``
   drain 600 runs; the primary crashes (immediate stop) and the replica is promoted while runs
   execute; the daemons reconnect on their own (same processes) and every run completes exactly
   once, each committed outcome kept. The time without claims is printed.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest

from taskd import Client
from taskd.store.migrations import apply_migrations
from tests.support.cli import taskd
from tests.support.daemon_process import (
    DaemonProcess,
    check_completed_once,
    create_effects_table,
    daemons,
    wait_all_completed,
)
from tests.support.replica import claim_gap, fail_over_under_load, replica_pair, wait_replayed
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)

RUNS = 600
FAIL_OVER_AFTER = 150  # completed runs before the primary crashes


def admin_url(daemon: DaemonProcess) -> str:
    record = next(r for r in daemon.records if r["msg"].startswith("admin endpoint on "))
    match = re.search(r"http://\S+", record["msg"])
    assert match, record
    return match.group(0).rstrip("/")


async def migrate(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()


async def test_admin_and_cli_read_from_the_replica_and_fall_back_when_it_stops() -> None:
    async with replica_pair("taskd-replica-reads-") as pair, daemons() as group:
        await migrate(pair.primary.dsn)
        await create_effects_table(pair.primary.dsn)
        read_url = {"TASKD_ADMIN__READ_URL": pair.replica.dsn}
        daemon = await group.start(pair.primary.dsn, concurrency=5, **read_url)
        await daemon.ready()
        url = admin_url(daemon)
        async with Client.connect(pair.primary.dsn) as client:
            done = await client.trigger("crash.work", {"i": 1})
            await wait_for(lambda: _completed(client, done), timeout=20)
        await wait_replayed(pair)

        async with aiohttp.ClientSession() as http:
            answer = await http.get(f"{url}/api/runs")
            assert answer.status == 200, await answer.text()
            assert answer.headers["Taskd-Read-From"] == "replica"
            assert float(answer.headers["Taskd-Replica-Lag"]) >= 0
            assert str(done) in {r["id"] for r in (await answer.json())["runs"]}

            # the replica stops replaying: what the primary commits now, it does not show
            replica = await asyncpg.connect(pair.replica.dsn)
            try:
                await replica.execute("SELECT pg_wal_replay_pause()")

                async def paused() -> bool:  # a pause is a request: replay stops a bit later
                    state = await replica.fetchval("SELECT pg_get_wal_replay_pause_state()")
                    return bool(state == "paused")

                await wait_for(paused, timeout=10)
                answer = await http.post(
                    f"{url}/api/tasks/crash.work/trigger", json={"payload": {"i": 2}}
                )
                assert answer.status == 201, await answer.text()
                fresh = (await answer.json())["id"]

                listed = await http.get(f"{url}/api/runs")
                assert listed.headers["Taskd-Read-From"] == "replica"
                assert fresh not in {r["id"] for r in (await listed.json())["runs"]}
                # a run page the replica does not know yet: the primary answers
                page = await http.get(f"{url}/api/runs/{fresh}")
                assert page.status == 200, await page.text()
                assert page.headers["Taskd-Read-From"] == "primary"

                status = await (await http.get(f"{url}/api/replica")).json()
                assert status["configured"] and status["reachable"], status
                assert status["in_recovery"] is True and status["reading_from"] == "replica"
                assert status["lag_bytes"] > 0 and status["lag_seconds"] > 0, status
                metrics = await (await http.get(f"{url}/metrics")).text()
                lag_bytes = re.search(r"^taskd_replica_lag_bytes (\S+)$", metrics, re.M)
                assert lag_bytes and float(lag_bytes.group(1)) > 0, metrics[-2000:]

                # `taskd runs` reads the replica too; `taskd runs show` finds the fresh run
                cli = await taskd(pair.primary.dsn, "runs", "list", "--json", **read_url)
                assert cli.code == 0, cli
                assert str(done) in cli.out and fresh not in cli.out, cli
                shown = await taskd(pair.primary.dsn, "runs", "show", fresh, **read_url)
                assert shown.code == 0 and fresh in shown.out, shown
                await replica.execute("SELECT pg_wal_replay_resume()")
            finally:
                await replica.close()

            # the replica goes away: reads fall back to the primary, one warning
            await anyio.to_thread.run_sync(pair.stop, pair.replica)
            for _ in range(3):
                answer = await http.get(f"{url}/api/runs")
                assert answer.status == 200, await answer.text()
                assert answer.headers["Taskd-Read-From"] == "primary"
                assert fresh in {r["id"] for r in (await answer.json())["runs"]}
            status = await (await http.get(f"{url}/api/replica")).json()
            assert status["reachable"] is False and status["reading_from"] == "primary", status
            assert status["error"], status
            metrics = await (await http.get(f"{url}/metrics")).text()
            assert re.search(r"^taskd_replica_up 0\.0$", metrics, re.M), metrics[-2000:]
        warnings = daemon.find(lambda r: "reads from the primary" in r["msg"])
        assert len(warnings) == 1, daemon.output()
        assert warnings[0]["level"] == "warning"

        cli = await taskd(pair.primary.dsn, "runs", "list", **read_url)
        assert cli.code == 0, cli
        assert "unreachable" in cli.err and "reading from the primary" in cli.err, cli
        assert len(cli.err.strip().splitlines()) == 1, cli
        assert fresh in cli.out, cli
        logs = await taskd(pair.primary.dsn, "logs", "--lines", "5", **read_url)
        assert logs.code == 0, logs
        assert "reading from the primary" in logs.err, logs
        assert daemon.alive
        code = await daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.output()
        assert not any("Traceback" in line for line in daemon.stderr), daemon.output()


async def _completed(client: Client, run_id: Any) -> bool:
    return (await client.get_run(run_id)).status.value == "completed"


async def test_failover_to_the_promoted_replica_finishes_every_run_once() -> None:
    began = time.monotonic()
    async with replica_pair("taskd-failover-") as pair, daemons() as group:
        await migrate(pair.primary.dsn)
        await create_effects_table(pair.primary.dsn)
        dsn = pair.multi_host_dsn
        first = await group.start(dsn, concurrency=10)
        second = await group.start(dsn, concurrency=10)
        await first.ready()
        await second.ready()
        async with Client.connect(dsn) as client:
            run_ids = await client.batch_trigger(
                "crash.work", [{"i": i} for i in range(RUNS)], max_attempts=20
            )
        figures = await fail_over_under_load(pair, FAIL_OVER_AFTER)

        db = await asyncpg.connect(pair.replica.dsn)  # the primary now
        try:
            assert not await db.fetchval("SELECT pg_is_in_recovery()")
            await wait_all_completed(db, RUNS, [first, second], timeout=40)
            finished = time.time()
            for each in (first, second):
                code = await each.stop(signal.SIGTERM)
                assert code == 0, each.output()
            outcomes = await check_completed_once(
                db, run_ids, allowed_failures=frozenset({"failed", "lost"})
            )
            gap = await claim_gap(db, figures["killed_at"], figures["promoted_at"])
            failed_types = await db.fetch(
                "SELECT error->>'type' AS type, count(*) AS n FROM taskd.attempts"
                " WHERE outcome <> 'completed' GROUP BY 1 ORDER BY 2 DESC"
            )
        finally:
            await db.close()

    for each in (first, second):
        assert each.find(lambda r: re.search(r"reconnected|restored", r["msg"]) is not None), (
            each.output()
        )
        assert not any("Traceback" in line for line in each.stderr), each.output()
    print(
        f"\nfailover: {RUNS} runs on 2 daemons, the primary killed after "
        f"{figures['completed_before']} completed; pg_ctl promote took "
        f"{figures['promote_took']:.2f} s; no claim for {gap['without_claims']:.2f} s "
        f"(first claim on the new primary {gap['first_after_promote']:.2f} s after the "
        f"promotion); all completed {finished - figures['promoted_at']:.2f} s after it; "
        f"attempt outcomes {outcomes['outcomes']}, failed by error "
        f"{[(r['type'], r['n']) for r in failed_types]}; total {time.monotonic() - began:.1f} s"
    )
    assert gap["without_claims"] < 20

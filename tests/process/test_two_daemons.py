"""Two daemons on one database: one is SIGKILLed, the other rescues its runs within the lease;
both drained at once hand their long runs back without spending an attempt.

Lease 3 s, heartbeat 1 s; ``crash.gated`` runs stay executing until the test opens their gate
(a row in ``crash_gate``), then write their side effect: no run ends before the test says so,
however slow the machine.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import asyncpg
import pytest

from taskd import Client
from tests.support.daemon_process import (
    DaemonProcess,
    check_completed_once,
    create_effects_table,
    daemons,
    wait_all_completed,
)
from tests.support.tasks.crash import CREATE_GATE
from tests.support.waiting import wait_for

LEASE = 3.0
HEARTBEAT = 1.0
# From the kill to the rescue of the victim's runs (the lost attempts' end, database time): the
# lease, plus one heartbeat for the survivor's rescuer to look. The gone-worker check usually
# gets there first (two lock checks, about 2 s).
RESCUE_LIMIT = LEASE + HEARTBEAT

pytestmark = pytest.mark.timeout(60)


async def executing_on(db: asyncpg.Connection, daemon: DaemonProcess) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM taskd.runs WHERE status = 'executing' AND worker_id = $1",
        daemon.worker_id,
    )
    return count


async def test_the_survivor_takes_over_a_killed_daemons_runs_within_the_lease(
    database: str, client: Client
) -> None:
    await create_effects_table(database)
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_GATE)
        async with daemons() as group:
            # The victim fills up first; the survivor starts next to it with room to spare,
            # so what the rescued runs wait for is the rescue, not a free slot.
            victim = await group.start(database, concurrency=10)
            await victim.ready()
            first = await client.batch_trigger("crash.gated", [{}] * 10, max_attempts=20)
            await wait_for(lambda: _equals(executing_on(db, victim), 10), timeout=10)
            survivor = await group.start(database, concurrency=30)
            await survivor.ready()
            second = await client.batch_trigger("crash.gated", [{}] * 10, max_attempts=20)
            await wait_for(lambda: _equals(executing_on(db, survivor), 10), timeout=10)

            # The survivor started while the victim was alive: its reconciliation took nothing.
            reconciled = survivor.find(lambda r: r["msg"].startswith("reconciled:"))
            assert len(reconciled) == 1 and reconciled[0]["rescued"] == 0, survivor.output()

            killed_at = time.time()
            await victim.kill()
            held = await executing_on(db, victim)
            assert held == 10, f"{held} run(s) executing on the victim at the kill"

            # all 20 executing on the survivor (the victim's taken over), then let them end
            await wait_for(lambda: _equals(executing_on(db, survivor), 20), timeout=20)
            await db.execute("INSERT INTO crash_gate VALUES (true)")
            await wait_all_completed(db, 20, [survivor], timeout=20)
            code = await survivor.stop()
            assert code == 0, survivor.output()

        await check_completed_once(db, first + second, allowed_failures=frozenset({"lost"}))
        takeovers = await db.fetch(
            """
            SELECT l.run_id, l.worker_id AS lost_worker, l.error->>'type' AS error_type,
                   l.finished_at AS rescued, n.worker_id AS next_worker,
                   n.started_at AS next_started
              FROM taskd.attempts l
              JOIN taskd.attempts n ON n.run_id = l.run_id AND n.attempt = l.attempt + 1
             WHERE l.outcome = 'lost'
            """
        )
        assert len(takeovers) == held, f"{len(takeovers)} lost attempts for {held} held runs"
        assert {str(r["run_id"]) for r in takeovers} == {str(i) for i in first}
        delays, rescues = [], []
        for row in takeovers:
            assert str(row["lost_worker"]) == victim.worker_id, row
            assert row["error_type"] == "WorkerLost", row
            assert str(row["next_worker"]) == survivor.worker_id, row
            rescues.append(row["rescued"].timestamp() - killed_at)
            delays.append(row["next_started"].timestamp() - killed_at)
        assert max(rescues) <= RESCUE_LIMIT, (
            f"the survivor rescued the victim's runs {max(rescues):.2f} s after the kill "
            f"(lease {LEASE} s, heartbeat {HEARTBEAT} s)\n{survivor.output()}"
        )
        survivor_runs = await db.fetchval(
            "SELECT count(*) FROM taskd.attempts WHERE run_id = ANY($1::uuid[])"
            " AND attempt = 1 AND outcome = 'completed' AND worker_id = $2",
            second,
            survivor.worker_id,
        )
        assert survivor_runs == 10, "the survivor's own runs completed at their first attempt"
    finally:
        await db.close()
    print(
        f"\ntwo daemons, SIGKILL: {held} runs held by the victim; rescued "
        f"{min(rescues):.2f}-{max(rescues):.2f} s and restarted on the survivor "
        f"{min(delays):.2f}-{max(delays):.2f} s after the kill (lease {LEASE} s)"
    )


async def test_two_daemons_drained_hand_back_long_runs_without_spending_attempts(
    database: str, client: Client
) -> None:
    await create_effects_table(database)
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_GATE)
        async with daemons() as group:
            first = await group.start(database, concurrency=5, shutdown_grace="0.5s")
            second = await group.start(database, concurrency=5, shutdown_grace="0.5s")
            await first.ready()
            await second.ready()
            run_ids = await client.batch_trigger("crash.gated", [{}] * 10, max_attempts=20)

            async def both_full() -> bool:
                return await executing_on(db, first) == 5 and await executing_on(db, second) == 5

            await wait_for(both_full, timeout=10)
            for daemon in (first, second):
                daemon.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            codes = [await first.stop(None), await second.stop(None)]
            stopped_in = time.monotonic() - signalled
            assert codes == [0, 0], group.output()

            runs = await db.fetch(
                "SELECT status, attempt, worker_id FROM taskd.runs WHERE id = ANY($1::uuid[])",
                run_ids,
            )
            assert [(r["status"], r["attempt"], r["worker_id"]) for r in runs] == [
                ("queued", 0, None)
            ] * 10, runs
            assert await db.fetchval("SELECT count(*) FROM taskd.attempts") == 0
            assert await db.fetchval("SELECT count(*) FROM crash_effects") == 0
            for daemon in (first, second):
                handed = daemon.find(lambda r: "handed" in r["msg"] and "back" in r["msg"])
                assert handed, f"no hand-back logged\n{daemon.output()}"

            restarted = await group.start(database, concurrency=10)
            await restarted.ready()
            reconciled = restarted.find(lambda r: r["msg"].startswith("reconciled:"))
            assert reconciled and reconciled[0]["rescued"] == 0, restarted.output()
            await db.execute("INSERT INTO crash_gate VALUES (true)")
            await wait_all_completed(db, 10, [restarted], timeout=20)
            code = await restarted.stop()
            assert code == 0, restarted.output()

        await check_completed_once(db, run_ids, allowed_failures=frozenset())
        workers = await db.fetchval(
            "SELECT array_agg(DISTINCT worker_id::text) FROM taskd.attempts"
        )
        assert workers == [restarted.worker_id]
    finally:
        await db.close()
    print(
        f"\ntwo daemons, SIGTERM with 0.5 s grace: 10 long runs handed back in {stopped_in:.2f} s"
    )


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)

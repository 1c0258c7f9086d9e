"""The crash test: the real daemon SIGKILLed at random moments under load, restarted each time.

4,000 runs of ``crash.work`` (each writes a side-effect row); the daemon is killed a few times
at a random moment after it reports ready, restarted at once, and finally drained. Then: every
run completed exactly once, its completing attempt's side effect present, every earlier attempt
``lost`` with a killed worker (a crash spends an attempt), and each restart handed back the
killed daemon's runs before it reported ready (no wait for the lease).

Replay a failure with the seed printed in the output: ``CRASH_TEST_SEED=<seed> pytest -s ...``.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import pytest

from daemon import Client
from tests.daemon_process import (
    DaemonProcess,
    check_completed_once,
    create_effects_table,
    daemons,
    wait_all_completed,
)

# Claims begin alongside the reconciliation (1.5 s before READY after a kill), so each
# incarnation drains for about 2 s: enough runs that every kill finds a busy daemon.
RUNS = 12_000
KILLS = 5
CONCURRENCY = 20
MAX_ATTEMPTS = 20  # at most one attempt per kill is lost: kills cannot use them up
SEED = int(os.environ.get("CRASH_TEST_SEED", "4242"))

pytestmark = pytest.mark.timeout(90)


def is_reconciled(record: dict[str, Any]) -> bool:
    return bool(record["msg"].startswith("reconciled:"))


def check_reconciliation(daemon: DaemonProcess, dead: DaemonProcess, held: int) -> None:
    """The restarted daemon handed back the dead one's runs before it said it was ready."""
    reconciled = daemon.find(is_reconciled)
    assert len(reconciled) == 1, f"one reconciliation line expected\n{daemon.output()}"
    assert daemon.ready_record is not None
    assert daemon.records.index(reconciled[0]) < daemon.records.index(daemon.ready_record), (
        f"reconciliation after ready\n{daemon.output()}"
    )
    line = reconciled[0]
    assert line["rescued"] == held, (
        f"{held} run(s) were executing on the killed worker {dead.worker_id}; "
        f"reconciliation says {line}"
    )
    if held:
        assert dead.worker_id in line["workers"], line


async def test_sigkill_at_random_moments_loses_nothing_and_finishes_nothing_twice(
    database: str, client: Client
) -> None:
    print(f"\ncrash test: seed {SEED} (replay with CRASH_TEST_SEED={SEED})")
    rng = random.Random(SEED)
    await create_effects_table(database)
    began = time.monotonic()
    run_ids = await client.batch_trigger(
        "crash.work", [{"i": i} for i in range(RUNS)], max_attempts=MAX_ATTEMPTS
    )
    db = await asyncpg.connect(database)
    killed: list[DaemonProcess] = []
    held_at_kill: list[int] = []
    kill_delays: list[float] = []
    try:
        async with daemons() as group:
            previous: DaemonProcess | None = None
            for incarnation in range(KILLS + 1):
                daemon = await group.start(
                    database, concurrency=CONCURRENCY, seed=SEED * 100 + incarnation
                )
                await daemon.ready()
                if previous is not None:
                    check_reconciliation(daemon, previous, held_at_kill[-1])
                if incarnation == KILLS:
                    break
                kill_delays.append(rng.uniform(0.2, 0.8))
                await anyio.sleep(kill_delays[-1])  # the random moment of the kill
                await daemon.kill()
                killed.append(daemon)
                held = await db.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE status = 'executing' AND worker_id = $1",
                    daemon.worker_id,
                )
                held_at_kill.append(held)
                previous = daemon
            assert len(killed) == KILLS
            await wait_all_completed(db, RUNS, [daemon], timeout=45)
            code = await daemon.stop()
            assert code == 0, daemon.output()
        total = time.monotonic() - began

        figures = await check_completed_once(db, run_ids, allowed_failures=frozenset({"lost"}))

        # finished: the attempt's side effect was written before the kill, only its outcome
        # was not (a slot is freed when the task returns, before the outcome is written, so a
        # worker can hold more runs than its concurrency; those are lost too)
        lost = await db.fetch(
            """
            SELECT a.run_id, a.attempt, a.worker_id::text AS worker_id,
                   a.error->>'type' AS error_type,
                   EXISTS (SELECT 1 FROM crash_effects e
                            WHERE e.run_id = a.run_id AND e.attempt = a.attempt) AS finished
              FROM taskd.attempts a WHERE a.outcome = 'lost'
            """
        )
        per_worker = {d.worker_id: 0 for d in killed}
        in_flight = {d.worker_id: 0 for d in killed}
        for row in lost:
            assert row["worker_id"] in per_worker, f"a lost attempt of a live worker: {row}"
            assert row["error_type"] == "WorkerLost", row
            per_worker[row["worker_id"]] += 1
            in_flight[row["worker_id"]] += not row["finished"]
        assert list(per_worker.values()) == held_at_kill, (
            f"lost attempts per killed worker {list(per_worker.values())}, "
            f"runs executing at each kill {held_at_kill}"
        )
        assert max(in_flight.values()) <= CONCURRENCY, (
            f"more attempts in flight than the concurrency at a kill: {list(in_flight.values())}"
        )
        finished_unwritten = len(lost) - sum(in_flight.values())
        assert len(lost) <= KILLS * CONCURRENCY + finished_unwritten
        assert sum(1 for h in held_at_kill if h) >= KILLS - 1, (
            f"the kills hit an idle daemon: runs executing at each kill {held_at_kill}"
        )

        # time to resume: from each restart's spawn to the first attempt its worker started;
        # and to the restart of the last of the killed daemon's runs
        restarts = group.started[1:]
        first_start: list[float] = []
        rescued_resume: list[float] = []
        for dead, restarted in zip(killed, restarts, strict=True):
            first: datetime | None = await db.fetchval(
                "SELECT min(started_at) FROM taskd.attempts WHERE worker_id = $1",
                restarted.worker_id,
            )
            if first is not None:
                first_start.append(first.timestamp() - restarted.spawned_at)
            # rescued runs go back with run_at = now(): behind the rest of the backlog
            last: datetime | None = await db.fetchval(
                "SELECT max(n.started_at) FROM taskd.attempts l"
                "  JOIN taskd.attempts n ON n.run_id = l.run_id AND n.attempt = l.attempt + 1"
                " WHERE l.outcome = 'lost' AND l.worker_id = $1",
                dead.worker_id,
            )
            if last is not None:
                rescued_resume.append(last.timestamp() - restarted.spawned_at)
        ready_after = [
            datetime.fromisoformat(d.ready_record["ts"]).timestamp() - d.spawned_at
            for d in restarts
            if d.ready_record is not None
        ]
    finally:
        await db.close()

    print(
        f"crash test: {RUNS} runs, {KILLS} kills (after "
        f"{', '.join(f'{d:.2f}' for d in kill_delays)} s after ready), concurrency {CONCURRENCY}\n"
        f"  runs executing at each kill: {held_at_kill}; lost attempts: {len(lost)} "
        f"({finished_unwritten} of them had finished, their outcome not yet written)\n"
        f"  attempt outcomes: {figures['outcomes']}; side-effect rows: {figures['effect_rows']}\n"
        f"  restart -> ready: max {max(ready_after):.2f} s, "
        f"median {statistics.median(ready_after):.2f} s\n"
        f"  time to resume (restart -> first attempt): max {max(first_start):.2f} s, "
        f"median {statistics.median(first_start):.2f} s\n"
        f"  restart -> last killed run restarted (behind the backlog): "
        + (
            f"max {max(rescued_resume):.2f} s, median {statistics.median(rescued_resume):.2f} s"
            if rescued_resume
            else "n/a"
        )
        + f"\n  total: {total:.1f} s"
    )

"""The crash test: the real daemon SIGKILLed at random moments under load, restarted each time.

2,000 runs: 1,800 of ``crash.work`` (each writes a side-effect row), 100 of ``crash.fail``
(raises on each of its two attempts), 95 with a ttl of 0.3 s and the lowest priority (they
cannot start in time: they expire), 5 of ``crash.hold`` (sleeps until canceled). The daemon is
killed 5 times, each at a random moment drawn from its spawn (0 to 2.5 s: during start-up, the
reconciliation of the previous one's runs, or steady state), once instead with a SIGTERM
followed by a SIGKILL in the middle of the drain; restarted at once each time. Meanwhile 60 of
the ``crash.work`` runs and, at random moments, the ``crash.hold`` runs are canceled. The last
daemon is drained (exit code 0).

Then every run ended exactly once in the state its kind must reach: ``crash.work`` completed,
with one completed attempt (the last) and its side effect, or canceled when its cancel found it
queued (or found it executing and won); ``crash.fail`` failed after exactly two attempts;
``crash.hold`` canceled; the ttl runs expired without an attempt. Attempt numbers have no gap,
no attempt follows a terminal one, every earlier attempt is ``lost`` (a kill) or ``failed``
(``crash.fail``), and every lost attempt belongs to a killed worker (as many as it had
executing when it died) and was handed back before the next daemon said it was ready (the
reconciliation; no wait for the lease).

The seed is random and printed; replay a failure with
``CRASH_TEST_SEED=<seed> pytest -s tests/process/test_crash.py``.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, RunStatus
from taskd.errors import RunFinished
from tests.support.daemon_process import (
    DaemonProcess,
    count_runs,
    create_effects_table,
    daemons,
    settle,
)
from tests.support.waiting import wait_for

WORK = 1_800
FAILING = 100
EXPIRING = 95
HOLDING = 5
RUNS = WORK + FAILING + EXPIRING + HOLDING
CANCELED_WORK = 60
KILLS = 5
# Kills at a random moment from spawn fall within the last measured spawn-to-ready time plus
# this (1.2 s on an idle machine, more under load): start-up, reconciliation, the first claims.
KILL_WINDOW_AFTER_READY = 0.7
CONCURRENCY = 20
MAX_ATTEMPTS = 20  # at most one attempt per kill is lost: kills cannot use them up
SEED = int(os.environ.get("CRASH_TEST_SEED") or random.SystemRandom().randrange(2**31))

pytestmark = pytest.mark.timeout(120)


def is_reconciled(record: dict[str, Any]) -> bool:
    return bool(record["msg"].startswith("reconciled:"))


def ts(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["ts"]).timestamp()


class Kinds:
    """What each triggered run is, and what its cancel (if any) found."""

    def __init__(self) -> None:
        self.kind: dict[uuid.UUID, str] = {}
        self.cancel_found: dict[uuid.UUID, str] = {}

    def add(self, kind: str, ids: list[uuid.UUID]) -> None:
        self.kind |= dict.fromkeys(ids, kind)

    def of(self, kind: str) -> list[uuid.UUID]:
        return [run_id for run_id, k in self.kind.items() if k == kind]


async def cancel(client: Client, kinds: Kinds, run_id: uuid.UUID) -> None:
    try:
        kinds.cancel_found[run_id] = (await client.cancel(run_id)).value
    except RunFinished:
        kinds.cancel_found[run_id] = "finished"


def executing_on(
    db: asyncpg.Connection, worker: str, task_id: str | None = None
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE status = 'executing' AND worker_id = $1::uuid"
            " AND ($2::text IS NULL OR task_id = $2)",
            worker,
            task_id,
        )
        return bool(n)

    return check


async def sleep_until(moment: float) -> None:
    await anyio.sleep(max(0.0, moment - time.time()))


async def test_sigkill_at_random_moments_every_run_ends_once_in_its_state(
    database: str, client: Client
) -> None:
    print(f"\ncrash test: seed {SEED} (replay with CRASH_TEST_SEED={SEED})")
    rng = random.Random(SEED)
    await create_effects_table(database)
    began = time.monotonic()
    kinds = Kinds()
    kinds.add("hold", await client.batch_trigger("crash.hold", [{}] * HOLDING, priority=1))
    chunk = WORK // FAILING
    for i in range(FAILING):  # failing runs spread through the backlog
        work = [{"i": j} for j in range(i * chunk, (i + 1) * chunk)]
        kinds.add("work", await client.batch_trigger("crash.work", work, max_attempts=MAX_ATTEMPTS))
        kinds.add("fail", await client.batch_trigger("crash.fail", [{"i": i}]))
    kinds.add(
        "expire",
        await client.batch_trigger(
            "crash.work", [{"late": i} for i in range(EXPIRING)], priority=-1, ttl="0.3s"
        ),
    )
    assert len(kinds.kind) == RUNS
    to_cancel = rng.sample(kinds.of("work"), CANCELED_WORK)
    holds = kinds.of("hold")
    # how each daemon dies: three at a random moment from spawn, one at a random moment of
    # its steady state, one SIGTERMed then SIGKILLed during its drain
    plan = ["spawn"] * (KILLS - 2) + ["steady", "drain"]
    rng.shuffle(plan)
    ready_took = 1.5  # until one is measured
    cancel_work_at = rng.randrange(KILLS)
    cancel_hold_at = rng.randrange(KILLS)

    db = await asyncpg.connect(database)
    killed: list[DaemonProcess] = []
    held_at_kill: dict[str, int] = {}  # worker id -> runs it had executing
    worker_of: dict[int, str] = {}  # pid -> worker id
    moments: list[str] = []
    try:
        async with daemons() as group:
            for incarnation in range(KILLS + 1):
                daemon = await group.start(
                    database, concurrency=CONCURRENCY, seed=SEED * 100 + incarnation
                )
                if incarnation == KILLS:
                    break
                # the cancels happen at a random moment of this incarnation: before its kill
                # (or its drain), while the runs are queued, held by the dead predecessor or
                # executing here
                window = ready_took + KILL_WINDOW_AFTER_READY
                cancels_at = daemon.spawned_at + rng.uniform(0, window)
                if incarnation in (cancel_work_at, cancel_hold_at):
                    await sleep_until(cancels_at)
                    if incarnation == cancel_work_at:
                        for run_id in to_cancel:
                            await cancel(client, kinds, run_id)
                    if incarnation == cancel_hold_at:
                        for run_id in holds[:2]:
                            await cancel(client, kinds, run_id)
                if plan[incarnation] == "steady":
                    await daemon.ready()
                    await wait_for(executing_on(db, daemon.worker_id), timeout=20)
                    delay = rng.uniform(0, 1.0)
                    await anyio.sleep(delay)
                    moments.append(f"{delay:.2f} s into the steady state")
                elif plan[incarnation] == "drain":
                    await daemon.ready()
                    await wait_for(executing_on(db, daemon.worker_id, "crash.hold"), timeout=20)
                    await anyio.sleep(rng.uniform(0, 1.0))
                    daemon.process.send_signal(signal.SIGTERM)
                    await daemon.wait_for_record(lambda r: r["msg"].startswith("draining"))
                    pause = rng.uniform(0, 0.5)  # the holds keep the drain going (grace 5 s)
                    await anyio.sleep(pause)
                    moments.append(f"SIGTERM, then SIGKILL {pause:.2f} s into the drain")
                else:
                    delay = rng.uniform(0, window)
                    await sleep_until(daemon.spawned_at + delay)
                    ready = daemon.find(lambda r: r["msg"].startswith("taskd ready"))
                    moments.append(f"{delay:.2f} s after spawn{' (ready)' if ready else ''}")
                await daemon.kill()
                killed.append(daemon)
                ready = daemon.find(lambda r: r["msg"].startswith("taskd ready"))
                if ready:
                    ready_took = ts(ready[0]) - daemon.spawned_at
                await settle(db)
                worker = await db.fetchval(
                    "SELECT id::text FROM taskd.workers WHERE pid = $1", daemon.pid
                )
                if worker is not None:
                    worker_of[daemon.pid] = worker
                    held_at_kill[worker] = await db.fetchval(
                        "SELECT count(*) FROM taskd.runs"
                        " WHERE status = 'executing' AND worker_id = $1::uuid",
                        worker,
                    )
            assert len(killed) == KILLS
            await daemon.ready()
            # the holds still running are canceled on a live daemon, in their asyncio task
            await wait_for(executing_on(db, daemon.worker_id, "crash.hold"), timeout=20)
            for run_id in holds:
                if run_id not in kinds.cancel_found:
                    await cancel(client, kinds, run_id)

            async def all_ended() -> bool:
                if not daemon.alive:
                    raise AssertionError(f"the last daemon exited\n{daemon.output()}")
                statuses = await count_runs(db)
                return not statuses.get("queued") and not statuses.get("executing")

            try:
                await wait_for(all_ended, timeout=45, interval=0.05)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await count_runs(db)}\n{group.output()}") from None
            code = await daemon.stop()
            assert code == 0, daemon.output()
            started = list(group.started)
        total = time.monotonic() - began

        figures = await check_ended_once(db, kinds)

        # lost attempts: only killed workers', as many as each had executing, each handed
        # back before the next daemon was ready
        lost = await db.fetch(
            "SELECT run_id, attempt, worker_id::text AS worker_id, finished_at,"
            "       error->>'type' AS error_type FROM taskd.attempts WHERE outcome = 'lost'"
        )
        per_worker = dict.fromkeys(held_at_kill, 0)
        for row in lost:
            assert row["worker_id"] in per_worker, f"a lost attempt of a live worker: {row}"
            assert row["error_type"] == "WorkerLost", row
            per_worker[row["worker_id"]] += 1
        assert per_worker == held_at_kill, (
            f"lost attempts per killed worker {per_worker}, executing at each kill {held_at_kill}"
        )
        ready_at = [
            (ts(r), d)
            for d in started
            for r in d.find(lambda r: r["msg"].startswith("taskd ready"))
        ]
        for dead in killed:
            worker = worker_of.get(dead.pid)
            if worker is None:
                continue
            # the daemons started after it: the first of them to be ready reconciled it
            next_ready = min(
                (t for t, d in ready_at if d.spawned_at > dead.spawned_at), default=None
            )
            assert next_ready is not None
            late = [
                r
                for r in lost
                if r["worker_id"] == worker and r["finished_at"].timestamp() > next_ready + 0.005
            ]
            assert not late, f"handed back after the next daemon was ready: {late[:3]}"
        for t, d in ready_at:
            reconciled = d.find(is_reconciled)
            assert len(reconciled) == 1, f"one reconciliation line expected\n{d.output()}"
            assert ts(reconciled[0]) <= t, f"reconciliation after ready\n{d.output()}"
        assert sum(1 for held in held_at_kill.values() if held) >= 2, (
            f"the steady and drain kills hit idle daemons: executing at each kill {held_at_kill}"
        )

        restarts = started[1:]
        first_start: list[float] = []
        for restarted in restarts:
            worker = worker_of.get(restarted.pid) or (
                restarted.ready_record["worker_id"] if restarted.ready_record else None
            )
            if worker is None:
                continue
            first: datetime | None = await db.fetchval(
                "SELECT min(started_at) FROM taskd.attempts WHERE worker_id = $1::uuid", worker
            )
            if first is not None:
                first_start.append(first.timestamp() - restarted.spawned_at)
        ready_after = [t - d.spawned_at for t, d in ready_at if d in restarts]
    finally:
        await db.close()

    print(
        f"crash test: {RUNS} runs, {KILLS} kills ({'; '.join(moments)}), "
        f"concurrency {CONCURRENCY}\n"
        f"  runs executing at each kill: {list(held_at_kill.values())}; "
        f"lost attempts: {len(lost)}\n"
        f"  run statuses: {figures['statuses']}; attempt outcomes: {figures['outcomes']}; "
        f"cancels found: {figures['cancels']}\n"
        + (
            f"  restart -> ready: max {max(ready_after):.2f} s, "
            f"median {statistics.median(ready_after):.2f} s\n"
            if ready_after
            else ""
        )
        + (
            f"  restart -> first attempt: max {max(first_start):.2f} s, "
            f"median {statistics.median(first_start):.2f} s\n"
            if first_start
            else ""
        )
        + f"  total: {total:.1f} s"
    )


async def check_ended_once(db: asyncpg.Connection, kinds: Kinds) -> dict[str, Any]:
    """Every run ended once, in the state its kind (and its cancel) must reach."""
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < 20:
            problems.append(text)

    rows = await db.fetch(
        """
        SELECT r.id, r.status, r.attempt AS run_attempt,
               coalesce(array_agg(a.attempt ORDER BY a.attempt)
                        FILTER (WHERE a.attempt IS NOT NULL), '{}') AS attempts,
               coalesce(array_agg(a.outcome ORDER BY a.attempt)
                        FILTER (WHERE a.attempt IS NOT NULL), '{}') AS outcomes
          FROM taskd.runs r
          LEFT JOIN taskd.attempts a ON a.run_id = r.id
         GROUP BY r.id
        """
    )
    if {row["id"] for row in rows} != set(kinds.kind):
        problem(f"{len(rows)} runs in taskd.runs, {len(kinds.kind)} triggered")
    effects = {
        row["run_id"]: set(row["attempts"])
        for row in await db.fetch(
            "SELECT run_id, array_agg(DISTINCT attempt) AS attempts"
            " FROM crash_effects GROUP BY run_id"
        )
    }
    statuses: dict[str, int] = {}
    outcomes_seen: dict[str, int] = {}
    for row in rows:
        run_id, status = row["id"], row["status"]
        attempts, outcomes = list(row["attempts"]), list(row["outcomes"])
        kind = kinds.kind.get(run_id, "?")
        found = kinds.cancel_found.get(run_id)
        statuses[f"{kind}:{status}"] = statuses.get(f"{kind}:{status}", 0) + 1
        for outcome in outcomes:
            outcomes_seen[outcome] = outcomes_seen.get(outcome, 0) + 1
        where = f"{kind} run {run_id} ({status}, cancel found {found}): outcomes {outcomes}"
        if attempts != list(range(1, len(attempts) + 1)):
            problem(f"{where}: attempt numbers {attempts}")
        if row["run_attempt"] != len(attempts):
            problem(f"{where}: runs.attempt {row['run_attempt']}")
        earlier, last = outcomes[:-1], outcomes[-1:]
        if kind == "expire":
            ok = status == RunStatus.EXPIRED and not attempts
        elif kind == "fail":
            ok = (
                status == RunStatus.FAILED
                and len(attempts) == 2
                and set(outcomes) <= {"failed", "lost"}
            )
        elif kind == "hold":
            ok = (
                status == RunStatus.CANCELED
                and found in {"executing", "canceled"}
                and set(earlier) <= {"lost"}
                and set(last) <= {"canceled", "lost"}
            )
        elif status == RunStatus.COMPLETED:
            ok = (
                found in {None, "executing", "finished"}
                and set(earlier) <= {"lost"}
                and last == ["completed"]
                and attempts[-1] in effects.get(run_id, set())
            )
        else:
            # canceled: found queued (canceled at once) or executing (the cancel won)
            ok = (
                status == RunStatus.CANCELED
                and found in {"canceled", "executing"}
                and set(outcomes) <= {"lost", "canceled"}
                and outcomes.count("canceled") <= 1
                and (found == "executing" or "canceled" not in outcomes)
            )
        if not ok:
            problem(where)
    assert not problems, "\n".join(problems)
    cancels: dict[str, int] = {}
    for found in kinds.cancel_found.values():
        cancels[found] = cancels.get(found, 0) + 1
    return {"statuses": statuses, "outcomes": outcomes_seen, "cancels": cancels}

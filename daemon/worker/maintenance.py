"""Housekeeping every daemon does for the whole fleet: rescue, expiry, unknown tasks, pruning.

Each chore is a ``*_once`` method a test can call directly; ``run`` calls them on a cadence.
All of them write in small batches with ``FOR UPDATE SKIP LOCKED``, so several daemons doing
the same chore at once neither block nor double-process a run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel

from daemon.changes import ChangeHub, ChangeKind, RunChange
from daemon.config import RetentionSettings, WorkerSettings
from daemon.logs import log_event
from daemon.store.database import DB_ERRORS
from daemon.store.store import Store
from daemon.telemetry import Telemetry

log = logging.getLogger("taskd.maintenance")

BATCH = 1000
# Longer than the worker lock's longest reconnect backoff (1 s).
RECHECK_DELAY = 1.5
WAKE_INTERVAL = 0.25


class Maintenance:
    def __init__(
        self,
        store: Store,
        settings: WorkerSettings,
        worker_id: uuid.UUID,
        *,
        retention: RetentionSettings | None = None,
        changes: ChangeHub | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._retention = retention or RetentionSettings()
        self._worker_id = worker_id
        self._changes = changes or ChangeHub()
        self._telemetry = telemetry or Telemetry()
        self.pruned: dict[str, int] = {
            "runs": 0,
            "events": 0,
            "workers": 0,
            "idempotency_keys": 0,
        }
        # Workers whose lock was free at the previous check. A worker counts as gone when its
        # lock is free twice in a row: after a database restart every daemon re-takes its
        # lock within a second, and must not have its runs taken meanwhile.
        self._suspects: set[uuid.UUID] = set()

    async def reconcile(self) -> int:
        """At startup, before serving: hand back every run of a provably gone worker.

        A previous incarnation of this daemon, killed a moment ago, has no lock, and its
        runs must resume now, not after their lease. A live worker whose lock connection
        just dropped re-takes its lock within a second: two checks that far apart tell
        the two apart.
        """
        first = {w["id"] for w in await self._store.worker_list_unlocked(self._worker_id)}
        gone = []
        if first:
            await anyio.sleep(RECHECK_DELAY)
            gone = [
                w
                for w in await self._store.worker_list_unlocked(self._worker_id)
                if w["id"] in first
            ]
        ids = [worker["id"] for worker in gone]
        rescued = await self._rescue(ids)
        if ids:
            await self._store.worker_mark_gone(ids)
        log_event(
            log,
            logging.INFO,
            f"reconciled: rescued {rescued} run(s) from {len(ids)} gone worker(s)",
            rescued=rescued,
            workers=[str(i) for i in ids],
            hosts=sorted({f"{w['host']}:{w['pid']}" for w in gone}),
        )
        return rescued

    async def rescue_once(self) -> int:
        """Hand back runs whose lease expired or whose worker is gone; return how many."""
        unlocked = {w["id"] for w in await self._store.worker_list_unlocked(self._worker_id)}
        gone = unlocked & self._suspects
        self._suspects = unlocked - gone
        rescued = await self._rescue(sorted(gone))
        if gone:
            await self._store.worker_mark_gone(sorted(gone))
            log_event(
                log,
                logging.WARNING,
                f"workers gone: rescued {rescued} run(s)",
                workers=[str(i) for i in sorted(gone)],
            )
        return rescued

    async def _rescue(self, gone: Sequence[uuid.UUID]) -> int:
        total = 0
        while True:
            rescued = await self._store.run_rescue(gone, BATCH)
            total += len(rescued)
            await self._wake_parents([r[0] for r in rescued if r[1] != "queued"])
            for run_id, status, worker, task_id, attempt in rescued:
                log_event(
                    log,
                    logging.WARNING,
                    f"run lost with its worker, now {status}",
                    run_id=str(run_id),
                    worker_id=str(worker),
                )
                kind = {"queued": ChangeKind.ATTEMPT_FAILED, "canceled": ChangeKind.CANCELED}
                self._publish(
                    kind.get(status, ChangeKind.FAILED),
                    run_id,
                    task_id,
                    status,
                    attempt,
                    {"attempt_outcome": "lost", "error": {"type": "WorkerLost"}},
                )
            if len(rescued) < BATCH:
                return total

    async def wake_due_once(self) -> int:
        """Waiting runs whose wake-up time has come go back to the queue."""
        total = 0
        while True:
            woken = await self._store.run_wake_due(BATCH)
            total += len(woken)
            for run_id, task_id in woken:
                self._publish(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
            if len(woken) < BATCH:
                break
        # runs whose token was completed while they still executed, and that wait now
        for run_id, task_id in await self._store.run_wake_completed_tokens(BATCH):
            total += 1
            self._publish(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
        return total

    async def expire_once(self) -> int:
        """Queued runs past their ttl end expired."""
        total = 0
        while True:
            expired = await self._store.run_expire(BATCH)
            total += len(expired)
            await self._wake_parents([run_id for run_id, _ in expired])
            for run_id, task_id in expired:
                log_event(
                    log, logging.INFO, "run expired: not started within its ttl", run_id=str(run_id)
                )
                self._publish(ChangeKind.EXPIRED, run_id, task_id, "expired", None, None)
            if len(expired) < BATCH:
                return total

    async def fail_unknown_once(self) -> int:
        """Fail runs of tasks no live worker serves, once they waited unknown_task_timeout."""
        timeout = self._settings.unknown_task_timeout
        if timeout <= 0:
            return 0
        served = await self._store.task_list_served()
        failed = await self._store.run_fail_unknown(served, timeout, BATCH)
        await self._wake_parents([run_id for run_id, _ in failed])
        for run_id, task_id in failed:
            log_event(
                log,
                logging.ERROR,
                f"run failed: no worker serves task {task_id!r}",
                run_id=str(run_id),
                task=task_id,
            )
            self._publish(
                ChangeKind.FAILED,
                run_id,
                task_id,
                "failed",
                None,
                {"error": {"type": "UnknownTask"}},
            )
        return len(failed)

    async def prune_once(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is past its retention, a small batch per statement, until none is left.

        Finished runs (with their attempts, steps and log lines), recorded events, expired
        idempotency keys, stopped workers. Each batch is its own short transaction that skips
        locked rows: the queue never waits on the pruner, and two daemons pruning at once
        split the work. ``pruned`` counts as each batch commits.
        """
        now = now or datetime.now(UTC)
        retention = self._retention
        deleted = {"runs": 0, "events": 0, "workers": 0, "idempotency_keys": 0}

        def done(table: str, count: int) -> None:
            deleted[table] += count
            self.pruned[table] += count

        if retention.runs > 0:
            cutoff = now - timedelta(seconds=retention.runs)
            while (count := await self._store.prune_runs(cutoff, retention.batch)) > 0:
                done("runs", count)
                await anyio.lowlevel.checkpoint()  # the daemon's other work between batches
        if retention.events > 0:
            cutoff = now - timedelta(seconds=retention.events)
            while (count := await self._store.prune_events(cutoff, retention.batch)) > 0:
                done("events", count)
                await anyio.lowlevel.checkpoint()
        while (count := await self._store.prune_idempotency_keys(retention.batch)) > 0:
            done("idempotency_keys", count)
            await anyio.lowlevel.checkpoint()
        if retention.workers > 0:
            done(
                "workers",
                await self._store.prune_workers(now - timedelta(seconds=retention.workers)),
            )
        if any(deleted.values()):
            log_event(log, logging.INFO, "pruned rows past their retention", **deleted)
        return deleted

    async def _wake_parents(self, run_ids: Sequence[uuid.UUID]) -> None:
        """Runs this loop ended may be a waiting parent's last children."""
        if run_ids:
            await self._store.parents_wake(run_ids)

    def _publish(
        self,
        kind: ChangeKind,
        run_id: uuid.UUID,
        task_id: str,
        status: str,
        attempt: int | None,
        data: dict[str, Any] | None,
    ) -> None:
        self._telemetry.changed(kind.value, task_id)
        if self._changes.active:
            self._changes.publish(RunChange(kind, run_id, task_id, status, attempt, data=data))

    async def run(self) -> None:
        """Expire every second; rescue and fail unknown tasks every heartbeat; prune every
        retention interval, in a loop of its own (a long backlog of rows to prune must not
        delay a rescue)."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._prune_loop)
            group.start_soon(self._wake_loop)
            tick = min(1.0, self._settings.heartbeat)
            since_rescue = float("inf")
            while True:
                try:
                    await self.expire_once()
                    if since_rescue >= self._settings.heartbeat:
                        since_rescue = 0.0
                        await self.rescue_once()
                        await self.fail_unknown_once()
                except DB_ERRORS as exc:
                    self._telemetry.db_error("maintenance")
                    log.error("maintenance failed, retrying: %s", exc)
                await anyio.sleep(tick)
                since_rescue += tick

    async def _wake_loop(self) -> None:
        # A cheap query through a partial index (empty when nothing waits); this interval is
        # the resume latency of a suspended run.
        while True:
            try:
                await self.wake_due_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("waking waiting runs failed, retrying: %s", exc)
            await anyio.sleep(WAKE_INTERVAL)

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("prune")
                log.error("pruning failed, retrying at the next interval: %s", exc)
            await anyio.sleep(self._retention.interval)

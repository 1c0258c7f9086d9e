"""Housekeeping every daemon does for the whole fleet: rescue, expiry, unknown tasks, pruning,
retired subscriptions, and the on_failure hooks of runs failed outside an attempt.

Each chore is a ``*_once`` method a test can call directly; ``run`` calls them on a cadence.
All of them write in small batches with ``FOR UPDATE SKIP LOCKED``, so several daemons doing
the same chore at once neither block nor double-process a run.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import orjson

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import RetentionSettings, WorkerSettings
from taskd.logs import log_event
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker import process_identity
from taskd.worker.failure_hooks import FailureHooks
from taskd.worker.report import RESCUED_KINDS, Report

log = logging.getLogger("taskd.maintenance")

BATCH = 1000
# Longer than the worker lock's longest reconnect backoff (1 s). Only the start-up
# reconciliation waits it, and only for workers whose exit it cannot prove.
RECHECK_DELAY = 1.5
WAKE_INTERVAL = 0.25
RETIRE_SUBSCRIPTIONS_AFTER = 3600.0
"""Seconds a task must have gone unserved (no live worker lists it) before its event
subscriptions are deleted: long enough that a deploy, or an outage of the daemons that serve
it, loses no event; short enough that a task removed from the code stops collecting runs."""


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
        hooks: FailureHooks | None = None,
        handed_back: Callable[[], None] | None = None,
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
        self._hooks = hooks
        # Called when the start-up reconciliation handed runs back (it comes before the
        # listener, which would otherwise bring the wake-up).
        self._handed_back = handed_back
        self._hooks_due = anyio.Event()
        # What this daemon's chores found since the last report (see report.py).
        self._report = Report("rescue")
        self.last_report: Report | None = None

    async def reconcile(self) -> int:
        """At startup, before serving: hand back every run of a provably gone worker.

        A previous incarnation of this daemon, killed a moment ago, has no lock, and its
        runs must resume now, not after their lease. A free lock alone proves little: a live
        worker whose lock connection just dropped re-takes its lock within a second. So a
        worker whose process this daemon can prove has exited (same machine and pid
        namespace: process_identity.py) is handed back at once; any other counts as gone
        only if its lock is still free RECHECK_DELAY later. One report covers both.
        """
        self._report = Report("startup")
        here = process_identity.current()
        first = await self._store.workers.list_unlocked(self._worker_id)
        exited = [w for w in first if _has_exited(w, here)]
        rescued = await self._hand_back(exited)
        suspects = {w["id"] for w in first} - {w["id"] for w in exited}
        rechecked = []
        if suspects:
            await anyio.sleep(RECHECK_DELAY)
            rechecked = [
                w
                for w in await self._store.workers.list_unlocked(self._worker_id)
                if w["id"] in suspects
            ]
            rescued += await self._hand_back(rechecked)
        gone = exited + rechecked
        self._report.gone_workers = [f"{w['id']} ({w['host']}:{w['pid']})" for w in gone]
        await self._publish_report(
            "reconciled",
            rescued=rescued,
            workers=[str(w["id"]) for w in gone],
            exited=[str(w["id"]) for w in exited],
            hosts=sorted({f"{w['host']}:{w['pid']}" for w in gone}),
        )
        return rescued

    async def _hand_back(self, gone: Sequence[dict[str, Any]]) -> int:
        """Rescue the runs of these gone workers (and any with an expired lease), mark the
        workers gone, and wake the claims for what came back."""
        ids = [worker["id"] for worker in gone]
        rescued = await self._rescue(ids)
        if ids:
            await self._store.workers.mark_gone(ids)
        if rescued and self._handed_back is not None:
            self._handed_back()
        return rescued

    async def rescue_once(self) -> int:
        """Hand back runs whose lease expired or whose worker is gone; return how many."""
        found = {w["id"]: w for w in await self._store.workers.list_unlocked(self._worker_id)}
        unlocked = set(found)
        gone = unlocked & self._suspects
        self._suspects = unlocked - gone
        rescued = await self._rescue(sorted(gone))
        if gone:
            await self._store.workers.mark_gone(sorted(gone))
            self._report.gone_workers = [
                f"{i} ({found[i]['host']}:{found[i]['pid']})" for i in sorted(gone)
            ]
        if not self._report.empty:
            await self._publish_report("rescue", rescued=rescued)
        return rescued

    async def _publish_report(self, msg: str, **extra: object) -> None:
        """One log line with what was found since the last report, and the worker's row."""
        report, self._report = self._report, Report("rescue")
        failed = report.counts["failed"] or report.counts["unknown_task"]
        level = logging.WARNING if report.gone_workers or failed else logging.INFO
        log_event(
            log,
            level,
            f"{msg}: {report.summary()} from {len(report.gone_workers)} gone worker(s)",
            **extra,
            **report.fields(),
        )
        self.last_report = report
        try:
            await self._store.workers.report(self._worker_id, orjson.dumps(report.stored()))
        except DB_ERRORS as exc:  # the log line has it; the next report overwrites this one
            log.warning("could not record the reconciliation report: %s", exc)

    async def _rescue(self, gone: Sequence[uuid.UUID]) -> int:
        total = 0
        while True:
            rescued = await self._store.runs.rescue(gone, BATCH)
            total += len(rescued)
            for run_id, status, worker, task_id, attempt in rescued:
                # the report's line names them (counts, the first ids); this one is for debugging
                log_event(
                    log,
                    logging.DEBUG,
                    f"run lost with its worker, now {status}",
                    run_id=str(run_id),
                    worker_id=str(worker),
                )
                self._report.add(RESCUED_KINDS.get(status, status), run_id, task_id)
                if status == "failed":
                    self._hooks_due.set()
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
            woken = await self._store.waits.wake_due(BATCH)
            total += len(woken)
            for run_id, task_id in woken:
                self._publish(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
            if len(woken) < BATCH:
                break
        # runs whose token was completed while they still executed, and that wait now
        for run_id, task_id in await self._store.waits.wake_completed_tokens(BATCH):
            total += 1
            self._publish(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
        return total

    async def expire_once(self) -> int:
        """Queued runs past their ttl end expired."""
        total = 0
        while True:
            expired = await self._store.runs.expire(BATCH)
            total += len(expired)
            for run_id, task_id in expired:
                log_event(
                    log,
                    logging.DEBUG,
                    "run expired: not started within its ttl",
                    run_id=str(run_id),
                )
                self._report.add("expired", run_id, task_id)
                self._publish(ChangeKind.EXPIRED, run_id, task_id, "expired", None, None)
            if len(expired) < BATCH:
                return total

    async def fail_unknown_once(self) -> int:
        """Fail due runs of tasks no live worker serves, once they waited unknown_task_timeout
        since they were due and since their task became unserved."""
        timeout = self._settings.unknown_task_timeout
        if timeout <= 0:
            return 0
        failed = await self._store.runs.fail_unknown(timeout, BATCH)
        if failed:
            self._hooks_due.set()
        for run_id, task_id in failed:
            log_event(
                log,
                logging.ERROR,
                f"run failed: no worker serves task {task_id!r}",
                run_id=str(run_id),
                task=task_id,
            )
            self._report.add("unknown_task", run_id, task_id)
            self._publish(
                ChangeKind.FAILED,
                run_id,
                task_id,
                "failed",
                None,
                {"error": {"type": "UnknownTask"}},
            )
        return len(failed)

    async def retire_subscriptions_once(self) -> list[tuple[str, str]]:
        """Delete the event subscriptions of tasks no live worker has served for
        RETIRE_SUBSCRIPTIONS_AFTER: (event name, task id) of each."""
        retired = await self._store.events.retire_subscriptions(RETIRE_SUBSCRIPTIONS_AFTER)
        for event_name, task_id in retired:
            log_event(
                log,
                logging.WARNING,
                f"subscription of task {task_id!r} to {event_name!r} retired: no live worker "
                f"has served the task for {RETIRE_SUBSCRIPTIONS_AFTER:g}s",
                task=task_id,
                event=event_name,
            )
        return retired

    async def run_failure_hooks_once(self) -> int:
        """Run the owed on_failure hooks of the tasks this daemon serves; how many."""
        return await self._hooks.run_once() if self._hooks is not None else 0

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
            after: uuid.UUID | None = None
            while True:
                # Each batch starts after the previous one's last run: the old runs that stay
                # (not finished, or a child of a parent not finished) are read once per pass.
                count, after = await self._store.retention.prune_runs(
                    cutoff, retention.batch, after
                )
                done("runs", count)
                if count < retention.batch:  # the batch read up to the cutoff
                    break
                await anyio.lowlevel.checkpoint()  # the daemon's other work between batches
        if retention.events > 0:
            cutoff = now - timedelta(seconds=retention.events)
            while (count := await self._store.retention.prune_events(cutoff, retention.batch)) > 0:
                done("events", count)
                await anyio.lowlevel.checkpoint()
        while (count := await self._store.retention.prune_idempotency_keys(retention.batch)) > 0:
            done("idempotency_keys", count)
            await anyio.lowlevel.checkpoint()
        while (count := await self._store.retention.prune_failure_hooks(retention.batch)) > 0:
            await anyio.lowlevel.checkpoint()
        if retention.workers > 0:
            done(
                "workers",
                await self._store.retention.prune_workers(
                    now - timedelta(seconds=retention.workers)
                ),
            )
        if any(deleted.values()):
            log_event(log, logging.INFO, "pruned rows past their retention", **deleted)
        return deleted

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
        """Expire every second; fail unknown tasks, rescue (and report what these found) and
        retire subscriptions every heartbeat; prune every retention interval, and run owed
        on_failure hooks, each in a loop of its own (a long backlog of rows to prune, or a slow
        hook, must not delay a rescue)."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._prune_loop)
            group.start_soon(self._wake_loop)
            if self._hooks is not None:
                group.start_soon(self._hook_loop)
            tick = min(1.0, self._settings.heartbeat)
            since_rescue = float("inf")
            while True:
                try:
                    await self.expire_once()
                    if since_rescue >= self._settings.heartbeat:
                        since_rescue = 0.0
                        await self.fail_unknown_once()
                        await self.rescue_once()  # reports what these chores found
                        await self.retire_subscriptions_once()
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

    async def _hook_loop(self) -> None:
        # A loop of its own: a slow hook must not delay a rescue. Every heartbeat, and at once
        # when this daemon's rescue or unknown-task chore failed runs.
        while True:
            self._hooks_due = anyio.Event()
            try:
                await self.run_failure_hooks_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("running on_failure hooks failed, retrying: %s", exc)
            with anyio.move_on_after(self._settings.heartbeat):
                await self._hooks_due.wait()

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("prune")
                log.error("pruning failed, retrying at the next interval: %s", exc)
            await anyio.sleep(self._retention.interval)


def _has_exited(worker: dict[str, Any], here: process_identity.ProcessIdentity | None) -> bool:
    """Whether the worker row's recorded process provably exited (no identity: no proof).

    The host name must match too: two machines resumed from one live snapshot share a boot id
    (and the initial pid namespace), and only their names may tell them apart."""
    recorded = process_identity.ProcessIdentity.from_stored(worker.get("process"))
    return (
        recorded is not None
        and worker.get("host") == socket.gethostname()
        and process_identity.has_exited(recorded, here)
    )

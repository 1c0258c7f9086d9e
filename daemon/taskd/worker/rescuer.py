"""The rescuer: runs whose lease expired, or whose worker is gone, go back to the queue (or
fail, WorkerLost, when that was their last attempt; or end canceled, when a cancel was asked).

A worker counts as gone when its lock is free at two checks in a row: after a database restart
every daemon re-takes its lock within a second, and must not have its runs taken meanwhile.
The sweeper (sweeper.py) calls it every heartbeat. Each pass that finds something publishes
the report of what the chores found since the last one (findings.py). All of it writes in
small batches with ``FOR UPDATE SKIP LOCKED``, so several daemons rescuing at once neither
block nor double-process a run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from taskd.changes import ChangeKind
from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.store.store import Store
from taskd.worker.findings import BATCH, Findings
from taskd.worker.report import RESCUED_KINDS

log = logging.getLogger("taskd.maintenance")


class Rescuer:
    def __init__(
        self,
        store: Store,
        settings: WorkerSettings,
        worker_id: uuid.UUID,
        *,
        findings: Findings | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._worker_id = worker_id
        self.findings = findings or Findings(store, worker_id)
        # Workers whose lock was free at the previous check.
        self._suspects: set[uuid.UUID] = set()

    async def run_once(self) -> int:
        """Hand back runs whose lease expired or whose worker is gone; return how many."""
        found = {w["id"]: w for w in await self._store.workers.list_unlocked(self._worker_id)}
        unlocked = set(found)
        gone = unlocked & self._suspects
        self._suspects = unlocked - gone
        rescued = await self.rescue(sorted(gone))
        if gone:
            await self._store.workers.mark_gone(sorted(gone))
            self.findings.report.gone_workers = [
                f"{i} ({found[i]['host']}:{found[i]['pid']})" for i in sorted(gone)
            ]
        if not self.findings.report.empty:
            await self.findings.publish_report("rescue", rescued=rescued)
        return rescued

    async def rescue(self, gone: Sequence[uuid.UUID]) -> int:
        """Hand back the runs of these gone workers, and any with an expired lease."""
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
                self.findings.add(RESCUED_KINDS.get(status, status), run_id, task_id)
                if status == "failed":
                    self.findings.hooks_due.set()
                kind = {"queued": ChangeKind.ATTEMPT_FAILED, "canceled": ChangeKind.CANCELED}
                self.findings.changed(
                    kind.get(status, ChangeKind.FAILED),
                    run_id,
                    task_id,
                    status,
                    attempt,
                    {"attempt_outcome": "lost", "error": {"type": "WorkerLost"}},
                )
            if len(rescued) < BATCH:
                return total

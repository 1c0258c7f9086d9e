"""The unknown-task failer: due runs of a task that no live worker serves fail (UnknownTask)
once they waited ``[worker] unknown_task_timeout``; 0, the default, lets them wait. The
sweeper (sweeper.py) calls it every heartbeat, just before the rescue that reports what it
failed."""

from __future__ import annotations

import logging
import uuid

from taskd.changes import ChangeKind
from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.store.store import Store
from taskd.worker.findings import BATCH, Findings

log = logging.getLogger("taskd.maintenance")


class UnknownTaskFailer:
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
        self._findings = findings or Findings(store, worker_id)

    async def run_once(self) -> int:
        """Fail due runs of tasks no live worker serves, once they waited unknown_task_timeout
        since they were due and since their task became unserved; how many."""
        timeout = self._settings.unknown_task_timeout
        if timeout <= 0:
            return 0
        failed = await self._store.runs.fail_unknown(timeout, BATCH)
        if failed:
            self._findings.hooks_due.set()
        for run_id, task_id in failed:
            log_event(
                log,
                logging.ERROR,
                f"run failed: no worker serves task {task_id!r}",
                run_id=str(run_id),
                task=task_id,
            )
            self._findings.add("unknown_task", run_id, task_id)
            self._findings.changed(
                ChangeKind.FAILED,
                run_id,
                task_id,
                "failed",
                None,
                {"error": {"type": "UnknownTask"}},
            )
        return len(failed)

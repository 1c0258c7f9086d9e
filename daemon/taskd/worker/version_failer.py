"""The version failer: queued runs pinned to a version of their task's code (a recorded version
and durable state: steps, waits, children, or a parent) that no live worker serves fail
(VersionUnavailable, naming the version) once they waited ``[worker] version_timeout`` since
they were due and since the last worker serving that version stopped; 0 lets them wait. The
sweeper (sweeper.py) calls it every heartbeat, after the unknown-task failer and before the
rescue that reports what it failed. Shaped like unknown_task_failer.py."""

from __future__ import annotations

import logging
import uuid

from taskd.changes import ChangeKind
from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.store.store import Store
from taskd.worker.findings import BATCH, Findings

log = logging.getLogger("taskd.maintenance")


class VersionFailer:
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
        """Fail due runs pinned to a version no live worker serves, once they waited
        version_timeout; how many."""
        timeout = self._settings.version_timeout
        if timeout <= 0:
            return 0
        failed = await self._store.runs.fail_version_unavailable(timeout, BATCH)
        if failed:
            self._findings.hooks_due.set()
        for run_id, task_id, version in failed:
            log_event(
                log,
                logging.ERROR,
                f"run failed: no worker serves version {version} of task {task_id!r}",
                run_id=str(run_id),
                task=task_id,
                version=version,
            )
            self._findings.add("version_unavailable", run_id, task_id)
            self._findings.changed(
                ChangeKind.FAILED,
                run_id,
                task_id,
                "failed",
                None,
                {"error": {"type": "VersionUnavailable"}},
            )
        return len(failed)

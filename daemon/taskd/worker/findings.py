"""What the maintenance chores found: each run they move goes to the change stream (and the
metrics), and into the report that the rescuer publishes (see report.py).

The chores of one daemon share one ``Findings``: the expirer and the unknown-task failer find
runs, and the rescue that comes next in the sweeper's pass (sweeper.py) names them all in one
line, with the runs it handed back.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
import orjson

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.logs import log_event
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.report import Report

log = logging.getLogger("taskd.maintenance")

BATCH = 1000
"""Rows a chore moves per statement (each its own short transaction)."""


class Findings:
    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        *,
        changes: ChangeHub | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._changes = changes or ChangeHub()
        self.telemetry = telemetry or Telemetry()
        # What the chores found since the last report.
        self.report = Report("rescue")
        self.last_report: Report | None = None
        # Set when a chore failed runs in SQL, where their on_failure hooks cannot run: the
        # failure-hook chore looks at once instead of at its next heartbeat.
        self.hooks_due = anyio.Event()

    def add(self, kind: str, run_id: uuid.UUID, task_id: str) -> None:
        self.report.add(kind, run_id, task_id)

    def changed(
        self,
        kind: ChangeKind,
        run_id: uuid.UUID,
        task_id: str,
        status: str,
        attempt: int | None,
        data: dict[str, Any] | None,
    ) -> None:
        self.telemetry.changed(kind.value, task_id)
        if self._changes.active:
            self._changes.publish(RunChange(kind, run_id, task_id, status, attempt, data=data))

    async def publish_report(self, msg: str, **extra: object) -> None:
        """One log line with what was found since the last report, and the worker's row."""
        report, self.report = self.report, Report("rescue")
        failed = (
            report.counts["failed"]
            or report.counts["unknown_task"]
            or report.counts["version_unavailable"]
        )
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

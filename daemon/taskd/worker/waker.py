"""The waker: waiting runs go back to the queue when their wait is over.

A run waits (status ``waiting``) until a time, a token, or its children. This chore moves back
to the queue the runs whose wake-up time has come and the runs whose token was completed while
they still executed. A token completed while its run waits, and a child's end, move the run
back in the verb that completes them (``taskd.complete_token``, the store's outcome write, and
every store verb that ends a run: cancel, rescue, expire, fail-unknown).
"""

from __future__ import annotations

import logging
import uuid

from taskd import clock
from taskd.changes import ChangeKind
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.findings import BATCH, Findings

log = logging.getLogger("taskd.maintenance")

# A cheap query through a partial index (empty when nothing waits); this interval is the
# resume latency of a suspended run.
WAKE_INTERVAL = 0.25


class Waker:
    def __init__(self, store: Store, worker_id: uuid.UUID, *, findings: Findings | None = None):
        self._store = store
        self._findings = findings or Findings(store, worker_id)

    async def run_once(self) -> int:
        """Waiting runs whose wake-up time has come go back to the queue; how many."""
        return sum((await self.wake()).values())

    async def wake(self) -> dict[str, int]:
        """``run_once``, saying what it woke: how many runs of each task."""
        tasks: dict[str, int] = {}
        while True:
            woken = await self._store.waits.wake_due(BATCH)
            self._woken(woken, tasks)
            if len(woken) < BATCH:
                break
        # runs whose token was completed while they still executed, and that wait now
        self._woken(await self._store.waits.wake_completed_tokens(BATCH), tasks)
        return tasks

    def _woken(self, woken: list[tuple[uuid.UUID, str]], tasks: dict[str, int]) -> None:
        for run_id, task_id in woken:
            tasks[task_id] = tasks.get(task_id, 0) + 1
            self._findings.changed(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)

    async def run(self) -> None:
        """Every WAKE_INTERVAL, in a loop of its own."""
        while True:
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._findings.telemetry.db_error("maintenance")
                log.error("waking waiting runs failed, retrying: %s", exc)
            await clock.sleep(WAKE_INTERVAL)

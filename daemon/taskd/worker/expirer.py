"""The expirer: queued runs past their ttl end ``expired``. The sweeper (sweeper.py) calls it
every second; the rescue that follows reports what it ended."""

from __future__ import annotations

import logging
import uuid

from taskd.changes import ChangeKind
from taskd.logs import log_event
from taskd.store.store import Store
from taskd.worker.findings import BATCH, Findings

log = logging.getLogger("taskd.maintenance")


class Expirer:
    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        *,
        findings: Findings | None = None,
    ) -> None:
        self._store = store
        self._findings = findings or Findings(store, worker_id)

    async def run_once(self) -> int:
        """End the queued runs past their ttl; how many."""
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
                self._findings.add("expired", run_id, task_id)
                self._findings.changed(ChangeKind.EXPIRED, run_id, task_id, "expired", None, None)
            if len(expired) < BATCH:
                return total

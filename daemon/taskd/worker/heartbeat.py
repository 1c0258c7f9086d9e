"""The heartbeat: every ``[worker] heartbeat`` it marks this worker alive and renews the
leases of the runs it holds (executing, or finished and not yet written).

When the fleet has declared this worker gone (its lock was found free twice, and its runs
handed to others), the renewal says so: the daemon abandons those runs and stops at once, for
systemd to restart it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import anyio

from taskd.config import WorkerSettings
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.completer import Handback

log = logging.getLogger("taskd.daemon")


class Heartbeat:
    def __init__(
        self,
        store: Store,
        settings: WorkerSettings,
        worker_id: uuid.UUID,
        leases: Callable[[], list[Handback]],
        on_gone: Callable[[], None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._worker_id = worker_id
        self._leases = leases
        self._on_gone = on_gone

    async def run_once(self) -> bool:
        """Renew the worker row and the leases; False when this worker was declared gone."""
        # Bounded: a late renewal is useless once the lease is gone; the next try is.
        alive: bool = await self._store.workers.heartbeat(
            self._worker_id,
            self._settings.lease,
            self._leases(),
            timeout=self._settings.lease / 2,
        )
        return alive

    async def run(self) -> None:
        while True:
            await anyio.sleep(self._settings.heartbeat)
            try:
                alive = await self.run_once()
            except DB_ERRORS as exc:
                log.error("heartbeat failed: %s", exc)
                continue
            if not alive:
                # Another daemon found this worker's lock free twice and handed its runs
                # back: they are others' now. Stop at once; systemd restarts us (exit 1).
                self._on_gone()
                return

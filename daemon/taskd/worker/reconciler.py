"""The reconciler: at start-up, before the daemon is ready, every run of a provably gone worker
goes back to the queue at once, not after its lease.

A previous incarnation of this daemon, killed a moment ago, has no lock, and its runs must
resume now. A free lock alone proves little: a live worker whose lock connection just dropped
re-takes its lock within a second. So a worker whose process this daemon can prove has exited
(same machine and pid namespace: process_identity.py) is handed back at once; any other counts
as gone only if its lock is still free RECHECK_DELAY later. One report covers both.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from taskd.store.store import Store
from taskd.worker import process_identity
from taskd.worker.report import Report
from taskd.worker.rescuer import Rescuer

# Longer than the worker lock's longest reconnect backoff (1 s). Only the start-up
# reconciliation waits it, and only for workers whose exit it cannot prove.
RECHECK_DELAY = 1.5


class Reconciler:
    """Runs once, at start-up: ``run_once`` is all of it (there is no loop)."""

    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        rescuer: Rescuer,
        *,
        handed_back: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._rescuer = rescuer
        # the rescuer's findings: the runs it hands back here go into this report
        self._findings = rescuer.findings
        # Called when runs were handed back (the reconciliation comes before the listener,
        # which would otherwise bring the nudge).
        self._handed_back = handed_back

    async def run_once(self) -> int:
        """Hand back every run of a provably gone worker; how many."""
        self._findings.report = Report("startup")
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
        self._findings.report.gone_workers = [f"{w['id']} ({w['host']}:{w['pid']})" for w in gone]
        await self._findings.publish_report(
            "reconciled",
            rescued=rescued,
            workers=[str(w["id"]) for w in gone],
            exited=[str(w["id"]) for w in exited],
            hosts=sorted({f"{w['host']}:{w['pid']}" for w in gone}),
        )
        return rescued

    async def _hand_back(self, gone: Sequence[dict[str, Any]]) -> int:
        """Rescue the runs of these gone workers (and any with an expired lease), mark the
        workers gone, and nudge the claimer for what came back."""
        ids = [worker["id"] for worker in gone]
        rescued = await self._rescuer.rescue(ids)
        if ids:
            await self._store.workers.mark_gone(ids)
        if rescued and self._handed_back is not None:
            self._handed_back()
        return rescued


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

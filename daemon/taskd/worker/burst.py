"""Burst mode (`taskd run --until-empty`): when the daemon has nothing due left, and what it did.

The daemon starts as usual and its claimer claims what is due. After a claim that found nothing
while nothing executed here and every outcome was written (a quiet claim), the claimer asks
``verdict``. The burst is over (EMPTY) once all of this holds:

- start-up is done: the reconciliation (runs of gone workers handed back) and a first pass of
  the scheduler (the cron fire times due now, fired);
- no waiting run of its tasks was just woken: the waker's pass (a timer or token due) and the
  parents whose children all finished without waking them (``waits.wake_missed_parents``);
- the claim waits for no rate window with a due run of its tasks behind it.

What it leaves: queued runs not yet due (delayed runs, retries whose backoff is not over),
waiting runs, runs of tasks or queues it does not serve, and due runs that the limits of
runs executing on other daemons hold back (the daemons holding them serve those queues and
claim them as their slots free: a burst does not wait on work it does not control).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from taskd.changes import ChangeKind
from taskd.logs import log_event
from taskd.models import Outcome, RunStatus
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.findings import Findings
from taskd.worker.waker import Waker

log = logging.getLogger("taskd.burst")


class Verdict(enum.Enum):
    EMPTY = "empty"
    """Nothing due is left for this daemon: stop claiming, drain, exit."""
    AGAIN = "again"
    """Runs of its tasks were just woken: claim again now."""
    WAIT = "wait"
    """Not yet: start-up is not done, or due runs wait for a rate window (the claimer is
    nudged when either is over)."""


class Burst:
    def __init__(
        self,
        store: Store,
        task_ids: Sequence[str],
        queues: Sequence[str] | None,
        waker: Waker,
        findings: Findings,
    ) -> None:
        self._store = store
        self._task_ids = list(task_ids)
        self._queues = list(queues) if queues else None
        self._waker = waker
        self._findings = findings
        self.started = False
        """Set by the daemon once its reconciliation and first scheduler pass are done."""
        self.emptied = False
        """The burst found nothing due left (False: it was stopped before, by a signal)."""
        self.completed = 0
        self.failed = 0
        self.canceled = 0
        # runs whose last outcome written here left them unfinished: "retrying" (an attempt
        # failed, its retry not yet due) or "waiting" (suspended); dropped when they end here
        self._unfinished: dict[UUID, str] = {}

    # what the completer wrote -------------------------------------------------------------

    def written(self, outcomes: Sequence[Outcome], written: Mapping[UUID, str]) -> None:
        """Outcomes the completer wrote, with the state each run is in now."""
        for outcome in outcomes:
            status = written.get(outcome.run_id)
            if status is None:
                continue  # not this worker's any more: not an outcome of this burst
            if status == RunStatus.COMPLETED:
                self.completed += 1
            elif status == RunStatus.FAILED:
                self.failed += 1
            elif status == RunStatus.CANCELED:
                self.canceled += 1
            elif status == RunStatus.QUEUED:
                self._unfinished[outcome.run_id] = "retrying"
                continue
            else:
                self._unfinished[outcome.run_id] = "waiting"
                continue
            self._unfinished.pop(outcome.run_id, None)

    @property
    def retrying(self) -> int:
        """Runs whose attempt failed here and whose retry was not due before the burst ended."""
        return sum(1 for kind in self._unfinished.values() if kind == "retrying")

    @property
    def runs_failed(self) -> bool:
        """Whether a run this burst attempted ended failed, or is left to retry a failed
        attempt: the work was not done (exit code 3)."""
        return self.failed > 0 or self.retrying > 0

    # the verdict --------------------------------------------------------------------------

    async def verdict(self, retry_in: float | None) -> Verdict:
        """After a quiet claim that claimed nothing (``retry_in``: its rate-window hint)."""
        if not self.started:
            return Verdict.WAIT
        woken = await self._waker.wake()
        if any(task_id in woken for task_id in self._task_ids):
            return Verdict.AGAIN
        missed = await self._store.waits.wake_missed_parents(self._task_ids, self._queues)
        for run_id, task_id in missed:
            self._findings.changed(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
        if missed:
            return Verdict.AGAIN
        if retry_in is not None and await self._store.runs.any_due(self._task_ids, self._queues):
            return Verdict.WAIT  # a rate window (or a claim of another daemon) holds them
        return Verdict.EMPTY

    # the summary --------------------------------------------------------------------------

    async def report(self, claimed: int, exit_code: int) -> None:
        """The one summary line at exit: what was done, what is left for later."""
        left: dict[str, Any] = {}
        try:
            left = await self._store.runs.left_for_later(self._task_ids, self._queues)
        except DB_ERRORS as exc:  # the summary is not worth failing the exit for
            log.warning("burst: could not count the runs left for later: %s", exc)
        ended = "nothing due left" if self.emptied else "stopped before the queue was empty"
        counts = (
            f"claimed {claimed}, completed {self.completed}, failed {self.failed}, "
            f"left to retry {self.retrying}, canceled {self.canceled}"
        )
        if left:
            later = (
                f"; left for later: {left['delayed']} delayed, {left['waiting']} waiting, "
                f"{left['due']} due but held back"
            )
        else:
            later = ""
        log_event(
            log,
            logging.WARNING if exit_code else logging.INFO,
            f"burst done ({ended}): {counts}{later}; exit {exit_code}",
            emptied=self.emptied,
            claimed=claimed,
            completed=self.completed,
            failed=self.failed,
            retrying=self.retrying,
            canceled=self.canceled,
            **{f"left_{key}": value for key, value in left.items()},
            exit_code=exit_code,
        )

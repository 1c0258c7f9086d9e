"""The claimer: claims runs up to the free slots and starts them.

It claims a batch of at most the free slots whenever it is nudged (a NOTIFY on
``taskd_wakeup``, a retry falling due, a freed slot while a backlog is known, the listener's
reconnect, the reconciliation's hand-back) or the poll interval passes. One claim is in flight
at a time, so claims batch themselves under load and start at once when idle. Where a claimed
run goes from here: in_flight.py (its slot and task), executor.py (its attempt), completer.py
(its outcome).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.models import Claim, ClaimedRun, Outcome, RunStatus
from taskd.sdk.registry import Registry
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.burst import Burst, Verdict

if TYPE_CHECKING:
    from taskd.worker.in_flight import InFlight

log = logging.getLogger("taskd.claimer")

_MAX_BACKOFF = 5.0
_MAX_RETRY_TIMERS = 10_000
_MAX_KEY_CURSORS = 1_000


class Claimer:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: WorkerSettings,
        worker_id: uuid.UUID,
        may_claim: Callable[[], bool] = lambda: True,
        *,
        telemetry: Telemetry | None = None,
        burst: Burst | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._worker_id = worker_id
        self._telemetry = telemetry or Telemetry()
        # False while the worker's lock is not held: other daemons may be counting this worker
        # as gone, and runs claimed now could be handed to them too.
        self._may_claim = may_claim
        self._task_ids = registry.ids
        # the version of each task this daemon serves (worker/versions.py), recorded on a
        # run's first start; pinned: started runs with durable state only at their version
        self._task_versions = [registry.get(t).version for t in self._task_ids]
        self._pinned = settings.version_policy == "pinned"
        self._queues = list(settings.queues) or None  # None: every queue
        # Where claimed runs go: the InFlight built on this claimer sets itself here.
        self.in_flight: InFlight | None = None
        self._claiming = True
        self._backlog = True  # unknown at start: look
        self._nudges = 0  # counts nudge() calls, so one that lands during a claim is not lost
        # a queue's limits held due runs back at the last claim: claim again when a slot frees
        self._held_back = False
        # round-robin cursors: the queue the last claim ended with, and each queue's last key
        self._queue_after: str | None = None
        self._key_after: dict[str, str] = {}
        self._nudged = anyio.Event()
        self._retry_due: list[float] = []
        self._retry_timer: asyncio.Handle | None = None
        self._retry_timer_at = 0.0
        # burst mode (`taskd run --until-empty`): stop once nothing due is left (burst.py)
        self._burst = burst
        self._retry_in: float | None = None  # the last claim's rate-window hint
        self.claimed_total = 0

    # signals from the other parts ---------------------------------------------------------

    @property
    def claiming(self) -> bool:
        return self._claiming

    def serves_queue(self, queue: str) -> bool:
        return self._queues is None or queue in self._queues

    def nudge(self) -> None:
        """Something may be claimable (a NOTIFY, a retry due, a reconnect): look now."""
        self._nudges += 1
        self._backlog = True
        self._nudged.set()

    def stop(self) -> None:
        """No more claims (a drain, a second signal, or this worker declared gone)."""
        self._claiming = False
        self._nudged.set()

    def slot_freed(self) -> None:
        # (a limited queue's slot frees when the outcome is written, not here: see
        # outcomes_written)
        if self._backlog and self._claiming and not self._held_back:
            self._nudged.set()

    def outcomes_written(self) -> None:
        if self._burst is not None and self._claiming and self._quiet():
            # the last outcomes are written (a parent they woke is queued): look whether
            # anything due is left. A nudge proper (counted): one landing during a claim in
            # flight must not be lost when that claim finds nothing
            self.nudge()
        elif self._held_back and self._claiming:
            # The written outcomes freed slots of queues whose limits held runs back (their
            # leases counted until now): claim at once, without waiting for our own NOTIFY.
            self._backlog = True
            self._nudged.set()

    def nudge_for_retries(self, outcomes: Sequence[Outcome]) -> None:
        """Claim each retry this daemon scheduled when it is due, not at the next poll.

        One timer at a time, for the soonest due time in a bounded heap; past the bound (or
        for delays another daemon set) the poll interval still finds the run.
        """
        now = time.monotonic()
        for outcome in outcomes:
            if outcome.status is RunStatus.QUEUED and len(self._retry_due) < _MAX_RETRY_TIMERS:
                heapq.heappush(self._retry_due, now + outcome.retry_delay)
        self._arm_retry_timer()

    def close(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()

    # the chore ----------------------------------------------------------------------------

    async def run_once(self) -> list[ClaimedRun]:
        """Claim one batch (at most the free slots) and start its runs; the runs started."""
        in_flight = self.in_flight
        assert in_flight is not None, "an InFlight takes the claimed runs"
        free = in_flight.capacity - in_flight.in_use
        self._retry_in = None
        if free <= 0 or not self._task_ids:
            return []
        nudges_before = self._nudges
        limit = min(free, self._settings.claim_batch)
        claim = await self._store.runs.claim(
            self._task_ids,
            self._queues,
            limit,
            self._worker_id,
            self._settings.lease,
            queue_after=self._queue_after,
            key_after=self._key_after,
            task_versions=self._task_versions,
            pinned=self._pinned,
        )
        claimed = claim.runs
        if not self._claiming:  # a drain began while the claim was in flight
            in_flight.hand_back(claimed)
            return []
        self._backlog = len(claimed) == limit or self._nudges != nudges_before
        self._held_back = claim.held_back
        self._retry_in = claim.retry_in
        if claim.retry_in is not None:  # a rate window opens then
            self._nudge_in(claim.retry_in)
        self._advance_cursors(claim)
        self.claimed_total += len(claimed)
        self._telemetry.claimed(claimed)
        loop = asyncio.get_running_loop()
        for claimed_run in claimed:
            in_flight.start(claimed_run, loop)
        return claimed

    async def run(self) -> None:
        """Claim whenever nudged, or every poll interval, until ``stop`` (in burst mode, also
        until nothing due is left)."""
        in_flight = self.in_flight
        assert in_flight is not None, "an InFlight takes the claimed runs"
        failures = 0
        while self._claiming:
            nudges_before = self._nudges
            free = in_flight.capacity - in_flight.in_use
            serving = bool(self._task_ids) or self._burst is not None
            if free > 0 and self._backlog and serving and self._may_claim():
                try:
                    quiet = self._quiet()  # before the claim: only the claimer starts runs
                    claimed = await self.run_once()
                    if quiet and not claimed and await self._burst_over(nudges_before):
                        self.stop()
                        break
                except DB_ERRORS as exc:
                    failures += 1
                    self._telemetry.db_error("claim")
                    delay = min(_MAX_BACKOFF, 0.1 * 2**failures)
                    log_event(log, logging.ERROR, f"claim failed, retrying in {delay:.2g}s: {exc}")
                    await anyio.sleep(delay)
                    continue
                failures = 0
                if not self._claiming:
                    break
                if self._backlog and in_flight.in_use < in_flight.capacity:
                    continue
            if self._nudges != nudges_before or not self._claiming:
                continue
            self._nudged = anyio.Event()
            with anyio.move_on_after(self._settings.poll_interval) as poll:
                await self._nudged.wait()
            if poll.cancelled_caught:
                self._backlog = True  # the poll: look whether anything became due

    # burst mode ---------------------------------------------------------------------------

    def _quiet(self) -> bool:
        """Burst mode, and nothing executes here nor waits to be written."""
        return self._burst is not None and self.in_flight is not None and self.in_flight.quiet

    async def _burst_over(self, nudges_before: int) -> bool:
        """After a quiet claim that claimed nothing: whether nothing due is left (burst.py)."""
        burst = self._burst
        assert burst is not None
        if not self._claiming or self._nudges != nudges_before:
            return False  # a nudge came during the claim (a NOTIFY, say): claim again first
        verdict = await burst.verdict(self._retry_in)
        if verdict is Verdict.AGAIN:
            self._backlog = True
            return False
        if verdict is Verdict.WAIT or self._nudges != nudges_before:
            return False
        burst.emptied = True
        log.info("burst: nothing due left for this daemon; draining")
        return True

    # cursors and timers -------------------------------------------------------------------

    def _advance_cursors(self, claim: Claim) -> None:
        """Where the next claim starts: after the last queue served, and in each queue below
        the last key the claim examined (keys go in descending order, then wrap around)."""
        if claim.runs:
            self._queue_after = claim.runs[-1].queue
        for queue, key in claim.cursors.items():
            if key is None:
                self._key_after.pop(queue, None)
            else:
                self._key_after[queue] = key
        if len(self._key_after) > _MAX_KEY_CURSORS:  # queues come and go: keep it bounded
            self._key_after = dict(list(self._key_after.items())[-_MAX_KEY_CURSORS:])

    def _nudge_in(self, delay: float) -> None:
        if len(self._retry_due) < _MAX_RETRY_TIMERS:
            heapq.heappush(self._retry_due, time.monotonic() + delay)
            self._arm_retry_timer()

    def _arm_retry_timer(self) -> None:
        now = time.monotonic()
        while self._retry_due and self._retry_due[0] <= now:
            heapq.heappop(self._retry_due)
            self.nudge()
        if not self._retry_due:
            return
        soonest = self._retry_due[0]
        if self._retry_timer is not None:
            if self._retry_timer_at <= soonest:
                return
            self._retry_timer.cancel()
        # Our own record of when, and call_later: under uvloop a delay below a millisecond
        # gives a plain Handle, which has no when() (a rate window opening in 0.4 ms did that).
        self._retry_timer_at = soonest
        self._retry_timer = asyncio.get_running_loop().call_later(
            soonest - now, self._on_retry_timer
        )

    def _on_retry_timer(self) -> None:
        self._retry_timer = None
        self._arm_retry_timer()

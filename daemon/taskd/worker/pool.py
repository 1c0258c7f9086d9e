"""The bounded worker pool: claims runs up to free capacity, executes them, writes outcomes.

The claimer and the completer share one anyio task group:

* the claimer claims a batch of at most the free slots whenever it is woken (a NOTIFY, a
  retry falling due, a freed slot while a backlog is known, or the poll interval); one claim
  is in flight at a time, so claims batch themselves under load and start at once when idle;
* each claimed run executes in its own asyncio task (a plain task, not an anyio one: at
  10,000 runs a second anyio's per-task bookkeeping was a third of the daemon's time), which
  the pool cancels itself and always awaits before it returns;
* the completer writes every buffered outcome in one statement, one write in flight at a
  time, so writes batch themselves too.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import anyio
import orjson

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.models import Claim, ClaimedRun, Outcome, RunStatus
from taskd.sdk.context import RunServices
from taskd.sdk.registry import Registry
from taskd.store.database import DB_ERRORS, DatabaseError, refuses_data
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.executor import canceled_before_start, crashed, execute, unstorable

log = logging.getLogger("taskd.pool")

_MAX_BACKOFF = 5.0
_MAX_RETRY_TIMERS = 10_000
_MAX_KEY_CURSORS = 1_000
# After the runs have ended at shutdown, how long the completer keeps trying to write what
# is left while the database is away. Past it the rest is dropped (and logged): those runs
# are still leased to this worker and are handed back when the lease expires.
FINAL_FLUSH_TIMEOUT = 10.0
# A cancel request reaches the daemon by NOTIFY at once (checked in the database before the
# run is cancelled); this poll is the backstop for a lost NOTIFY.
CANCEL_POLL_INTERVAL = 1.0
BEFORE_OUTCOMES_TIMEOUT = 2.0
# How soon the outcome of a run whose row another transaction holds is written again.
LOCKED_RETRY = 0.25

Handback = tuple[uuid.UUID, int]


class WorkerPool:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: WorkerSettings,
        worker_id: uuid.UUID,
        may_claim: Callable[[], bool] = lambda: True,
        *,
        changes: ChangeHub | None = None,
        telemetry: Telemetry | None = None,
        services: RunServices | None = None,
        before_outcomes: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._store = store
        self._changes = changes or ChangeHub()
        self._telemetry = telemetry or Telemetry()
        self._services = services
        # Called before each batch of outcomes is written (the run log writer's flush), so
        # that a run's stored lines are in the database by the time it is seen finished.
        self._before_outcomes = before_outcomes
        # False while the worker's lock is not held: other daemons may be counting this worker
        # as gone, and runs claimed now could be handed to them too.
        self._may_claim = may_claim
        self._registry = registry
        self._settings = settings
        self._worker_id = worker_id
        self._task_ids = registry.ids
        self._queues = list(settings.queues) or None  # None: every queue
        self._capacity = settings.concurrency
        self._running: dict[uuid.UUID, tuple[ClaimedRun, asyncio.Task[Outcome | None]]] = {}
        # claimer state
        self._claiming = True
        self._backlog = True  # unknown at start: look
        self._wakes = 0  # counts wake() calls, so one that lands during a claim is not lost
        # a queue's limits held due runs back at the last claim: claim again when a slot frees
        self._held_back = False
        # round-robin cursors: the queue the last claim ended with, and each queue's last key
        self._queue_after: str | None = None
        self._key_after: dict[str, str] = {}
        self._claim_wake = anyio.Event()
        self._idle = anyio.Event()
        self._retry_due: list[float] = []
        self._retry_timer: asyncio.Handle | None = None
        self._retry_timer_at = 0.0
        # completer state
        self._outcomes: list[Outcome] = []
        # outcomes of runs whose row another transaction holds (an application's open
        # taskd.cancel): retried every LOCKED_RETRY, without holding back the others
        self._locked: list[Outcome] = []
        self._locked_due = 0.0
        self._handbacks: list[Handback] = []
        self._writing: list[Handback] = []
        self._handback_tasks: dict[uuid.UUID, str] = {}  # task ids, for the change stream
        self._complete_wake = anyio.Event()
        # cancel hints (NOTIFY payloads) not yet checked in the database
        self._cancel_hints: set[uuid.UUID] = set()
        self._cancel_wake = anyio.Event()
        self._closing = False
        self._flush_deadline: float | None = None
        self.claimed_total = 0
        self.completed_total = 0
        self.unwritten = 0  # outcomes dropped at shutdown because the database stayed away

    # public -------------------------------------------------------------------------------

    @property
    def in_use(self) -> int:
        return len(self._running)

    @property
    def capacity(self) -> int:
        return self._capacity

    def serves_queue(self, queue: str) -> bool:
        return self._queues is None or queue in self._queues

    def leases(self) -> list[Handback]:
        """(run id, attempt) of the leases this daemon holds: runs executing, or finished
        and not yet written."""
        return [
            *((run.id, run.attempt) for run, _ in self._running.values() if not run.superseded),
            *((o.run_id, o.attempt) for o in self._outcomes),
            *((o.run_id, o.attempt) for o in self._locked),
            *self._handbacks,
            *self._writing,
        ]

    def cancel_hint(self, run_id: uuid.UUID) -> None:
        """A NOTIFY says ``run_id``'s cancel was requested. Any role that can connect can send
        one (NOTIFY checks no privilege), so the run is cancelled only once the database
        confirms the request; the hints that arrive meanwhile are checked in one query."""
        entry = self._running.get(run_id)
        if entry is not None and not entry[0].cancel_requested:
            self._cancel_hints.add(run_id)
            self._cancel_wake.set()

    def cancel(self, run_id: uuid.UUID) -> bool:
        """Cancel a run this daemon executes (a cancel request the database confirmed);
        False if it has none."""
        entry = self._running.get(run_id)
        if entry is None:
            return False
        run, run_task = entry
        if not run.cancel_requested:
            run.cancel_requested = True
            log_event(log, logging.INFO, "cancelling run on request", run_id=str(run_id))
            run_task.cancel()
        return True

    async def check_cancels(self, run_ids: Sequence[uuid.UUID] | None = None) -> None:
        """Cancel the runs (``run_ids``, else all running) whose cancel the database has."""
        candidates = list(self._running) if run_ids is None else run_ids
        if candidates:
            for run_id in await self._store.runs.list_cancel_requested(candidates):
                self.cancel(run_id)

    def wake(self) -> None:
        """Something may be claimable (a NOTIFY, a retry due, a reconnect)."""
        self._wakes += 1
        self._backlog = True
        self._claim_wake.set()

    async def run(self) -> None:
        """Claim, execute and complete until ``drain`` is called and the work is written."""
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._complete_loop)
            try:
                async with anyio.create_task_group() as serving:
                    serving.start_soon(self._cancel_poll_loop)
                    await self._claim_loop()
                    await self._wait_idle()
                    serving.cancel_scope.cancel()
            finally:
                if self._running:  # the daemon itself is being cancelled
                    self.cancel_all()
                    with anyio.CancelScope(shield=True):
                        await self._wait_idle()
            # every run task has ended: the completer writes what is left, then returns
            if self._flush_deadline is None:
                self._flush_deadline = time.monotonic() + FINAL_FLUSH_TIMEOUT
            self._closing = True
            self._complete_wake.set()
        if self._retry_timer is not None:
            self._retry_timer.cancel()

    async def drain(self, grace: float) -> None:
        """Stop claiming; let running attempts finish within ``grace``; cancel the rest.

        Cancelled attempts go back to the queue without spending an attempt.
        """
        self._claiming = False
        self._claim_wake.set()
        if self._running:
            log.info("draining %d running run(s), grace %.3gs", len(self._running), grace)
            with anyio.move_on_after(grace):
                await self._wait_idle()
        self.cancel_all()

    def cancel_all(self) -> None:
        """Cancel every running attempt now (the grace ran out, or a second signal).

        Called again while the last outcomes are being written, it also gives up waiting
        for a database that is away.
        """
        if self._closing:
            self._flush_deadline = time.monotonic()
        self._claiming = False
        self._claim_wake.set()
        if self._running:
            log.warning("cancelling %d run(s); they go back to the queue", len(self._running))
        for _, run_task in list(self._running.values()):
            run_task.cancel()

    def abandon(self) -> None:
        """The fleet declared this worker gone and handed its runs to others: stop claiming,
        cancel every attempt and write nothing (those runs are not this worker's any more)."""
        self._claiming = False
        self._claim_wake.set()
        for run, run_task in list(self._running.values()):
            run.superseded = True
            run_task.cancel()
        dropped = len(self._outcomes) + len(self._locked) + len(self._handbacks)
        self._outcomes, self._locked, self._handbacks = [], [], []
        log.error(
            "this worker was declared gone: abandoned %d running and %d unwritten run(s), "
            "which other daemons own now",
            len(self._running),
            dropped,
        )

    # claimer ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while self._claiming:
            free = self._capacity - len(self._running)
            wakes_before = self._wakes
            if free > 0 and self._backlog and self._task_ids and self._may_claim():
                limit = min(free, self._settings.claim_batch)
                try:
                    claim = await self._store.runs.claim(
                        self._task_ids,
                        self._queues,
                        limit,
                        self._worker_id,
                        self._settings.lease,
                        queue_after=self._queue_after,
                        key_after=self._key_after,
                    )
                except DB_ERRORS as exc:
                    failures += 1
                    self._telemetry.db_error("claim")
                    delay = min(_MAX_BACKOFF, 0.1 * 2**failures)
                    log_event(log, logging.ERROR, f"claim failed, retrying in {delay:.2g}s: {exc}")
                    await anyio.sleep(delay)
                    continue
                failures = 0
                claimed = claim.runs
                if not self._claiming:  # a drain began while the claim was in flight
                    self._hand_back(claimed)
                    break
                self._backlog = len(claimed) == limit or self._wakes != wakes_before
                self._held_back = claim.held_back
                if claim.retry_in is not None:  # a rate window opens then
                    self._schedule_wake(claim.retry_in)
                self._advance_cursors(claim)
                self.claimed_total += len(claimed)
                self._telemetry.claimed(claimed)
                for claimed_run in claimed:
                    self._start(claimed_run, loop)
                if self._backlog and len(self._running) < self._capacity:
                    continue
            if self._wakes != wakes_before or not self._claiming:
                continue
            self._claim_wake = anyio.Event()
            with anyio.move_on_after(self._settings.poll_interval) as poll:
                await self._claim_wake.wait()
            if poll.cancelled_caught:
                self._backlog = True  # the poll: look whether anything became due

    def _start(self, run: ClaimedRun, loop: asyncio.AbstractEventLoop) -> None:
        stale = self._running.get(run.id)
        if stale is not None:
            # This daemon's earlier attempt lost its lease (its heartbeats failed for longer
            # than the lease) and the run came back to it: that attempt's outcome is moot.
            stale_run, stale_task = stale
            stale_run.superseded = True
            stale_task.cancel()
            log_event(
                log,
                logging.WARNING,
                "run claimed again while an earlier attempt of it was still running here "
                "(its lease had expired); cancelling the earlier attempt",
                run_id=str(run.id),
                attempt=run.attempt,
            )
        run.started = time.monotonic()
        if self._idle.is_set():
            self._idle = anyio.Event()
        run_task = loop.create_task(self._execute(run))
        self._running[run.id] = (run, run_task)
        if self._changes.active:
            self._changes.publish(
                RunChange(ChangeKind.STARTED, run.id, run.task_id, "executing", run.attempt)
            )
        # The bookkeeping is a done callback, not a `finally`: a task cancelled before its
        # first step (a cancel or a drain landing in the same loop iteration as the claim)
        # never runs its body at all.
        run_task.add_done_callback(lambda done: self._finished(run, done))

    async def _execute(self, run: ClaimedRun) -> Outcome | None:
        try:
            return await execute(run, self._registry.get(run.task_id), self._services)
        except asyncio.CancelledError:
            return None  # drained or superseded before an outcome
        except Exception as exc:  # a defect that escaped the executor: fail the run, not us
            log_event(
                log,
                logging.ERROR,
                f"run crashed its executor: {type(exc).__name__}",
                run_id=str(run.id),
                task=run.task_id,
            )
            log.debug("executor crash", exc_info=True)
            return crashed(run, exc)

    def _finished(self, run: ClaimedRun, done: asyncio.Task[Outcome | None]) -> None:
        entry = self._running.get(run.id)
        if entry is not None and entry[1] is done:
            del self._running[run.id]
        outcome: Outcome | None = None
        if not done.cancelled():
            try:
                outcome = done.result()
            except BaseException as exc:  # only BaseExceptions the executor let through
                outcome = crashed(run, exc)
        if run.superseded:
            pass  # the run is another attempt's now; this one writes nothing
        elif outcome is not None or run.cancel_requested:
            if outcome is None:  # cancelled before its body ran: nothing to hook
                outcome = canceled_before_start(run)
            outcome.task_id = run.task_id
            outcome.duration = time.monotonic() - run.started
            self._outcomes.append(outcome)
        else:  # drained: hand back, attempt not spent
            self._handbacks.append((run.id, run.attempt))
            self._handback_tasks[run.id] = run.task_id
        self._complete_wake.set()
        # (a limited queue's slot frees when the outcome is written, not here: see _flush_once)
        if self._backlog and self._claiming and not self._held_back:
            self._claim_wake.set()
        if not self._running:
            self._idle.set()

    async def _cancel_poll_loop(self) -> None:
        """Checks the hints as they come (one query in flight; hints arriving meanwhile wait
        for the next), and every run this daemon executes each CANCEL_POLL_INTERVAL."""
        next_poll = time.monotonic() + CANCEL_POLL_INTERVAL
        while True:
            with anyio.move_on_after(max(0.0, next_poll - time.monotonic())):
                await self._cancel_wake.wait()
            self._cancel_wake = anyio.Event()  # before taking the hints: none is lost
            hints = [run_id for run_id in self._cancel_hints if run_id in self._running]
            self._cancel_hints.clear()
            polling = time.monotonic() >= next_poll
            if polling:
                next_poll = time.monotonic() + CANCEL_POLL_INTERVAL
            try:
                await self.check_cancels(None if polling else hints)
            except DB_ERRORS as exc:
                # a hint lost here is found by the next poll
                log.warning("cancel check failed: %s", exc)

    async def _wait_idle(self) -> None:
        # One event shared by every waiter (drain and run both wait): it is replaced only
        # once set, when a run starts again, never under a waiter's feet.
        while self._running:
            await self._idle.wait()

    def _hand_back(self, runs: Sequence[ClaimedRun]) -> None:
        for run in runs:
            self._handbacks.append((run.id, run.attempt))
            self._handback_tasks[run.id] = run.task_id
        self._complete_wake.set()

    # retry timers -------------------------------------------------------------------------

    def _wake_for_retries(self, outcomes: Sequence[Outcome]) -> None:
        """Claim each retry this daemon scheduled when it is due, not at the next poll.

        One timer at a time, for the soonest due time in a bounded heap; past the bound (or
        for delays another daemon set) the poll interval still finds the run.
        """
        now = time.monotonic()
        for outcome in outcomes:
            if outcome.status is RunStatus.QUEUED and len(self._retry_due) < _MAX_RETRY_TIMERS:
                heapq.heappush(self._retry_due, now + outcome.retry_delay)
        self._arm_retry_timer()

    def _schedule_wake(self, delay: float) -> None:
        if len(self._retry_due) < _MAX_RETRY_TIMERS:
            heapq.heappush(self._retry_due, time.monotonic() + delay)
            self._arm_retry_timer()

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

    def _arm_retry_timer(self) -> None:
        now = time.monotonic()
        while self._retry_due and self._retry_due[0] <= now:
            heapq.heappop(self._retry_due)
            self.wake()
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

    # completer ----------------------------------------------------------------------------

    async def _complete_loop(self) -> None:
        while True:
            if self._locked and time.monotonic() >= self._locked_due:
                # with the next batch, even under a steady flow of outcomes
                self._outcomes.extend(self._locked)
                self._locked = []
            if not self._outcomes and not self._handbacks:
                if self._locked:
                    await self._wait_for_locked()
                    continue
                if self._closing:
                    return
                self._complete_wake = anyio.Event()
                await self._complete_wake.wait()
                continue
            await self._flush_once()

    async def _wait_for_locked(self) -> None:
        """Until the held runs' outcomes are due again (or other outcomes come); at shutdown,
        give up on them at the flush deadline: their lease hands them back."""
        if self._closing and self._flush_deadline is not None:
            if time.monotonic() >= self._flush_deadline:
                locked, self._locked = self._locked, []
                self.unwritten += len(locked)
                log_event(
                    log,
                    logging.ERROR,
                    f"{len(locked)} outcome(s) not written at shutdown: another transaction "
                    "still holds their run's row; those runs return to the queue when their "
                    "lease expires",
                    run_ids=[str(o.run_id) for o in locked],
                )
                return
        self._complete_wake = anyio.Event()
        with anyio.move_on_after(max(0.0, self._locked_due - time.monotonic())):
            await self._complete_wake.wait()

    async def _flush_once(self) -> None:
        # Sorted by id, like the rows the heartbeat and the completer lock (in id order, SKIP
        # LOCKED: neither waits for the other, nor for a foreign transaction).
        outcomes = sorted(self._outcomes, key=lambda o: o.run_id)
        handbacks = sorted(self._handbacks)
        self._outcomes, self._handbacks = [], []
        self._writing = [(o.run_id, o.attempt) for o in outcomes] + handbacks
        failures = 0
        try:
            while outcomes or handbacks:
                try:
                    if outcomes:
                        await self._write_outcomes(outcomes)
                        outcomes = []
                    if handbacks:
                        await self._write_handbacks(handbacks)
                        handbacks = []
                except DatabaseError as exc:
                    if not refuses_data(exc):
                        failures += 1
                        if not await self._backoff(failures, len(outcomes) + len(handbacks), exc):
                            break
                        continue
                    # The database refused the batch itself: write it one by one so that one
                    # bad outcome cannot hold back the others.
                    log_event(log, logging.ERROR, f"outcome batch refused: {exc}")
                    await self._write_one_by_one(outcomes, handbacks)
                    outcomes, handbacks = [], []
                except DB_ERRORS as exc:
                    # Keep the outcomes: they are written when the database is back.
                    failures += 1
                    if not await self._backoff(failures, len(outcomes) + len(handbacks), exc):
                        break
        finally:
            self._writing = []
        if self._held_back and self._claiming:
            # The written outcomes freed slots of queues whose limits held runs back (their
            # leases counted until now): claim at once, without waiting for our own NOTIFY.
            self._backlog = True
            self._claim_wake.set()
        if outcomes or handbacks:
            self.unwritten += len(outcomes) + len(handbacks)
            log_event(
                log,
                logging.ERROR,
                f"database unreachable at shutdown: {len(outcomes)} outcome(s) and "
                f"{len(handbacks)} hand-back(s) not written; those runs return to the queue "
                "when their lease expires",
                run_ids=[str(o.run_id) for o in outcomes] + [str(r) for r, _ in handbacks],
            )

    async def _backoff(self, failures: int, pending: int, exc: BaseException) -> bool:
        """Sleep before the next try; False when shutdown allows no more tries."""
        self._telemetry.db_error("complete")
        delay = min(_MAX_BACKOFF, 0.1 * 2**failures)
        if self._closing and self._flush_deadline is not None:
            left = self._flush_deadline - time.monotonic()
            if left <= 0:
                return False
            delay = min(delay, left)
        log_event(
            log,
            logging.ERROR,
            f"writing {pending} outcome(s) failed, retrying in {delay:.2g}s: {exc}",
        )
        await anyio.sleep(delay)
        return True

    async def _write_one_by_one(self, outcomes: list[Outcome], handbacks: list[Handback]) -> None:
        for outcome in outcomes:
            try:
                await self._write_outcomes([outcome])
            except DB_ERRORS as exc:
                if not refuses_data(exc):
                    self._outcomes.append(outcome)  # retried with the next flush
                elif outcome.replaces_refused:
                    self.unwritten += 1
                    log_event(
                        log,
                        logging.ERROR,
                        f"outcome refused twice, left to the lease: {exc}",
                        run_id=str(outcome.run_id),
                    )
                else:
                    log_event(
                        log,
                        logging.ERROR,
                        f"outcome refused by the database, failing the run instead: {exc}",
                        run_id=str(outcome.run_id),
                    )
                    self._outcomes.append(unstorable(outcome, exc))
        self._handbacks.extend(handbacks)

    async def _write_outcomes(self, outcomes: list[Outcome]) -> None:
        if self._before_outcomes is not None:
            # Bounded: a database refusing log lines, or tasks logging faster than they are
            # stored, must not hold back the outcomes (the lines follow a moment later).
            with anyio.move_on_after(BEFORE_OUTCOMES_TIMEOUT):
                await self._before_outcomes()
        locked: set[uuid.UUID] = set()
        written = await self._store.runs.complete_many(self._worker_id, outcomes, locked)
        if locked:
            self._locked.extend(o for o in outcomes if o.run_id in locked)
            self._locked_due = time.monotonic() + LOCKED_RETRY
            outcomes = [o for o in outcomes if o.run_id not in locked]
        self.completed_total += len(written)
        self._wake_for_retries([o for o in outcomes if o.run_id in written])
        self._telemetry.ended(outcomes, written)
        if self._changes.active:
            for outcome in outcomes:
                status = written.get(outcome.run_id)
                if status is not None:
                    self._changes.publish(outcome_change(outcome, status))
        if len(written) != len(outcomes):
            for outcome in outcomes:
                if outcome.run_id not in written:
                    log_event(
                        log,
                        logging.WARNING,
                        "outcome not written: the run is no longer this worker's "
                        "(rescued or canceled meanwhile)",
                        run_id=str(outcome.run_id),
                        attempt=outcome.attempt,
                    )

    async def _write_handbacks(self, handbacks: list[Handback]) -> None:
        released = await self._store.runs.release_many(self._worker_id, handbacks)
        log.info("handed %d run(s) back to the queue", len(released))
        for run_id, attempt in handbacks:
            task_id = self._handback_tasks.pop(run_id, "")
            if run_id in released and self._changes.active:
                self._changes.publish(
                    RunChange(ChangeKind.HANDED_BACK, run_id, task_id, "queued", attempt - 1)
                )


_OUTCOME_KINDS = {
    "completed": ChangeKind.COMPLETED,
    "failed": ChangeKind.FAILED,
    "canceled": ChangeKind.CANCELED,
    "queued": ChangeKind.ATTEMPT_FAILED,
    "waiting": ChangeKind.WAITING,
}


def outcome_change(outcome: Outcome, status: str) -> RunChange:
    """The run change a written outcome makes (``status``: the run's state after it)."""
    data: dict[str, object] = {"attempt_outcome": outcome.attempt_outcome.value}
    if outcome.duration is not None:
        data["duration"] = round(outcome.duration, 6)
    if outcome.error is not None and status != "completed":
        error = orjson.loads(outcome.error)
        data["error"] = {"type": error.get("type"), "message": error.get("message")}
    if status == "queued":
        data["retry_in"] = outcome.retry_delay
    if status == "waiting":
        data = {"wake_in": outcome.retry_delay}
    return RunChange(
        _OUTCOME_KINDS.get(status, ChangeKind.FAILED),
        outcome.run_id,
        outcome.task_id,
        status,
        outcome.attempt,
        data=data,
    )

"""The completer: writes the outcomes of finished attempts, and hands back the runs a drain
stopped, in batches.

Every buffered outcome goes out in one statement, one write in flight at a time, so writes
batch themselves under load. A run whose row another transaction holds (an application's open
``taskd.cancel``) is written again LOCKED_RETRY later without holding back the others; a batch
the database refuses is written one by one, so one bad outcome cannot hold back the rest.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
import orjson

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.logs import log_event
from taskd.models import Outcome
from taskd.store.database import DB_ERRORS, DatabaseError, refuses_data
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.burst import Burst
from taskd.worker.claimer import Claimer
from taskd.worker.executor import unstorable

log = logging.getLogger("taskd.completer")

_MAX_BACKOFF = 5.0
# After the runs have ended at shutdown, how long the completer keeps trying to write what
# is left while the database is away. Past it the rest is dropped (and logged): those runs
# are still leased to this worker and are handed back when the lease expires.
FINAL_FLUSH_TIMEOUT = 10.0
BEFORE_OUTCOMES_TIMEOUT = 2.0
# How soon the outcome of a run whose row another transaction holds is written again.
LOCKED_RETRY = 0.25

Handback = tuple[uuid.UUID, int]


class Completer:
    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        claimer: Claimer | None = None,
        *,
        changes: ChangeHub | None = None,
        telemetry: Telemetry | None = None,
        before_outcomes: Callable[[], Awaitable[object]] | None = None,
        burst: Burst | None = None,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        # told when retries fall due and when written outcomes free a limited queue's slots
        self._claimer = claimer
        self._changes = changes or ChangeHub()
        self._telemetry = telemetry or Telemetry()
        # Called before each batch of outcomes is written (the run log writer's flush), so
        # that a run's stored lines are in the database by the time it is seen finished.
        self._before_outcomes = before_outcomes
        self._burst = burst  # burst mode: counts the outcomes for its summary and exit code
        self._outcomes: list[Outcome] = []
        # outcomes of runs whose row another transaction holds (an application's open
        # taskd.cancel): retried every LOCKED_RETRY, without holding back the others
        self._locked: list[Outcome] = []
        self._locked_due = 0.0
        self._handbacks: list[Handback] = []
        self._writing: list[Handback] = []
        # runs of the batch being written that were claimed here again meanwhile (see
        # supersede): its retries leave them out
        self._superseded: set[uuid.UUID] = set()
        # every run id in the lists above (and maybe a few written since: rebuilt after each
        # batch), so that ``supersede``, called for every run started, costs a set lookup
        self._unwritten_ids: set[uuid.UUID] = set()
        self._handback_tasks: dict[uuid.UUID, str] = {}  # task ids, for the change stream
        self._pending = anyio.Event()
        self._closing = False
        self._flush_deadline: float | None = None
        self.completed_total = 0
        self.handed_back_total = 0
        self.unwritten = 0  # outcomes dropped at shutdown because the database stayed away

    # what the in-flight runs hand over ----------------------------------------------------

    def add_outcome(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._unwritten_ids.add(outcome.run_id)
        self._pending.set()

    def add_handback(self, run_id: uuid.UUID, attempt: int, task_id: str) -> None:
        """A run stopped before its outcome (drained): back to the queue, attempt not spent."""
        self._handbacks.append((run_id, attempt))
        self._unwritten_ids.add(run_id)
        self._handback_tasks[run_id] = task_id
        self._pending.set()

    def supersede(self, run_id: uuid.UUID) -> int:
        """``run_id`` was claimed here again: forget what an earlier execution of it left to
        write; how many outcomes and hand-backs that was.

        A claim is committed asynchronously, so a database crash may forget one after this
        daemon ran the run; recovery queues it again at its previous attempt and a new claim
        here carries the same worker and attempt. The earlier execution's outcome would pass
        that claim's compare-and-set and end a run another execution of it is running now
        (two outcomes of one run in one batch: reported completed twice).
        """
        if run_id not in self._unwritten_ids:
            return 0
        before = len(self._outcomes) + len(self._locked) + len(self._handbacks)
        self._outcomes = [o for o in self._outcomes if o.run_id != run_id]
        self._locked = [o for o in self._locked if o.run_id != run_id]
        handbacks = len(self._handbacks)
        self._handbacks = [h for h in self._handbacks if h[0] != run_id]
        if len(self._handbacks) != handbacks:
            self._handback_tasks.pop(run_id, None)
        dropped = before - len(self._outcomes) - len(self._locked) - len(self._handbacks)
        if any(r == run_id for r, _ in self._writing):
            self._superseded.add(run_id)  # the batch's next try, if any, leaves it out
            dropped += 1
        return dropped

    def leases(self) -> list[Handback]:
        """(run id, attempt) of the runs finished here and not yet written: their leases
        are still this worker's."""
        return [
            *((o.run_id, o.attempt) for o in self._outcomes),
            *((o.run_id, o.attempt) for o in self._locked),
            *self._handbacks,
            *self._writing,
        ]

    @property
    def busy(self) -> bool:
        """Outcomes or hand-backs wait to be written, or are being written (outcomes held
        back by another transaction's lock on their row do not count)."""
        return bool(self._outcomes or self._handbacks or self._writing)

    def close(self) -> None:
        """Every run has ended: write what is left (within FINAL_FLUSH_TIMEOUT), then return."""
        if self._flush_deadline is None:
            self._flush_deadline = time.monotonic() + FINAL_FLUSH_TIMEOUT
        self._closing = True
        self._pending.set()

    def give_up(self) -> None:
        """While closing, stop waiting for a database that is away (a second signal)."""
        if self._closing:
            self._flush_deadline = time.monotonic()

    def drop(self) -> int:
        """Forget every unwritten outcome and hand-back (the runs are others' now); how many."""
        dropped = len(self._outcomes) + len(self._locked) + len(self._handbacks)
        self._outcomes, self._locked, self._handbacks = [], [], []
        self._unwritten_ids = set()
        return dropped

    # the chore ----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Write what is pending now (held runs' outcomes once due); how many outcomes were
        written and runs handed back."""
        self._take_locked_if_due()
        if not self._outcomes and not self._handbacks:
            return 0
        before = self.completed_total + self.handed_back_total
        await self._flush()
        return self.completed_total + self.handed_back_total - before

    async def run(self) -> None:
        """Write as outcomes come, until ``close`` and everything is written (or given up)."""
        while True:
            self._take_locked_if_due()
            if not self._outcomes and not self._handbacks:
                if self._locked:
                    await self._wait_for_locked()
                    continue
                if self._closing:
                    return
                self._pending = anyio.Event()
                await self._pending.wait()
                continue
            await self._flush()

    def _take_locked_if_due(self) -> None:
        if self._locked and time.monotonic() >= self._locked_due:
            # with the next batch, even under a steady flow of outcomes
            self._outcomes.extend(self._locked)
            self._locked = []

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
        self._pending = anyio.Event()
        with anyio.move_on_after(max(0.0, self._locked_due - time.monotonic())):
            await self._pending.wait()

    async def _flush(self) -> None:
        # Sorted by id, like the rows the heartbeat and the completer lock (in id order, SKIP
        # LOCKED: neither waits for the other, nor for a foreign transaction).
        outcomes = sorted(self._outcomes, key=lambda o: o.run_id)
        handbacks = sorted(self._handbacks)
        self._outcomes, self._handbacks = [], []
        self._writing = [(o.run_id, o.attempt) for o in outcomes] + handbacks
        failures = 0
        try:
            while outcomes or handbacks:
                if self._superseded:  # claimed here again while this batch was retried
                    outcomes = [o for o in outcomes if o.run_id not in self._superseded]
                    handbacks = [h for h in handbacks if h[0] not in self._superseded]
                    if not (outcomes or handbacks):
                        break
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
            self._superseded.clear()
            self._unwritten_ids = {
                *(o.run_id for o in self._outcomes),
                *(o.run_id for o in self._locked),
                *(r for r, _ in self._handbacks),
            }
        if self._claimer is not None:
            self._claimer.outcomes_written()
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
        if self._burst is not None:
            self._burst.written(outcomes, written)
        if self._claimer is not None:
            self._claimer.nudge_for_retries([o for o in outcomes if o.run_id in written])
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
        if self._before_outcomes is not None:
            # a run handed back may resume on another daemon at once: its rows go first
            with anyio.move_on_after(BEFORE_OUTCOMES_TIMEOUT):
                await self._before_outcomes()
        released = await self._store.runs.release_many(self._worker_id, handbacks)
        self.handed_back_total += len(released)
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

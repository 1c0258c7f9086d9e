"""The runs this daemon executes right now: their slots (``[worker] concurrency``), their
tasks, their cancels, and the drain that ends them.

Each claimed run executes in its own asyncio task (a plain task, not an anyio one: at 10,000
runs a second anyio's per-task bookkeeping was a third of the daemon's time), which is
cancelled here and always awaited before ``run`` returns. ``run`` serves the claimer, the
completer and the cancel checks in one task group until a drain has ended every run and the
completer has written what they left.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

import anyio

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import WorkerSettings
from taskd.logs import log_event
from taskd.models import ClaimedRun, Outcome
from taskd.sdk.context import RunServices
from taskd.sdk.registry import Registry
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.claimer import Claimer
from taskd.worker.completer import Completer, Handback
from taskd.worker.executor import canceled_before_start, crashed, execute

log = logging.getLogger("taskd.in_flight")

# A cancel request reaches the daemon by NOTIFY at once (checked in the database before the
# run is cancelled); this poll is the backstop for a lost NOTIFY.
CANCEL_POLL_INTERVAL = 1.0


class InFlight:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: WorkerSettings,
        claimer: Claimer,
        completer: Completer,
        *,
        changes: ChangeHub | None = None,
        services: RunServices | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._claimer = claimer
        self._completer = completer
        self._changes = changes or ChangeHub()
        self._services = services
        self._capacity = settings.concurrency
        self._running: dict[uuid.UUID, tuple[ClaimedRun, asyncio.Task[Outcome | None]]] = {}
        self._idle = anyio.Event()
        # cancel hints (NOTIFY payloads) not yet checked in the database
        self._cancel_hints: set[uuid.UUID] = set()
        self._cancel_hinted = anyio.Event()
        claimer.in_flight = self  # the claimer starts its runs here

    @property
    def in_use(self) -> int:
        return len(self._running)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def quiet(self) -> bool:
        """Nothing executes here, and no outcome or hand-back waits to be written."""
        return not self._running and not self._completer.busy

    def leases(self) -> list[Handback]:
        """(run id, attempt) of the leases this daemon holds: runs executing, or finished
        and not yet written."""
        return [
            *((run.id, run.attempt) for run, _ in self._running.values() if not run.superseded),
            *self._completer.leases(),
        ]

    # cancels ------------------------------------------------------------------------------

    def cancel_hint(self, run_id: uuid.UUID) -> None:
        """A NOTIFY says ``run_id``'s cancel was requested. Any role that can connect can send
        one (NOTIFY checks no privilege), so the run is cancelled only once the database
        confirms the request; the hints that arrive meanwhile are checked in one query."""
        entry = self._running.get(run_id)
        if entry is not None and not entry[0].cancel_requested:
            self._cancel_hints.add(run_id)
            self._cancel_hinted.set()

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

    # serving and draining -----------------------------------------------------------------

    async def run(self) -> None:
        """Claim, execute and complete until ``drain`` is called and the work is written."""
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._completer.run)
            try:
                async with anyio.create_task_group() as serving:
                    serving.start_soon(self._cancel_poll_loop)
                    await self._claimer.run()
                    await self._wait_idle()
                    serving.cancel_scope.cancel()
            finally:
                if self._running:  # the daemon itself is being cancelled
                    self.cancel_all()
                    with anyio.CancelScope(shield=True):
                        await self._wait_idle()
            # every run task has ended: the completer writes what is left, then returns
            self._completer.close()
        self._claimer.close()

    async def drain(self, grace: float) -> None:
        """Stop claiming; let running attempts finish within ``grace``; cancel the rest.

        Cancelled attempts go back to the queue without spending an attempt.
        """
        self._claimer.stop()
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
        self._completer.give_up()
        self._claimer.stop()
        if self._running:
            log.warning("cancelling %d run(s); they go back to the queue", len(self._running))
        for _, run_task in list(self._running.values()):
            run_task.cancel()

    def abandon(self) -> None:
        """The fleet declared this worker gone and handed its runs to others: stop claiming,
        cancel every attempt and write nothing (those runs are not this worker's any more)."""
        self._claimer.stop()
        for run, run_task in list(self._running.values()):
            run.superseded = True
            run_task.cancel()
        dropped = self._completer.drop()
        log.error(
            "this worker was declared gone: abandoned %d running and %d unwritten run(s), "
            "which other daemons own now",
            len(self._running),
            dropped,
        )

    # one run's slot -----------------------------------------------------------------------

    def start(self, run: ClaimedRun, loop: asyncio.AbstractEventLoop) -> None:
        """Execute a claimed run in a slot of its own."""
        stale = self._running.get(run.id)
        if stale is not None:
            # This daemon's earlier attempt lost its lease (its heartbeats failed for longer
            # than the lease, or a database crash forgot its claim) and the run came back to
            # it: that attempt's outcome is moot.
            stale_run, stale_task = stale
            stale_run.superseded = True
            stale_task.cancel()
            log_event(
                log,
                logging.WARNING,
                "run claimed again while an earlier attempt of it was still running here "
                "(its lease expired, or the database forgot that claim); cancelling the "
                "earlier attempt",
                run_id=str(run.id),
                attempt=run.attempt,
            )
        elif self._completer.supersede(run.id):
            # The earlier execution ended here but its outcome is not written yet, and the
            # run came back (its lease expired, or a database crash forgot the claim's
            # asynchronous commit): that outcome is moot.
            log_event(
                log,
                logging.WARNING,
                "run claimed again while the outcome of an earlier execution of it waited "
                "to be written here (its lease expired, or the database forgot that claim); "
                "dropping that outcome",
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

    def hand_back(self, runs: Sequence[ClaimedRun]) -> None:
        """Claimed runs that will not start (a drain began during their claim)."""
        for run in runs:
            self._completer.add_handback(run.id, run.attempt, run.task_id)

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
            self._completer.add_outcome(outcome)
        else:  # drained: hand back, attempt not spent
            self._completer.add_handback(run.id, run.attempt, run.task_id)
        self._claimer.slot_freed()
        if not self._running:
            self._idle.set()

    async def _cancel_poll_loop(self) -> None:
        """Checks the hints as they come (one query in flight; hints arriving meanwhile wait
        for the next), and every run this daemon executes each CANCEL_POLL_INTERVAL."""
        next_poll = time.monotonic() + CANCEL_POLL_INTERVAL
        while True:
            with anyio.move_on_after(max(0.0, next_poll - time.monotonic())):
                await self._cancel_hinted.wait()
            self._cancel_hinted = anyio.Event()  # before taking the hints: none is lost
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

"""``Tester``: a test's own database and in-process daemon, runs to the end, and time skipping.

The daemon serves the tasks the test runs (``tester.run(task, ...)`` adds the task and restarts
the daemon when it did not serve it yet). ``drain()`` returns once the daemon is idle: no
attempt executing (but runs sleeping in their slot until a later time), no outcome unwritten,
nothing due now. ``advance(hours=24)`` moves the virtual clock, the Python side
(``taskd.clock``) and the database side (the ``taskd_clock`` schema) together, stopping at
every moment something falls due on the way (a wait's end, a retry, a delay, a ttl, a cron
fire time) and draining there, as if the time had passed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import anyio
import asyncpg
from pydantic import BaseModel

from taskd import clock
from taskd.app import Daemon
from taskd.client import Client
from taskd.config import Settings
from taskd.models import Attempt, LLMCallRecord, Run, RunLogLine, RunStatus, Step
from taskd.sdk.task import TaskDefinition
from taskd.store.database import create_pool
from taskd.testing.daemon import running_daemon
from taskd.webhook_rules import DELIVERY_QUEUE, DELIVERY_TASK

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_parts = _HEADER.split(resources.files("taskd.testing").joinpath("tester.sql").read_text())
SQL = {name: body.strip() for name, body in zip(_parts[1::2], _parts[2::2], strict=True)}

POLL = 0.01
"""How often ``drain`` looks whether the daemon is idle."""
MAX_STOPS = 10_000
"""The most moments ``advance`` stops at (a cron of every second over a year would be more)."""
_UNSET: Any = object()


class TesterError(AssertionError):
    """A tester's wait could not end: the run or the daemon cannot go on by itself."""

    __test__ = False  # not a test class, for pytest


@dataclass(frozen=True)
class RunResult:
    """A run as ``tester.run`` / ``tester.result`` return it: the client's ``Run`` (status,
    output, error, attempts, steps, metadata) with its stored log lines and LLM calls."""

    run: Run
    logs: list[RunLogLine] = field(default_factory=list)
    llm_calls: list[LLMCallRecord] = field(default_factory=list)

    @property
    def id(self) -> uuid.UUID:
        return self.run.id

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def output(self) -> Any:
        return self.run.output

    @property
    def error(self) -> dict[str, Any] | None:
        return self.run.error

    @property
    def attempts(self) -> list[Attempt]:
        """Its attempts, oldest first (``len(result.attempts)``: how many ran)."""
        return self.run.attempts

    @property
    def steps(self) -> list[Step]:
        return self.run.steps

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self.run.metadata

    @property
    def messages(self) -> list[str]:
        """Its stored ``ctx.log`` messages, in order."""
        return [line.message for line in self.logs]


class Tester:
    """A test database (``dsn``, with the virtual clock) and one in-process daemon on it.

    ``worker``: ``[worker]`` settings for the daemon (``concurrency=3``...); ``configure``
    changes any other setting. Use it through the ``taskd_tester`` fixture, or ``async with
    Tester(dsn) as tester:``.
    """

    __test__ = False  # not a test class, for pytest

    def __init__(
        self,
        dsn: str,
        *,
        tasks: Sequence[TaskDefinition[Any, Any]] = (),
        configure: Callable[[Settings], None] | None = None,
        **worker: Any,
    ) -> None:
        self.dsn = dsn
        self._tasks: list[TaskDefinition[Any, Any]] = list(tasks)
        self._configure: list[Callable[[Settings], None]] = [configure] if configure else []
        # every wait goes to the database (none sleeps in a slot); a drained run's lease
        # and a stopped daemon's drain come quickly
        self._worker = {"poll_interval": 0.05, "wait_threshold": 0.0, "shutdown_grace": 2.0}
        self._worker.update(worker)
        self._pool: asyncpg.Pool | None = None
        self._client: Client | None = None
        self._daemon: Daemon | None = None
        self._host: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None

    # life ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Tester:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, and let the clock skip: sleeps end when it is advanced."""
        self._pool = await create_pool(self.dsn, reset_session=False)
        self._client = Client(self._pool)
        clock.reset()
        clock.start_skipping()

    async def close(self) -> None:
        """Stop the daemon (drained), close the connections, back to real time."""
        try:
            await self._stop_daemon()
        finally:
            clock.reset()
            if self._pool is not None:
                await self._pool.close()
                self._pool = None

    @property
    def client(self) -> Client:
        """A client on the test database (``get_run``, ``list_runs``, ``complete_token``...)."""
        if self._client is None:
            raise RuntimeError("the tester is not open: use the taskd_tester fixture")
        return self._client

    @property
    def daemon(self) -> Daemon | None:
        """The daemon running now (None before the first task is served)."""
        return self._daemon

    def configure(self, change: Callable[[Settings], None]) -> None:
        """Change the daemon's settings (applied when it next starts)."""
        self._configure.append(change)

    async def serve(self, *tasks: TaskDefinition[Any, Any]) -> Daemon:
        """Make the daemon serve ``tasks`` too: started, or restarted if it served fewer."""
        missing = [t for t in tasks if all(t.id != known.id for known in self._tasks)]
        self._tasks.extend(missing)
        if self._daemon is not None and not missing:
            return self._daemon
        await self._stop_daemon()
        return await self._start_daemon()

    async def _start_daemon(self) -> Daemon:
        started: anyio.Event = anyio.Event()
        self._stop = stop = anyio.Event()
        failure: list[BaseException] = []

        def configure(settings: Settings) -> None:
            for change in self._configure:
                change(settings)

        async def host() -> None:
            # the daemon's task group lives in a task of its own: a test may start it and a
            # fixture's teardown stop it
            try:
                async with running_daemon(
                    self.dsn, list(self._tasks), configure, **self._worker
                ) as daemon:
                    self._daemon = daemon
                    started.set()
                    await stop.wait()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                self._daemon = None
                started.set()

        self._host = asyncio.get_running_loop().create_task(host())
        await started.wait()
        if self._daemon is None:
            await asyncio.gather(self._host, return_exceptions=True)
            raise TesterError(f"the daemon did not start: {failure[0] if failure else '?'}")
        return self._daemon

    async def _stop_daemon(self) -> None:
        if self._host is None:
            return
        host, self._host = self._host, None
        assert self._stop is not None
        self._stop.set()
        await host

    # triggering -------------------------------------------------------------------------

    async def trigger(
        self, task: str | TaskDefinition[Any, Any], payload: Any = None, **options: Any
    ) -> uuid.UUID:
        """``client.trigger`` (``delay=``, ``ttl=``, ``retry=``...); a task definition is
        served by the daemon from now on. Nothing runs until ``drain()`` (or a run's end)
        is awaited."""
        if isinstance(task, TaskDefinition):
            await self.serve(task)
        return await self.client.trigger(task, _json(payload), **options)

    async def send_event(self, name: str, payload: Any = None) -> uuid.UUID:
        """``client.send_event``: the runs of its subscribers are created now."""
        return await self.client.send_event(name, _json(payload))

    async def run(
        self, task: TaskDefinition[Any, Any], payload: Any = None, **options: Any
    ) -> RunResult:
        """Trigger ``task`` and return the run once it has ended, time skipped through its
        waits, delays and retry backoffs."""
        return await self.result(await self.trigger(task, payload, **options))

    async def result(self, run_id: uuid.UUID | str, *, skip_time: bool = True) -> RunResult:
        """The run once it has ended (``skip_time``: advancing the clock to each moment it
        waits for; without, only draining: it must end with what is due now)."""
        for _ in range(MAX_STOPS):
            await self.drain()
            run = await self.client.get_run(run_id)
            if run.status.terminal:
                return await self._result_of(run)
            next_at = await self._next_due() if skip_time else None
            if next_at is None:
                raise TesterError(
                    f"run {run.id} ({run.task_id}) is {run.status.value} and nothing it waits "
                    f"for falls due{'' if skip_time else ' now'} (a token to complete? "
                    "a task nobody serves?)"
                )
            await self._jump_to(next_at)
        raise TesterError(f"run {run_id} did not end after {MAX_STOPS} skips of the clock")

    async def _result_of(self, run: Run) -> RunResult:
        logs = await self.client.list_logs(run=run.id, limit=100_000)
        calls = await self.client.list_llm_calls(run.id)
        return RunResult(run, logs, calls)

    async def assert_triggered(
        self, task: str | TaskDefinition[Any, Any], payload: Any = _UNSET, *, count: int = 1
    ) -> list[Run]:
        """Assert that ``count`` runs of ``task`` (with ``payload``, when given: equal to the
        run's JSON payload) were triggered; return them, oldest first."""
        task_id = task if isinstance(task, str) else task.id
        runs = list(reversed(await self.client.list_runs(task=task_id, limit=10_000)))
        matching = runs
        if payload is not _UNSET:
            expected = _json(payload)
            matching = [run for run in runs if run.payload == expected]
        if len(matching) != count:
            wanted = "" if payload is _UNSET else f" with payload {_json(payload)!r}"
            seen = "; ".join(repr(run.payload) for run in runs[:5]) or "none"
            raise AssertionError(
                f"expected {count} run(s) of {task_id}{wanted}, found {len(matching)} "
                f"(payloads of its runs: {seen})"
            )
        return matching

    # time -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The virtual clock's time (the daemon's and the database's)."""
        return clock.now()

    async def drain(self, *, max_seconds: float = 30.0) -> None:
        """Return once the daemon is idle: woken what is due, fired the cron times due, expired
        what is past its ttl, and every run that is due executed and its outcome written.
        Runs sleeping in their slot until a later time count as idle. Raises TesterError
        after ``max_seconds`` (a run that never ends, a due run a paused queue holds)."""
        daemon = self._daemon
        if daemon is None:
            return
        deadline = time.monotonic() + max_seconds
        while True:
            moved = await self._chores(daemon)
            busy = await self._busy(daemon)
            if not moved and busy is None:
                return
            if daemon.claimer is not None:
                daemon.claimer.nudge()
            if time.monotonic() > deadline:
                raise TesterError(f"the daemon was not idle after {max_seconds:g} s: {busy}")
            await anyio.sleep(POLL)

    async def _chores(self, daemon: Daemon) -> bool:
        """What the daemon's chores do on their timers, done now; whether anything moved."""
        assert daemon.waker is not None and daemon.scheduler is not None
        assert daemon.expirer is not None
        woken = await daemon.waker.wake()
        fired = daemon.scheduler.fired
        await daemon.scheduler.tick()
        expired = await daemon.expirer.run_once()
        return bool(woken) or daemon.scheduler.fired != fired or expired > 0

    async def _busy(self, daemon: Daemon) -> str | None:
        """What keeps the daemon busy, or None when it is idle."""
        assert daemon.in_flight is not None and daemon.completer is not None
        now = clock.now()
        # runs asleep in their slot until later are idle; one whose time came is waking up
        sleeping = sum(1 for wake_at in clock.run_sleepers() if wake_at > now)
        if daemon.completer.busy:
            return "outcomes are being written"
        if daemon.in_flight.in_use > sleeping:
            return f"{daemon.in_flight.in_use - sleeping} attempt(s) executing"
        row = await self._pool_().fetchrow(SQL["busy"], self._task_ids())
        assert row is not None
        if row["executing"] > sleeping:
            return f"{row['executing'] - sleeping} run(s) executing"
        if row["due"]:
            return f"{row['due']} run(s) due and not claimed (a paused queue? a limit?)"
        return None

    async def advance(
        self,
        delta: timedelta | None = None,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> None:
        """Skip time: drain, then move the clock forward by ``delta`` (or the days, hours...
        given), stopping at each moment something falls due on the way and draining there.
        When it returns, everything due by the new time has run."""
        step = (delta or timedelta(0)) + timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds
        )
        if step < timedelta(0):
            raise ValueError(f"the clock only moves forward, not by {step}")
        await self.drain()
        target = clock.now() + step
        for _ in range(MAX_STOPS):
            next_at = await self._next_due()
            if next_at is None or next_at >= target:
                await self._jump_to(target)
                await self.drain()
                return
            await self._jump_to(next_at)
            await self.drain()
        raise TesterError(f"more than {MAX_STOPS} moments fell due in {step}: advance less")

    async def _next_due(self) -> datetime | None:
        """The earliest moment after now when something falls due by itself."""
        now = clock.now()
        candidates = [wake_at for wake_at in clock.run_sleepers() if wake_at > now]
        found = await self._pool_().fetchval(SQL["next_due"], self._task_ids())
        if found is not None:
            candidates.append(found)
        daemon = self._daemon
        if daemon is not None and daemon.scheduler is not None:
            fire = await daemon.scheduler.tick()
            if fire is not None and fire > now:
                candidates.append(fire)
        return min(candidates) if candidates else None

    async def _jump_to(self, moment: datetime) -> None:
        """The clock (this process's and the database's) to ``moment``, if it is ahead."""
        step = moment - clock.now()
        if step <= timedelta(0):
            return
        new_offset = clock.offset() + step
        daemon = self._daemon
        worker_id = daemon.worker_id if daemon is not None else uuid.UUID(int=0)
        await self._pool_().execute(SQL["shift_clock"], new_offset, step, worker_id)
        clock.advance_to(new_offset)
        if daemon is not None:
            if daemon.claimer is not None:
                daemon.claimer.nudge()
            if daemon.scheduler is not None:
                daemon.scheduler.changed()

    # helpers ------------------------------------------------------------------------------

    def _task_ids(self) -> list[str]:
        """The tasks whose runs the daemon claims: the test's, and taskd's own (``taskd.webhook``
        sends status webhooks: drain and advance follow its deliveries and their retries)."""
        ids = [task.id for task in self._tasks]
        daemon = self._daemon
        queues = daemon.settings.worker.queues if daemon is not None else None
        if daemon is not None and (not queues or DELIVERY_QUEUE in queues):
            ids.append(DELIVERY_TASK)
        return ids

    def _pool_(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the tester is not open: use the taskd_tester fixture")
        return self._pool


def _json(payload: Any) -> Any:
    """A payload as the run stores it: a pydantic model as its JSON form."""
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    return payload

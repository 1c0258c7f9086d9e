"""``taskd logs``: print stored ``ctx.log`` lines, and follow new ones from any machine.

Following LISTENs on ``taskd_logs`` (one NOTIFY per batch a daemon stores) and polls every
second as the backstop. Line ids come from one sequence but two daemons' batches may commit
out of id order, so each read looks back over the ids of the last few seconds and skips the
lines it already printed: a line committed late is printed late, not lost.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence

import anyio
import asyncpg

from taskd.client import Client
from taskd.config import DatabaseSettings
from taskd.models import RunLogLine
from taskd.store.database import DB_ERRORS, connect

LOG_CHANNEL = "taskd_logs"
LEVELS = ("debug", "info", "warning", "error")
POLL_INTERVAL = 1.0
LOOKBACK_SECONDS = 5.0
PAGE = 1000


def levels_from(minimum: str | None) -> list[str] | None:
    """The levels at or above ``minimum`` (None: every level)."""
    if minimum is None:
        return None
    name = minimum.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown level {minimum!r} (one of {', '.join(LEVELS)})")
    return list(LEVELS[LEVELS.index(name) :])


class LogTail:
    def __init__(
        self,
        client: Client,
        *,
        run: uuid.UUID | None = None,
        task: str | None = None,
        levels: Sequence[str] | None = None,
    ) -> None:
        self._client = client
        self._run = run
        self._task = task
        self._levels = levels
        self._printed: set[int] = set()
        # (monotonic time, highest id printed then): reads restart from the oldest mark
        # younger than the lookback
        self._marks: deque[tuple[float, int]] = deque()
        self._highest = 0

    async def backlog(self, emit: Callable[[RunLogLine], None], last: int | None) -> None:
        """Print what is stored now: a run's every line, or the newest ``last`` lines."""
        if self._run is not None and last is None:
            await self._read(emit)
            return
        lines = await self._client.list_logs(
            run=self._run,
            task=self._task,
            levels=self._levels,
            limit=100 if last is None else max(1, last),
            newest=True,
        )
        if last == 0:  # nothing old: follow from the newest line on
            self._highest = lines[-1].id if lines else 0
            return
        for line in lines:
            self._emit(line, emit)

    async def follow(
        self,
        emit: Callable[[RunLogLine], None],
        dsn: str,
        settings: DatabaseSettings,
        until_finished: bool,
    ) -> None:
        """Print new lines as they are stored, until cancelled; with ``until_finished`` (one
        run followed), return once that run has finished and its last lines are printed."""
        wake = anyio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        connection: asyncpg.Connection | None = None
        try:
            connection = await connect(dsn, settings)
            await connection.add_listener(LOG_CHANNEL, on_notify)
        except (OSError, asyncpg.PostgresError):
            connection = None  # polling alone still follows
        try:
            while True:
                try:
                    await self._read(emit)
                    if until_finished and self._run is not None:
                        run = await self._client.get_run(self._run)
                        if run.status.terminal:
                            await self._read(emit)  # lines stored before the outcome
                            return
                except DB_ERRORS as exc:  # a restart or a blip: keep following
                    print(f"taskd: database unavailable, retrying: {exc}", file=sys.stderr)
                with anyio.move_on_after(POLL_INTERVAL):
                    await wake.wait()
                wake = anyio.Event()
        finally:
            if connection is not None:
                with anyio.CancelScope(shield=True):
                    await connection.close()

    async def _read(self, emit: Callable[[RunLogLine], None]) -> None:
        now = time.monotonic()
        while self._marks and now - self._marks[0][0] > LOOKBACK_SECONDS:
            self._marks.popleft()
        after = self._marks[0][1] if self._marks else self._highest
        self._marks.append((now, self._highest))
        while True:
            lines = await self._client.list_logs(
                run=self._run, task=self._task, levels=self._levels, after=after, limit=PAGE
            )
            for line in lines:
                self._emit(line, emit)
            if len(lines) < PAGE:
                break
            after = lines[-1].id
        floor = self._marks[0][1]
        self._printed = {i for i in self._printed if i > floor}

    def _emit(self, line: RunLogLine, emit: Callable[[RunLogLine], None]) -> None:
        if line.id in self._printed:
            return
        self._printed.add(line.id)
        self._highest = max(self._highest, line.id)
        emit(line)

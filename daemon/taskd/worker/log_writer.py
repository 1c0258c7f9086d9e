"""Stores ``ctx.log`` lines with their runs: buffered, written in batches, one NOTIFY each.

One write in flight at a time, so lines batch themselves under load. The buffer is bounded:
past ``max_pending`` lines (the database away for long), new lines are counted as dropped and
still reach stdout. The completer calls ``flush`` before writing outcomes, so a run's lines
are stored by the time it is seen finished.
"""

from __future__ import annotations

import logging

import anyio

from taskd.models import LogLine
from taskd.store.database import DB_ERRORS, refuses_data
from taskd.store.store import Store
from taskd.telemetry import Telemetry

log = logging.getLogger("taskd.logs")

MAX_BATCH = 500
MAX_PENDING_BYTES = 32 * 1024 * 1024
_MAX_BACKOFF = 5.0


class RunLogWriter:
    def __init__(
        self, store: Store, telemetry: Telemetry | None = None, *, max_pending: int = 20_000
    ) -> None:
        self._store = store
        self._telemetry = telemetry or Telemetry()
        self._max_pending = max_pending
        self._pending: list[LogLine] = []
        self._pending_bytes = 0
        self._lines_came = anyio.Event()
        self._lock = anyio.Lock()
        self._failures = 0
        self.dropped = 0
        self.written = 0

    def add(self, line: LogLine) -> None:
        size = _size(line)
        if (
            len(self._pending) >= self._max_pending
            or self._pending_bytes + size > MAX_PENDING_BYTES
        ):
            self.dropped += 1
            self._telemetry.log_lines_dropped(1)
            return
        self._pending.append(line)
        self._pending_bytes += size
        self._lines_came.set()

    async def run(self) -> None:
        while True:
            await self._lines_came.wait()
            self._lines_came = anyio.Event()
            if not await self.flush():
                self._failures += 1
                await anyio.sleep(min(_MAX_BACKOFF, 0.1 * 2**self._failures))
                self._lines_came.set()
            else:
                self._failures = 0

    async def flush(self, *, only_current: bool = False) -> bool:
        """Write every buffered line; False when the database could not take them (they are
        kept for the next try). ``only_current``: stop after the lines buffered when the call
        began (the completer's flush, which must end even while tasks keep logging)."""
        async with self._lock:
            left = len(self._pending) if only_current else None
            while self._pending and (left is None or left > 0):
                size = min(MAX_BATCH, left) if left is not None else MAX_BATCH
                batch, self._pending = self._pending[:size], self._pending[size:]
                self._pending_bytes -= sum(map(_size, batch))
                if left is not None:
                    left -= len(batch)
                try:
                    await self._store.logs.insert_many(batch)
                except DB_ERRORS as exc:
                    self._telemetry.db_error("run_logs")
                    if refuses_data(exc):
                        # One line the database refuses must not cost the others (of any run)
                        # theirs: the batch is written again line by line.
                        if not await self._write_one_by_one(batch, exc):
                            return False
                        continue
                    self._pending[:0] = batch
                    self._pending_bytes += sum(map(_size, batch))
                    log.warning("storing %d run log line(s) failed: %s", len(batch), exc)
                    return False
                self.written += len(batch)
        return True

    async def _write_one_by_one(self, batch: list[LogLine], refusal: BaseException) -> bool:
        if len(batch) == 1:
            log.error("a run log line was refused by the database: %s", refusal)
            self.dropped += 1
            self._telemetry.log_lines_dropped(1)
            return True
        for index, line in enumerate(batch):
            try:
                await self._store.logs.insert_many([line])
            except DB_ERRORS as exc:
                if not refuses_data(exc):
                    self._pending[:0] = batch[index:]
                    self._pending_bytes += sum(map(_size, batch[index:]))
                    log.warning("storing %d run log line(s) failed: %s", len(batch) - index, exc)
                    return False
                log.error("a run log line was refused by the database: %s", exc)
                self.dropped += 1
                self._telemetry.log_lines_dropped(1)
                continue
            self.written += 1
        return True


def _size(line: LogLine) -> int:
    return len(line.message) + (len(line.fields) if line.fields is not None else 0) + 100

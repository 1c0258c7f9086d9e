"""Rows written off the run's hot path: buffered, inserted in batches, one write at a time.

One write in flight at a time, so rows batch themselves under load. The buffer is bounded:
past ``max_pending`` rows (the database away for long) new rows are counted as dropped. The
completer calls ``flush`` before writing outcomes, so a run's rows are stored by the time it is
seen finished. A batch the database refuses is written again row by row, so that one bad row
does not cost the others theirs.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

import anyio

from taskd.store.database import DB_ERRORS, refuses_data

log = logging.getLogger("taskd.logs")

T = TypeVar("T")

MAX_BATCH = 500
MAX_PENDING_BYTES = 32 * 1024 * 1024
_MAX_BACKOFF = 5.0


class BatchWriter(ABC, Generic[T]):
    what = "row"
    """What a row is, in the daemon's log lines ("run log line")."""

    def __init__(self, *, max_pending: int = 20_000) -> None:
        self._max_pending = max_pending
        self._pending: list[T] = []
        self._pending_bytes = 0
        self._rows_came = anyio.Event()
        self._lock = anyio.Lock()
        self._failures = 0
        self.dropped = 0
        self.written = 0

    @abstractmethod
    async def insert(self, rows: Sequence[T]) -> None:
        """Write ``rows`` in one statement."""

    @abstractmethod
    def size(self, row: T) -> int:
        """About how many bytes ``row`` holds in the buffer."""

    def on_dropped(self, count: int) -> None:
        """``count`` rows could not be stored."""

    def on_failed(self) -> None:
        """A write failed (the rows are kept for the next try)."""

    def add(self, row: T) -> None:
        size = self.size(row)
        if (
            len(self._pending) >= self._max_pending
            or self._pending_bytes + size > MAX_PENDING_BYTES
        ):
            self._drop(1)
            return
        self._pending.append(row)
        self._pending_bytes += size
        self._rows_came.set()

    async def run(self) -> None:
        while True:
            await self._rows_came.wait()
            self._rows_came = anyio.Event()
            if not await self.flush():
                self._failures += 1
                await anyio.sleep(min(_MAX_BACKOFF, 0.1 * 2**self._failures))
                self._rows_came.set()
            else:
                self._failures = 0

    async def flush(self, *, only_current: bool = False) -> bool:
        """Write every buffered row; False when the database could not take them (they are
        kept for the next try). ``only_current``: stop after the rows buffered when the call
        began (the completer's flush, which must end even while tasks keep adding)."""
        async with self._lock:
            left = len(self._pending) if only_current else None
            while self._pending and (left is None or left > 0):
                count = min(MAX_BATCH, left) if left is not None else MAX_BATCH
                batch, self._pending = self._pending[:count], self._pending[count:]
                self._pending_bytes -= sum(map(self.size, batch))
                if left is not None:
                    left -= len(batch)
                try:
                    await self.insert(batch)
                except DB_ERRORS as exc:
                    self.on_failed()
                    if refuses_data(exc):
                        if not await self._write_one_by_one(batch, exc):
                            return False
                        continue
                    self._keep(batch)
                    log.warning("storing %d %s(s) failed: %s", len(batch), self.what, exc)
                    return False
                self.written += len(batch)
        return True

    def _keep(self, rows: list[T]) -> None:
        self._pending[:0] = rows
        self._pending_bytes += sum(map(self.size, rows))

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.on_dropped(count)

    async def _write_one_by_one(self, batch: list[T], refusal: BaseException) -> bool:
        if len(batch) == 1:
            log.error("a %s was refused by the database: %s", self.what, refusal)
            self._drop(1)
            return True
        for index, row in enumerate(batch):
            try:
                await self.insert([row])
            except DB_ERRORS as exc:
                if not refuses_data(exc):
                    self._keep(batch[index:])
                    log.warning("storing %d %s(s) failed: %s", len(batch) - index, self.what, exc)
                    return False
                log.error("a %s was refused by the database: %s", self.what, exc)
                self._drop(1)
                continue
            self.written += 1
        return True

"""Stores ``ctx.log`` lines with their runs: in batches (see batch_writer), one NOTIFY each.

Past the buffer's bound, new lines are counted as dropped and still reach stdout.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskd.models import LogLine
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.batch_writer import BatchWriter


class RunLogWriter(BatchWriter[LogLine]):
    what = "run log line"

    def __init__(
        self, store: Store, telemetry: Telemetry | None = None, *, max_pending: int = 20_000
    ) -> None:
        super().__init__(max_pending=max_pending)
        self._store = store
        self._telemetry = telemetry or Telemetry()

    async def insert(self, rows: Sequence[LogLine]) -> None:
        await self._store.logs.insert_many(rows)

    def size(self, row: LogLine) -> int:
        return len(row.message) + (len(row.fields) if row.fields is not None else 0) + 100

    def on_dropped(self, count: int) -> None:
        self._telemetry.log_lines_dropped(count)

    def on_failed(self) -> None:
        self._telemetry.db_error("run_logs")

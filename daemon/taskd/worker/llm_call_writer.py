"""Stores the records of LLM calls (``taskd.llm_calls``) in batches (see batch_writer), and
counts their tokens and cost for ``/metrics`` once they are stored."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taskd.models import LLMCall
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.batch_writer import BatchWriter

log = logging.getLogger("taskd.llm")


class LLMCallWriter(BatchWriter[LLMCall]):
    what = "LLM call record"

    def __init__(
        self, store: Store, telemetry: Telemetry | None = None, *, max_pending: int = 100_000
    ) -> None:
        super().__init__(max_pending=max_pending)
        self._store = store
        self._telemetry = telemetry or Telemetry()

    async def insert(self, rows: Sequence[LLMCall]) -> None:
        await self._store.llm.insert_calls(rows)
        self._telemetry.llm_calls(rows)

    def size(self, row: LLMCall) -> int:
        return 300 + len(row.error or "") + sum(map(len, row.tags))

    def on_dropped(self, count: int) -> None:
        log.error("%d LLM call record(s) dropped: the buffer is full (database away?)", count)

    def on_failed(self) -> None:
        self._telemetry.db_error("llm_calls")

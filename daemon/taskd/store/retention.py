"""Retention: deleting what is past its time, one small batch per statement, skipping
locked rows (the pruner's verbs), and the table statistics that show the bloat left."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from taskd.ids import uuid_at
from taskd.store.queries import load

SQL = load("retention")


class RetentionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def prune_runs(
        self, finished_before: datetime, batch: int, after: uuid.UUID | None = None
    ) -> tuple[int, uuid.UUID | None]:
        """Delete the prunable runs among the next ``batch`` runs (by id) after ``after`` (None
        to start a pass) made before the cutoff; how many were deleted, and the last id looked
        at, to pass to the next batch (None once the pass has reached the cutoff)."""
        row = await self.pool.fetchrow(
            SQL["prune_runs"], uuid_at(finished_before), finished_before, batch, after
        )
        assert row is not None
        return int(row["deleted"]), row["last"]

    async def prune_events(self, created_before: datetime, batch: int) -> int:
        return _count(
            await self.pool.execute(
                SQL["prune_events"], created_before, batch, uuid_at(created_before)
            )
        )

    async def prune_llm_calls(self, started_before: datetime, batch: int) -> int:
        """Delete one batch of LLM call records started before the cutoff; how many."""
        return _count(await self.pool.execute(SQL["prune_llm_calls"], started_before, batch))

    async def prune_idempotency_keys(self, batch: int) -> int:
        return _count(await self.pool.execute(SQL["prune_idempotency_keys"], batch))

    async def prune_failure_hooks(self, limit: int) -> int:
        return _count(await self.pool.execute(SQL["prune_failure_hooks"], limit))

    async def prune_workers(self, stopped_before: datetime) -> int:
        count: int = await self.pool.fetchval(SQL["prune_workers"], stopped_before)
        return count

    async def table_stats(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(SQL["table_stats"])]


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])

"""LLM calls: their records (``taskd.llm_calls``), the per-model backoffs every daemon honours
(``taskd.llm_backoffs``) and the runs waiting for the API (``taskd.llm_deferrals``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from taskd.models import LLMCall, LLMDeferral, LLMGate
from taskd.store.queries import load

SQL = load("llm")


class LLMStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert_calls(self, calls: Sequence[LLMCall]) -> None:
        await self.pool.execute(
            SQL["insert_calls"],
            [c.run_id for c in calls],
            [c.task_id for c in calls],
            [c.attempt for c in calls],
            [c.step for c in calls],
            [c.queue for c in calls],
            [c.concurrency_key for c in calls],
            [orjson.dumps(c.tags).decode() for c in calls],
            [c.model for c in calls],
            [c.kind for c in calls],
            [c.outcome for c in calls],
            [c.input_tokens for c in calls],
            [c.output_tokens for c in calls],
            [c.cache_write_tokens for c in calls],
            [c.cache_read_tokens for c in calls],
            [c.cost_usd for c in calls],
            [c.latency_ms for c in calls],
            [c.stop_reason for c in calls],
            [c.request_id for c in calls],
            [c.error for c in calls],
            [c.started_at for c in calls],
        )

    async def gate(self, model: str, run_id: uuid.UUID | None) -> LLMGate:
        row = await self.pool.fetchrow(SQL["gate"], model, run_id)
        assert row is not None
        return LLMGate(
            row["now"],
            row["until"],
            row["reason"],
            row["overloads"] or 0,
            row["since"],
            row["deferrals"] or 0,
        )

    async def defer_run(self, run_id: uuid.UUID, reason: str) -> LLMDeferral:
        row = await self.pool.fetchrow(SQL["defer_run"], run_id, reason)
        assert row is not None
        return LLMDeferral(row["since"], row["deferrals"], row["now"])

    async def count_overload(self, model: str, reason: str) -> int:
        overloads: int = await self.pool.fetchval(SQL["count_overload"], model, reason)
        return overloads

    async def back_off(self, model: str, until: datetime, reason: str) -> datetime:
        held: datetime = await self.pool.fetchval(SQL["back_off"], model, until, reason)
        return held

    async def recovered(self, model: str, run_id: uuid.UUID | None) -> None:
        await self.pool.execute(SQL["recovered"], model, run_id)

    async def backoffs(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(SQL["backoffs"])]

"""LLM calls: their records (``taskd.llm_calls``), the per-model backoffs every daemon honours
(``taskd.llm_backoffs``) and the runs waiting for the API (``taskd.llm_deferrals``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from taskd.models import (
    CostDimension,
    CostRow,
    Costs,
    CostSums,
    LLMBackoff,
    LLMCall,
    LLMCallRecord,
    LLMDeferral,
    LLMGate,
)
from taskd.store.queries import load

SQL = load("llm")

# What each dimension of a cost report groups by (fixed expressions, never user input).
_GROUPS: dict[str, str] = {
    "task": "c.task_id",
    "tag": "t.tag",
    "key": "c.concurrency_key",
    "model": "c.model",
    "run": "c.run_id::text",
}
_TAG_JOIN = "LEFT JOIN LATERAL unnest(c.tags) AS t (tag) ON true"

# The dimensions of taskd.llm_costs_daily (0016_llm_costs_daily.sql).
DAILY_DIMENSIONS = ("task", "tag", "key", "model")
MAX_COST_DAYS = 400
"""The most days a daily cost report covers ([retention] llm_calls keeps 400 days)."""


@dataclass(frozen=True, slots=True)
class CallFilter:
    """The calls a cost report sums: every filter given (None: any)."""

    since: datetime | None = None
    until: datetime | None = None
    task_id: str | None = None
    concurrency_key: str | None = None
    tag: str | None = None
    model: str | None = None
    run_id: uuid.UUID | None = None


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

    async def gate(
        self, model: str, run_id: uuid.UUID | None, queue: str = "", attempt: int = 0
    ) -> LLMGate:
        """The key's backoff, the run's wait for that key in ``attempt``, the queue's limits."""
        row = await self.pool.fetchrow(SQL["gate"], model, run_id, queue, attempt)
        assert row is not None
        return LLMGate(
            row["now"],
            row["until"],
            row["reason"],
            row["overloads"] or 0,
            row["since"],
            row["deferrals"] or 0,
            row["queue_limits"],
        )

    async def defer_run(
        self,
        run_id: uuid.UUID,
        reason: str,
        key: str,
        attempt: int,
        request: uuid.UUID | None = None,
    ) -> LLMDeferral:
        """The run waits for ``key`` in ``attempt`` (``request``: the client's id of this
        deferral, counted once however often it is asked)."""
        row = await self.pool.fetchrow(SQL["defer_run"], run_id, reason, key, attempt, request)
        assert row is not None
        return LLMDeferral(row["since"], row["deferrals"], row["now"])

    async def count_overload(
        self, model: str, reason: str, least_wait: float, most_wait: float
    ) -> int:
        """One more overload in the model's streak, if the answer arrived after its backoff
        window ended (``least_wait``: the shortest wait of the streak's first step, doubled
        per step up to ``most_wait``, held at once); the streak's length."""
        overloads: int = await self.pool.fetchval(
            SQL["count_overload"], model, reason, least_wait, most_wait
        )
        return overloads

    async def back_off(self, model: str, until: datetime, reason: str) -> datetime:
        held: datetime = await self.pool.fetchval(SQL["back_off"], model, until, reason)
        return held

    async def recovered(self, model: str, run_id: uuid.UUID | None) -> None:
        await self.pool.execute(SQL["recovered"], model, run_id)

    async def backoffs(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(SQL["backoffs"])]

    # reads: what calls cost ----------------------------------------------------------------

    async def costs(self, by: CostDimension | None, where: CallFilter, limit: int) -> Costs:
        """The sums of the calls ``where`` matches, per ``by`` (largest cost first, at most
        ``limit`` groups) and in total; each a statement of its own, with only the
        conditions given (each combination gets its own plan)."""
        conditions: list[str] = []
        args: list[Any] = []

        def match(condition: str, value: Any) -> None:
            args.append(value)
            conditions.append(condition.replace("$?", f"${len(args)}"))

        if where.since is not None:
            match("c.started_at >= $?", where.since)
        if where.until is not None:
            match("c.started_at < $?", where.until)
        if where.task_id is not None:
            match("c.task_id = $?", where.task_id)
        if where.concurrency_key is not None:
            match("c.concurrency_key = $?", where.concurrency_key)
        if where.tag is not None:
            match("c.tags @> ARRAY[$?::text]", where.tag)
        if where.model is not None:
            match("c.model = $?", where.model)
        if where.run_id is not None:
            match("c.run_id = $?", where.run_id)

        def statement(group: str | None) -> str:
            base = (
                SQL["costs"]
                .replace("GROUP_NAME", _GROUPS[group] if group else "NULL::text")
                .replace("TAG_JOIN", _TAG_JOIN if group == "tag" else "")
            )
            return "\n   AND ".join([base, *conditions])

        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            # one snapshot: the rows and the total sum the same calls
            total_row = await connection.fetchrow(statement(None), *args)
            assert total_row is not None
            rows: list[asyncpg.Record] = []
            if by is not None:
                grouped = (
                    statement(by)
                    + "\n GROUP BY 1\n ORDER BY cost_usd DESC, calls DESC, name NULLS LAST"
                    + f"\n LIMIT ${len(args) + 1}"
                )
                rows = await connection.fetch(grouped, *args, limit + 1)
        total = dict(total_row)
        del total["name"]
        return Costs(
            by=by,
            since=where.since,
            until=where.until,
            rows=[CostRow(**dict(row)) for row in rows[:limit]],
            truncated=len(rows) > limit,
            total=CostSums(**total),
        )

    async def daily_costs(
        self, days: int, by: str, top: int
    ) -> tuple[list[dict[str, Any]], Decimal]:
        """Sums per UTC day (the last ``days``, today included) and group of ``by`` (task,
        tag, key, model); the ``top`` groups of the range by cost, the rest summed per day
        with group None. Rows: day, grp, calls, input_tokens, output_tokens, cost_usd, others
        (how many groups were summed as None); and the range's total dollars (each call
        once), from the same snapshot."""
        statement = SQL["daily_costs_tags" if by == "tag" else "daily_costs"]
        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await connection.fetch(statement, by, days, top)
            total: Decimal = await connection.fetchval(SQL["daily_total"], days)
        return [dict(row) for row in rows], total

    async def run_calls(self, run_id: uuid.UUID, limit: int) -> list[LLMCallRecord]:
        """The run's calls, oldest first, at most ``limit``."""
        rows = await self.pool.fetch(SQL["run_calls"], run_id, limit)
        return [LLMCallRecord(**dict(row)) for row in rows]

    async def backoff_list(self) -> list[LLMBackoff]:
        """The models no daemon calls before their ``until`` (typed ``backoffs``)."""
        return [LLMBackoff(**row) for row in await self.backoffs()]

"""LLM calls: their records (``taskd.llm_calls``), the per-model backoffs every daemon honours
(``taskd.llm_backoffs``) and the runs waiting for the API (``taskd.llm_deferrals``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
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
        ``limit`` groups) and in total: from the daily sums where they give the same answer
        (``costs_of_days``), else from every call (``costs_scan``)."""
        fast = await self.costs_of_days(by, where, limit)
        return fast if fast is not None else await self.costs_scan(by, where, limit)

    async def costs_scan(self, by: CostDimension | None, where: CallFilter, limit: int) -> Costs:
        """``costs`` summed from every call ``where`` matches; each a statement of its own,
        with only the conditions given (each combination gets its own plan)."""
        conditions: list[str] = []
        args: list[Any] = []
        _call_conditions(where, conditions, args)

        def statement(group: str | None) -> str:
            return "\n   AND ".join([_calls_statement(SQL["costs"], group), *conditions])

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
        return _costs(by, where, limit, total_row, rows)

    async def costs_of_days(
        self, by: CostDimension | None, where: CallFilter, limit: int
    ) -> Costs | None:
        """``costs`` from the daily sums (taskd.llm_costs_daily) of the whole UTC days of the
        range and the calls of the partial days at its ends, the same answer as
        ``costs_scan``; None where the daily sums cannot give it: by run, a filter on run or
        tag, on two dimensions or on another than ``by``, a range without a whole UTC day, or by
        key / tag when a call of its whole days has the key '' / the tag '' (counted there
        with the calls without one)."""
        plan = _daily_plan(by, where)
        if plan is None:
            return None
        dimension, value = plan
        since = _utc(where.since) if where.since is not None else None
        until = _utc(where.until) if where.until is not None else None
        try:
            first = _day_at_or_after(since) if since is not None else None
        except OverflowError:  # since on 9999-12-31: no day after it
            return None
        end = until.date() if until is not None else None
        if first is not None and end is not None and first >= end:
            return None  # no whole day: the calls are few
        start_at = _midnight(first) if first is not None else None
        end_at = _midnight(end) if end is not None else None
        # the calls of the partial days: [since, first day), [end day, until)
        edges: list[tuple[datetime, datetime]] = []
        if since is not None and start_at is not None and since < start_at:
            edges.append((since, start_at))
        if until is not None and end_at is not None and end_at < until:
            edges.append((end_at, until))

        def statement(group: str | None, args: list[Any]) -> str:
            # by none, the total: every call's rows, or the filtered group's
            args.append(group or (dimension if value is not None else "all"))
            daily = ["d.dimension = $1"]
            if first is not None:
                args.append(first)
                daily.append(f"d.day >= ${len(args)}")
            if end is not None:
                args.append(end)
                daily.append(f"d.day < ${len(args)}")
            if value is not None:
                args.append(value)
                daily.append(f"d.grp = ${len(args)}")
            parts = []
            for edge_since, edge_until in edges:
                conditions: list[str] = []
                _call_conditions(
                    CallFilter(
                        since=edge_since,
                        until=edge_until,
                        task_id=where.task_id,
                        concurrency_key=where.concurrency_key,
                        model=where.model,
                    ),
                    conditions,
                    args,
                )
                calls = "\n   AND ".join(
                    [_calls_statement(SQL["costs_of_calls"], group), *conditions]
                )
                parts.append(f"UNION ALL\n({calls}\n GROUP BY 1)")
            return (
                SQL["costs_of_days"]
                .replace(
                    "DAILY_NAME",
                    "nullif(d.grp, '')"
                    if group in ("key", "tag")
                    else ("d.grp" if group else "NULL::text"),
                )
                .replace("REPORT_NAME", "parts.name" if group else "NULL::text")
                .replace("DAILY_WHERE", " AND ".join(daily))
                .replace("PARTS", "\n".join(parts))
            )

        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            if by in ("key", "tag") and value is None:
                empty = SQL["calls_keyed_empty" if by == "key" else "calls_tagged_empty"]
                if await connection.fetchval(empty, start_at, end_at):
                    return None
            total_args: list[Any] = []
            total_row = await connection.fetchrow(statement(None, total_args), *total_args)
            rows: list[asyncpg.Record] = []
            if by is not None:
                args: list[Any] = []
                grouped = (
                    statement(by, args)
                    + "\n GROUP BY 1\n ORDER BY cost_usd DESC, calls DESC, name NULLS LAST"
                )
                args.append(limit + 1)
                rows = await connection.fetch(grouped + f"\n LIMIT ${len(args)}", *args)
        return _costs(by, where, limit, total_row, rows)

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


def _call_conditions(where: CallFilter, conditions: list[str], args: list[Any]) -> None:
    """One condition on taskd.llm_calls c per filter given, its value appended to ``args``."""

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


def _calls_statement(template: str, group: str | None) -> str:
    return template.replace("GROUP_NAME", _GROUPS[group] if group else "NULL::text").replace(
        "TAG_JOIN", _TAG_JOIN if group == "tag" else ""
    )


def _daily_plan(by: CostDimension | None, where: CallFilter) -> tuple[str, str | None] | None:
    """The daily rows a report reads (dimension, group: None for all of them), if they give
    its answer: by task, key, model, tag or none, with no filter or one on the dimension
    ``by`` groups by (by none: on task, key or model). A filter on a tag keeps the calls
    having it (by tag, with all their tags; a call with the tag twice once): the scan's."""
    if by == "run" or where.run_id is not None or where.tag is not None:
        return None
    given = [
        (dimension, value)
        for dimension, value in (
            ("task", where.task_id),
            ("key", where.concurrency_key),
            ("model", where.model),
        )
        if value is not None
    ]
    if not given:
        return ("all" if by is None else by), None
    if len(given) > 1:
        return None
    [(dimension, value)] = given
    if by is not None and by != dimension:
        return None
    if dimension == "key" and value == "":
        return None  # the daily rows of key '' are the calls without a key
    return dimension, value


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive: UTC, as asyncpg sends it to a timestamptz)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _day_at_or_after(moment: datetime) -> date:
    """The first UTC day starting at or after ``moment`` (in UTC)."""
    day = moment.date()
    return day if moment == _midnight(day) else day + timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _costs(
    by: CostDimension | None,
    where: CallFilter,
    limit: int,
    total_row: asyncpg.Record | None,
    rows: list[asyncpg.Record],
) -> Costs:
    assert total_row is not None
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

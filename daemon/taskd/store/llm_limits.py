"""The LLM call limits and budgets of queues, held across daemons (``taskd.llm_admissions``).

A call asks admission with its estimate (input and output tokens, dollars): under a per-queue
transaction advisory lock, the estimate is checked against what the queue's admissions
reserved or used over each sliding window (tokens, requests; the concurrency key's dollars);
admitted, it is stored as a reservation, trued up with the call's real usage after it.

A Message Batch is admitted the same way against the budget only (``batch_requests``): the
Message Batches API's rate limits are its own, apart from the Messages API's that the token and
request limits keep within, so a batch neither waits for nor counts toward those windows. Its
reservation is trued up when the batch ends (``llm_batches.finish``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from taskd.models import LLMAdmission
from taskd.store.queries import load

SQL = load("llm_limits")

# the call limits, and what each admission counts toward them
CALL_LIMITS = ("tokens", "input_tokens", "output_tokens", "requests")


def _amounts(input: int, output: int, requests: int) -> dict[str, int]:
    return {
        "tokens": input + output,
        "input_tokens": input,
        "output_tokens": output,
        "requests": requests,
    }


def _dollars(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001')).normalize():f}"


class LLMLimitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def queue_budgets(self, keys: int) -> list[dict[str, Any]]:
        """Every queue budget (name, limit_usd, period, on_exceed, window_start), once per
        concurrency key that spent in its window now (concurrency_key, spent: most first, at
        most ``keys`` per queue), or once with both None when nothing spent."""
        return [dict(row) for row in await self.pool.fetch(SQL["queue_budgets"], keys)]

    async def task_budgets(self) -> list[dict[str, Any]]:
        """Every task registered with ``budget_usd``: id, limit_usd, spent (the most one of
        its unfinished runs has spent)."""
        return [dict(row) for row in await self.pool.fetch(SQL["task_budgets"])]

    async def limits(self, queue: str) -> dict[str, Any] | None:
        """The queue's LLM call limits and budget (``Queue.llm_limits``), or None."""
        limits: dict[str, Any] | None = await self.pool.fetchval(SQL["limits"], queue)
        return limits

    async def admit(
        self,
        queue: str,
        key: str,
        run_id: uuid.UUID | None,
        input: int,
        output: int,
        cost: Decimal | None,
        *,
        batch_requests: int | None = None,
        request: uuid.UUID | None = None,
        again: bool = False,
    ) -> LLMAdmission:
        """Admit a call estimated at ``input`` + ``output`` tokens and ``cost`` dollars (None:
        no price known) under the queue's limits and the budget of concurrency key ``key``
        ('' for runs without one), or say when the windows have room, or that the budget is
        exceeded. A window holding nothing admits any call (one call's overshoot).

        ``batch_requests``: a Message Batch of that many requests (the sums of their
        estimates), admitted under the budget alone (the token and request limits do not apply
        to batches, nor count them); a queue without a budget admits it unrecorded.

        ``request``: the client's id of this admission; ``again``: it is asked again (its
        first answer lost with the connection, say): the admission it made, if it was made,
        is returned as it was, not reserved twice."""
        # read committed, said: each statement after the lock sees what the admissions before
        # it committed (a snapshot taken before the lock was granted would not)
        async with (
            self.pool.acquire() as connection,
            connection.transaction(isolation="read_committed"),
        ):
            await connection.execute(SQL["lock"], queue)
            if again and request is not None:
                made = await connection.fetchrow(SQL["admitted"], request)
                if made is not None:
                    return LLMAdmission(
                        made["admitted_at"], True, id=made["id"], admitted_at=made["admitted_at"]
                    )
            row = await connection.fetchrow(SQL["limits_now"], queue)
            assert row is not None
            now: datetime = row["now"]
            limits: dict[str, Any] = row["llm_limits"] or {}
            calls, budget = limits.get("calls"), limits.get("budget")
            if batch_requests is not None:
                calls = None  # the Batches API's rate limits are not the Messages API's
            if not calls and not budget:
                return LLMAdmission(now, True)
            retry_at: datetime | None = None
            reasons: list[str] = []
            if budget:
                what = "call" if batch_requests is None else "batch"
                verdict = await self._budget(connection, queue, key, now, budget, cost, what)
                if isinstance(verdict, LLMAdmission):
                    return verdict
                if verdict is not None:
                    retry_at, reason = verdict
                    reasons.append(reason)
            if calls:
                waited = await self._calls(connection, queue, now, calls, input, output)
                if waited is not None:
                    at, reason = waited
                    retry_at = at if retry_at is None else max(retry_at, at)
                    reasons.append(reason)
            if retry_at is not None:
                return LLMAdmission(now, False, retry_at=retry_at, reason="; ".join(reasons))
            if batch_requests is not None:
                admission_id: int = await connection.fetchval(
                    SQL["admit_batch"],
                    queue,
                    key,
                    run_id,
                    now,
                    input,
                    output,
                    batch_requests,
                    cost or Decimal(0),
                    request,
                )
            else:
                admission_id = await connection.fetchval(
                    SQL["admit"],
                    queue,
                    key,
                    run_id,
                    now,
                    input,
                    output,
                    cost or Decimal(0),
                    request,
                )
            return LLMAdmission(now, True, id=admission_id, admitted_at=now)

    async def _budget(
        self,
        connection: asyncpg.Connection,
        queue: str,
        key: str,
        now: datetime,
        budget: dict[str, Any],
        cost: Decimal | None,
        what: str,
    ) -> LLMAdmission | tuple[datetime, str] | None:
        """None: within the budget; a (time, reason): wait until then; an LLMAdmission: the
        budget is exceeded and the call fails."""
        tenant = f"concurrency key {key!r}" if key else "runs without a concurrency key"
        usd, period = Decimal(str(budget["usd"])), timedelta(seconds=budget["period"])
        if cost is None:
            return LLMAdmission(
                now,
                False,
                exceeded=True,
                reason=f"queue {queue!r} has a budget but the model has no price in "
                "[llm] prices: its cost cannot be kept within it",
            )
        since = now - period
        spent: Decimal = await connection.fetchval(SQL["key_spend"], queue, key, since)
        if spent + cost <= usd:
            return None
        reason = (
            f"the budget of {tenant} on queue {queue!r} is {_dollars(usd)} per "
            f"{period.total_seconds():g}s: {_dollars(spent)} spent, this {what}'s estimate "
            f"{_dollars(cost)} would pass it"
        )
        if budget.get("on_exceed") != "wait" or cost > usd:
            return LLMAdmission(now, False, exceeded=True, reason=reason)
        left, at = spent, now + period
        for row in await connection.fetch(SQL["key_rows"], queue, key, since):
            left -= row["cost"]
            if left + cost <= usd:
                at = row["admitted_at"] + period
                break
        return at, reason

    async def _calls(
        self,
        connection: asyncpg.Connection,
        queue: str,
        now: datetime,
        calls: dict[str, Any],
        input: int,
        output: int,
    ) -> tuple[datetime, str] | None:
        """None: the call fits every limit; else when it will and why not now."""
        period = timedelta(seconds=calls["period"])
        since = now - period
        sums = await connection.fetchrow(SQL["window_sums"], queue, since)
        assert sums is not None
        used = _amounts(sums["input"], sums["output"], sums["requests"])
        wanted = _amounts(input, output, 1)
        over = [
            name
            for name in CALL_LIMITS
            if name in calls and used[name] > 0 and used[name] + wanted[name] > calls[name]
        ]
        if not over:
            return None
        rows = await connection.fetch(SQL["window_rows"], queue, since)
        retry_at = now
        for name in over:
            left, at = used[name], now + period
            for row in rows:
                left -= _amounts(row["input"], row["output"], row["requests"])[name]
                if left <= 0 or left + wanted[name] <= calls[name]:
                    at = row["admitted_at"] + period
                    break
            retry_at = max(retry_at, at)
        reason = ", ".join(f"{name} {used[name]} + {wanted[name]} > {calls[name]}" for name in over)
        return retry_at, (
            f"queue {queue!r} limits LLM calls per {period.total_seconds():g}s: {reason}"
        )

    async def true_up(self, admission_id: int, input: int, output: int, cost: Decimal) -> None:
        """What the admitted call really used (after it, whatever its outcome)."""
        await self.pool.execute(SQL["true_up"], admission_id, input, output, cost)

    async def run_spend(self, run_id: uuid.UUID) -> Decimal:
        """Dollars of the run's recorded LLM calls (all its attempts), plus the reservations
        of its open Message Batches."""
        spent: Decimal = await self.pool.fetchval(SQL["run_spend"], run_id)
        return spent

    async def prune(self, batch: int) -> int:
        """Delete up to ``batch`` admissions older than a day (the longest window)."""
        status = await self.pool.execute(SQL["prune"], batch)
        return int(status.split()[-1])

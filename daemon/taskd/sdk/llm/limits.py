"""Limits and budgets on ``ctx.llm`` calls: a call is admitted before it is sent, against an
estimate, and trued up with its real usage after it.

What is checked, before each ``messages.create`` or ``messages.stream`` of a run:

- the run's budget (``@task(budget_usd=...)``): what the run spent over all its attempts (its
  recorded calls, flushed before each outcome) plus this execution's calls, plus the call's
  estimated cost, must stay within it, else ``BudgetExceeded`` (the run fails);
- its queue's call limits (``Rate(tokens=..., input_tokens=..., output_tokens=...,
  requests=..., per=...)``) and budget per concurrency key (``Budget(usd=..., per=...)``),
  held in the database for the whole fleet: the call is admitted under a per-queue lock
  against what the queue's admissions reserved or used over the sliding window. A call that
  does not fit waits: in its slot when the window has room within ``[worker]
  wait_threshold``, else the run is suspended (no slot held, no attempt spent) until then. A
  budget with ``on_exceed="fail"`` raises ``BudgetExceeded`` instead of waiting.

The estimate: ``max_tokens`` output tokens, and the input's tokens as the API counts them
(``messages.count_tokens``: free, but a round trip, made only when a token limit or a budget
needs it), or the caller's own figure: ``estimated_input_tokens=300`` (taken out of the
parameters before the SDK sees them). Its cost is at ``[llm] prices``; a model without a price
cannot be called under a budget. After the call, whatever its outcome, the reservation becomes
what the call used (a 429 used no tokens).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio

from taskd.errors import BudgetExceeded
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.sdk.wait import Suspend

if TYPE_CHECKING:
    from taskd.sdk.llm.client import LLM

ESTIMATE_KEYWORD = "estimated_input_tokens"
"""The keyword a call declares its input's tokens with (no count_tokens round trip)."""
COUNTED_PARAMS = ("model", "messages", "system", "tools", "tool_choice", "thinking")
"""The parameters of a call that ``count_tokens`` takes."""
TOKEN_LIMITS = ("tokens", "input_tokens", "output_tokens")
RECHECK = 1.0  # a call waiting in its slot asks again at least this often (true-ups free room)
WAKE_SPREAD_MAX = 2.0  # suspended runs wake a little apart: a jitter up to this (seconds)


def declared_estimate(params: dict[str, Any]) -> int | None:
    """Take ``estimated_input_tokens`` out of ``params`` (the SDK must not see it)."""
    value = params.pop(ESTIMATE_KEYWORD, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{ESTIMATE_KEYWORD} must be a whole number of tokens (0 or more), not {value!r}"
        )
    return value


def used_tokens(usage: Usage) -> tuple[int, int]:
    """What a call's usage counts toward the limits: input (uncached, cache writes and cache
    reads: all the input ``count_tokens`` counts) and output tokens."""
    return (
        usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens,
        usage.output_tokens,
    )


def _dollars(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001')).normalize():f}"


@dataclass(slots=True)
class Ticket:
    """An admitted call: its reservation in the database (None: the queue has no limit) and
    the dollars it holds of the run's budget until it is trued up."""

    admission_id: int | None
    admitted_at: datetime | None
    cost: Decimal
    settled: bool = False


class CallLimits:
    """The admission of one execution's ``ctx.llm`` calls (one per ``LLM``)."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm
        self._limits: dict[str, Any] | None = None
        self._limits_read = False
        self._run_spent: Decimal | None = None  # earlier executions' calls, read once
        self._spent = Decimal(0)  # this execution's calls, trued up
        self._reserved = Decimal(0)  # this execution's calls in flight, at their estimate

    async def admit(self, kind: str, params: dict[str, Any], declared: int | None) -> Ticket | None:
        """Admit the call ``params`` describes (waiting, suspending the run, or raising
        ``BudgetExceeded``, recorded as a call of outcome "budget", never sent); None when no
        limit or budget applies to it."""
        started, clock = datetime.now(UTC), time.perf_counter()
        try:
            return await self._admit(params, declared)
        except BudgetExceeded as exc:
            self._llm._record(
                kind,
                params["model"],
                "budget",
                Usage(),
                None,
                started,
                clock,
                None,
                None,
                str(exc)[:2000],
            )
            raise

    async def _admit(self, params: dict[str, Any], declared: int | None) -> Ticket | None:
        llm = self._llm
        ctx, services = llm._ctx, llm._services
        if not self._limits_read:
            self._limits = await services.llm_queue_limits(ctx.queue, ctx.run_id)
            self._limits_read = True
        limits = self._limits or {}
        calls: dict[str, Any] = limits.get("calls") or {}
        tenant_budget = limits.get("budget")
        run_budget = ctx.budget_usd
        if not calls and tenant_budget is None and run_budget is None:
            return None
        model: str = params["model"]
        budgeted = tenant_budget is not None or run_budget is not None
        input_tokens = output_tokens = 0
        if budgeted or any(name in calls for name in TOKEN_LIMITS):
            output_tokens = _max_tokens(params)
            input_tokens = declared if declared is not None else await self._count(params)
        cost: Decimal | None = None
        if budgeted:
            price = price_of(model, llm._settings.prices)
            if price is None:
                raise BudgetExceeded(
                    f"model {model!r} has no price in [llm] prices: a call under a budget "
                    "needs one (add the model's prices to [llm] prices)"
                )
            cost = cost_of(Usage(input_tokens=input_tokens, output_tokens=output_tokens), price)
        reserved = cost or Decimal(0)
        if run_budget is not None:
            await self._within_run_budget(Decimal(str(run_budget)), reserved)
        self._reserved += reserved
        try:
            admission_id = admitted_at = None
            if calls or tenant_budget is not None:
                admission_id, admitted_at = await self._admitted(input_tokens, output_tokens, cost)
        except BaseException:
            self._reserved -= reserved
            raise
        return Ticket(admission_id, admitted_at, reserved)

    async def settle(self, ticket: Ticket | None, model: str, usage: Usage) -> None:
        """After the call, whatever its outcome: the reservation becomes what it used."""
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        llm = self._llm
        cost = llm.cost(model, usage) or Decimal(0)
        self._reserved -= ticket.cost
        self._spent += cost
        if ticket.admission_id is not None:
            input_tokens, output_tokens = used_tokens(usage)
            await llm._services.llm_true_up(
                ticket.admission_id, llm._ctx.run_id, input_tokens, output_tokens, cost
            )

    async def _within_run_budget(self, budget: Decimal, cost: Decimal) -> None:
        ctx = self._llm._ctx
        if self._run_spent is None:
            self._run_spent = await self._llm._services.llm_run_spend(ctx.run_id)
        spent = self._run_spent + self._spent + self._reserved
        if spent + cost > budget:
            raise BudgetExceeded(
                f"run budget of {_dollars(budget)} (@task(budget_usd=...)): "
                f"{_dollars(spent)} spent, this call's estimate {_dollars(cost)} would pass it"
            )

    async def _admitted(
        self, input_tokens: int, output_tokens: int, cost: Decimal | None
    ) -> tuple[int | None, datetime | None]:
        """Ask the fleet's admission until the call fits: sleep in the slot for a short wait,
        suspend the run for a long one; BudgetExceeded for a budget that fails."""
        llm = self._llm
        ctx, services = llm._ctx, llm._services
        while True:
            admission = await services.llm_admit(
                ctx.queue,
                ctx.concurrency_key or "",
                ctx.run_id,
                input_tokens,
                output_tokens,
                cost,
            )
            if admission.admitted:
                return admission.id, admission.admitted_at
            if admission.exceeded:
                raise BudgetExceeded(admission.reason or "budget exceeded")
            assert admission.retry_at is not None
            wait = max(0.0, (admission.retry_at - admission.now).total_seconds())
            if wait <= ctx.wait_threshold:
                await anyio.sleep(min(wait, RECHECK))
                continue
            ctx.log.info(
                "LLM call waits for its queue's limits: run suspended",
                until=admission.retry_at.isoformat(),
                reason=admission.reason,
            )
            wait += random.uniform(0, min(WAKE_SPREAD_MAX, 0.1 * wait))
            raise Suspend(datetime.now(UTC) + timedelta(seconds=wait))

    async def _count(self, params: dict[str, Any]) -> int:
        """The input's tokens, as the API counts them (a recorded count_tokens call)."""
        counted = await self._llm.messages.count_tokens(
            **{name: params[name] for name in COUNTED_PARAMS if name in params}
        )
        return counted.input_tokens


def _max_tokens(params: dict[str, Any]) -> int:
    value = params.get("max_tokens")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "a call under a token limit or a budget needs max_tokens (a whole number, 1 or "
            f"more): its output is estimated at max_tokens; got {value!r}"
        )
    return value

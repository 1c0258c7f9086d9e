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
what the call used (a 429 used no tokens; a call canceled in flight, its usage unknown, its
input estimate). A true-up the database does not take is logged, not raised: the call is
recorded already, and failing the attempt would pay for it again; the reservation then counts
its estimate until it leaves its window.

A Message Batch (``ctx.llm.batch``) is admitted once, before it is submitted, against the
budgets only: its estimate is the sum over its requests (each one's ``max_tokens``, and its
input as ``count_tokens`` counts it or as the request declares it with
``estimated_input_tokens``), its cost at batch prices (half). The queue's token and request
limits do not apply to batches: they keep a queue within the Messages API's rate limits, and
the Message Batches API has its own, which a batch does not draw on. The reservation is held
while the batch is open (in ``taskd.llm_admissions`` for the tenant, in
``taskd.llm_batches.reserved_usd`` for the run) and trued up to what the batch was billed when it
ends, by the daemon that records its results. Counting a batch's inputs is one ``count_tokens``
round trip per request without a declared estimate, made ``COUNT_CONCURRENCY`` at a time and
for at most ``MAX_COUNTED`` requests of a batch (more must declare their estimates).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio

from taskd.clock import now as wall_now
from taskd.errors import BudgetExceeded, LLMRequestRefused
from taskd.models import LLMAdmission
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.sdk.wait import Suspend

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from taskd.sdk.llm.client import LLM

ESTIMATE_KEYWORD = "estimated_input_tokens"
"""The keyword a call declares its input's tokens with (no count_tokens round trip)."""
COUNTED_PARAMS = ("model", "messages", "system", "tools", "tool_choice", "thinking")
"""The parameters of a call that ``count_tokens`` takes."""
TOKEN_LIMITS = ("tokens", "input_tokens", "output_tokens")
RECHECK = 1.0  # a call waiting in its slot asks again at least this often (true-ups free room)
WAKE_SPREAD_MAX = 2.0  # suspended runs wake a little apart: a jitter up to this (seconds)
COUNT_CONCURRENCY = 4  # a batch's count_tokens round trips in flight at once
# the most count_tokens round trips one batch's admission makes: within a minute of the
# lowest tier's count_tokens rate limit (100 per minute), so that a batch's counts do not run
# into a 429 that would suspend the run and make them again on its next execution
MAX_COUNTED = 100


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
    input_tokens: int = 0  # its input estimate (what a call canceled in flight is trued up to)


class CallLimits:
    """The admission of one execution's ``ctx.llm`` calls (one per ``LLM``)."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm
        self._limits: dict[str, Any] | None = None
        self._limits_read = False
        self._run_spent: Decimal | None = None  # earlier executions' calls, read once
        self._run_spent_read = anyio.Lock()  # concurrent first calls: one read, not two
        self._spent = Decimal(0)  # this execution's calls, trued up
        self._reserved = Decimal(0)  # this execution's calls in flight, at their estimate

    async def admit(self, kind: str, params: dict[str, Any], declared: int | None) -> Ticket | None:
        """Admit the call ``params`` describes (waiting, suspending the run, or raising
        ``BudgetExceeded``, recorded as a call of outcome "budget", never sent); None when no
        limit or budget applies to it."""
        started, clock = wall_now(), time.perf_counter()
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
        limits = await self._read_limits()
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

                def ask() -> Awaitable[LLMAdmission]:
                    return services.llm_admit(
                        ctx.queue,
                        ctx.concurrency_key or "",
                        ctx.run_id,
                        input_tokens,
                        output_tokens,
                        cost,
                    )

                admission_id, admitted_at = await self._admitted(ask, "LLM call")
        except BaseException:
            self._reserved -= reserved
            raise
        return Ticket(admission_id, admitted_at, reserved, input_tokens=input_tokens)

    async def admit_batch(
        self,
        requests: Sequence[tuple[dict[str, Any], int | None]],
        admit: Callable[[str, int, int, Decimal | None, int], Awaitable[LLMAdmission]],
    ) -> Ticket | None:
        """Admit a Message Batch of ``requests`` (each one's params and declared input
        estimate) under the run's budget and its queue's budget per concurrency key (not the
        token and request limits); ``admit(key, input, output, cost, requests)`` asks the
        fleet's admission. Raises ``BudgetExceeded`` (recorded as a ``batch`` call of outcome
        "budget", never submitted) or ``Suspend`` (a tenant budget that waits); None when no
        budget applies."""
        started, clock = wall_now(), time.perf_counter()
        try:
            return await self._admit_batch(requests, admit)
        except BudgetExceeded as exc:
            self._llm._record(
                "batch",
                requests[0][0]["model"],
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

    async def _admit_batch(
        self,
        requests: Sequence[tuple[dict[str, Any], int | None]],
        admit: Callable[[str, int, int, Decimal | None, int], Awaitable[LLMAdmission]],
    ) -> Ticket | None:
        llm = self._llm
        ctx = llm._ctx
        limits = await self._read_limits()
        tenant_budget = limits.get("budget")
        run_budget = ctx.budget_usd
        if tenant_budget is None and run_budget is None:
            return None  # the token and request limits do not apply to batches
        outputs = [
            _max_tokens(params, f"batch request {i}") for i, (params, _) in enumerate(requests)
        ]
        prices = []
        for i, (params, _) in enumerate(requests):
            price = price_of(params["model"], llm._settings.prices)
            if price is None:
                raise BudgetExceeded(
                    f"model {params['model']!r} (batch request {i}) has no price in [llm] "
                    "prices: a batch under a budget needs one (add the model's prices to "
                    "[llm] prices)"
                )
            prices.append(price)
        uncounted = [i for i, (_, declared) in enumerate(requests) if declared is None]
        if len(uncounted) > MAX_COUNTED:
            raise ValueError(
                f"a batch under a budget counts the input of each request without "
                f"{ESTIMATE_KEYWORD} with count_tokens (one round trip each, at most "
                f"{MAX_COUNTED} per batch): {len(uncounted)} requests have none; declare "
                f"{ESTIMATE_KEYWORD} in their params"
            )
        counted = await self._count_all([requests[i][0] for i in uncounted])
        inputs = [declared or 0 for _, declared in requests]
        for i, tokens in zip(uncounted, counted, strict=True):
            inputs[i] = tokens
        cost = sum(
            (
                cost_of(Usage(input_tokens=tokens_in, output_tokens=tokens_out), price, batch=True)
                for tokens_in, tokens_out, price in zip(inputs, outputs, prices, strict=True)
            ),
            Decimal(0),
        )
        if run_budget is not None:
            await self._within_run_budget(Decimal(str(run_budget)), cost, "batch")
        self._reserved += cost
        try:
            admission_id = admitted_at = None
            if tenant_budget is not None:
                key = ctx.concurrency_key or ""
                total_in, total_out, count = sum(inputs), sum(outputs), len(requests)

                def ask() -> Awaitable[LLMAdmission]:
                    return admit(key, total_in, total_out, cost, count)

                admission_id, admitted_at = await self._admitted(ask, "Message Batch")
        except BaseException:
            self._reserved -= cost
            raise
        return Ticket(admission_id, admitted_at, cost)

    def settled_elsewhere(self, ticket: Ticket | None, cost: Decimal) -> None:
        """A batch this execution admitted ended and was trued up by the daemon that recorded
        its results (its calls, ``cost`` dollars, are in ``taskd.llm_calls``): the run's
        budget counts its cost instead of its estimate."""
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        self._reserved -= ticket.cost
        if self._run_spent is not None:  # read before the batch: its calls are not in it
            self._spent += cost

    def known(self, limits: dict[str, Any] | None) -> None:
        """The queue's limits as the call's gate read them (saves a read per execution)."""
        self._limits = limits
        self._limits_read = True

    async def _read_limits(self) -> dict[str, Any]:
        """The queue's limits and budget (read once per execution)."""
        if not self._limits_read:
            ctx = self._llm._ctx
            self._limits = await self._llm._services.llm_queue_limits(ctx.queue, ctx.run_id)
            self._limits_read = True
        return self._limits or {}

    async def _count_all(self, requests: list[dict[str, Any]]) -> list[int]:
        """The inputs' tokens as the API counts them, COUNT_CONCURRENCY round trips at a
        time; the first failure (a 429 suspending the run, a refusal) stops the rest."""
        counts = [0] * len(requests)
        failures: list[BaseException] = []
        limiter = anyio.Semaphore(COUNT_CONCURRENCY)

        async def count(index: int, group: TaskGroup) -> None:
            async with limiter:
                if failures:
                    return
                try:
                    counts[index] = await self._count(requests[index])
                except (Exception, Suspend) as exc:
                    failures.append(exc)
                    group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for index in range(len(requests)):
                group.start_soon(count, index, group)
        if failures:
            raise failures[0]
        return counts

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
            try:
                await llm._services.llm_true_up(
                    ticket.admission_id, llm._ctx.run_id, input_tokens, output_tokens, cost
                )
            except Exception as exc:
                # the call is recorded already; raising would fail an attempt whose call was
                # paid (and pay it again): the reservation stays at its estimate (counted
                # high, never low) until it leaves its window
                llm._ctx.log.warning(
                    f"an LLM call's reservation was not trued up (it counts its estimate): {exc}",
                    admission=ticket.admission_id,
                )

    async def _within_run_budget(self, budget: Decimal, cost: Decimal, what: str = "call") -> None:
        ctx = self._llm._ctx
        if self._run_spent is None:
            # one read per execution: a second read (by a call started with the first) could
            # hold the first call's flushed cost, which self._spent holds too
            async with self._run_spent_read:
                if self._run_spent is None:
                    self._run_spent = await self._llm._services.llm_run_spend(ctx.run_id)
        spent = self._run_spent + self._spent + self._reserved
        if spent + cost > budget:
            raise BudgetExceeded(
                f"run budget of {_dollars(budget)} (@task(budget_usd=...)): "
                f"{_dollars(spent)} spent, this {what}'s estimate {_dollars(cost)} would pass it"
            )

    async def _admitted(
        self, ask: Callable[[], Awaitable[LLMAdmission]], what: str
    ) -> tuple[int | None, datetime | None]:
        """Ask the fleet's admission until the call fits: sleep in the slot for a short wait,
        suspend the run for a long one; BudgetExceeded for a budget that fails."""
        ctx = self._llm._ctx
        while True:
            admission = await ask()
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
                f"{what} waits for its queue's limits: run suspended",
                until=admission.retry_at.isoformat(),
                reason=admission.reason,
            )
            wait += random.uniform(0, min(WAKE_SPREAD_MAX, 0.1 * wait))
            raise Suspend(wall_now() + timedelta(seconds=wait))

    async def _count(self, params: dict[str, Any]) -> int:
        """The input's tokens, as the API counts them (a recorded count_tokens call)."""
        try:
            counted = await self._llm.messages.count_tokens(
                **{name: params[name] for name in COUNTED_PARAMS if name in params}
            )
        except LLMRequestRefused as exc:  # an endpoint (a proxy, a gateway) without it
            raise LLMRequestRefused(
                f"counting the input's tokens for a token limit or a budget was refused: {exc} "
                f"(an endpoint without messages.count_tokens: declare the input's tokens "
                f"with {ESTIMATE_KEYWORD}=N on the call, or in each batch request's params)",
                status=exc.status,
                request_id=exc.request_id,
            ) from exc
        return counted.input_tokens


def _max_tokens(
    params: dict[str, Any], what: str = "a call under a token limit or a budget"
) -> int:
    value = params.get("max_tokens")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{what} needs max_tokens (a whole number, 1 or more): its output is estimated "
            f"at max_tokens; got {value!r}"
        )
    return value

"""``ctx.llm``: the official ``anthropic.AsyncAnthropic`` client, each call attributed to the
run, its step and its task, recorded with its tokens and cost, and kept from spending the run's
attempts on the API's bad days.

Task code writes ordinary SDK calls (``await ctx.llm.messages.create(model=..., ...)``). Around
each one: the model's fleet-wide backoff is honoured (no call before the API said so), the call
is sent with the SDK's own retries off, and its outcome decides what happens to the run:

- a 429, 529, ``overloaded_error`` in a stream, another 5xx, a timeout or a lost connection:
  the run goes back to the queue (``Suspend``: no slot held, no attempt spent) until the API's
  ``retry-after`` / reset time, else an adaptive backoff; past ``[llm] max_wait`` it fails;
- a 400, 401, 403, 404, 413 or 422: ``LLMRequestRefused``, the run fails at once;
- success: the call's usage and cost are recorded (batched; flushed before the run's outcome).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from taskd.errors import LLMRequestRefused, LLMUnavailable
from taskd.models import LLMCall
from taskd.sdk.llm import batch as batches
from taskd.sdk.llm.batch import BatchRequestFailed
from taskd.sdk.llm.failures import Refused, Unavailability, Unavailable, classify
from taskd.sdk.llm.limits import CallLimits, Ticket, declared_estimate
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.sdk.llm.services import LLMServices
from taskd.sdk.steps import current_step
from taskd.sdk.wait import Suspend

if TYPE_CHECKING:
    import anthropic
    from anthropic.lib.streaming import AsyncMessageStream, AsyncMessageStreamManager
    from anthropic.resources.messages.batches import AsyncBatches
    from anthropic.types import Message, MessageTokensCount

    from taskd.sdk.context import Context

T = TypeVar("T")

# A fleet told "not before T" would call at T all at once: each run wakes a little after it,
# spread over a tenth of the wait (at most WAKE_SPREAD_MAX seconds).
WAKE_SPREAD_MAX = 5.0
COUNT_TOKENS_KEY = "count_tokens"  # its rate limit is the organisation's, not a model's


class LLM:
    """``ctx.llm``: ``ctx.llm.messages.create(...)``, ``ctx.llm.messages.stream(...)``,
    ``ctx.llm.messages.count_tokens(...)``, as on ``anthropic.AsyncAnthropic``."""

    def __init__(self, ctx: Context, services: LLMServices) -> None:
        self._ctx = ctx
        self._services = services
        self._settings = services.llm_settings
        self._calls = 0
        self._recovering: set[str] = set()  # keys a success must clear (a streak, a wait)
        self._limits = CallLimits(self)  # queue limits and budgets (sdk/llm/limits.py)
        self.messages = Messages(self)
        """Messages: ``create``, ``stream``, ``count_tokens`` (and ``batches``, unattributed)."""

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The daemon's SDK client itself: calls made through it are neither recorded nor
        protected (for endpoints ``ctx.llm`` does not wrap)."""
        return self._services.llm_client()

    @property
    def default_model(self) -> str:
        """``[llm] model``: the model of a call that names none."""
        return self._settings.model

    async def batch(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[Message | BatchRequestFailed]:
        """Submit ONE Anthropic Message Batch (half price) and return its results in request
        order: a ``Message`` per succeeded request, a ``BatchRequestFailed`` per errored,
        expired or canceled one (returned, not raised).

        ``requests``: Messages API params dicts (``model`` defaults to ``[llm] model``; custom
        ids ``request-0``, ``request-1``...), or ``{"custom_id": ..., "params": {...}}``. The
        submission is recorded as the run's step ``llm-batch:N``: a re-execution never submits
        again. The run suspends while the batch is processed (no slot held); the daemons poll
        it every ``[llm] batch_poll_interval`` and wake the run when it ends. Each request is
        recorded in ``taskd.llm_calls`` (kind ``batch``) at batch prices. A refused submission
        fails the run (LLMRequestRefused); a 429, 529, 5xx or lost connection hands it back to
        the queue, as for other calls."""
        return await batches.batch(self, requests)

    # -- the path of every call ------------------------------------------------------------

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("model"):
            params = {**params, "model": self._settings.model}
        return params

    async def _call(
        self,
        kind: str,
        params: dict[str, Any],
        send: Callable[[dict[str, Any]], Awaitable[T]],
        usage_of: Callable[[T], Usage],
    ) -> T:
        model = params["model"]
        key = COUNT_TOKENS_KEY if kind == "count_tokens" else model
        params = dict(params)
        declared = declared_estimate(params)  # never sent: the SDK would refuse it
        await self.before(key)
        # the queue's limits and the budgets (not for counting tokens: free, and their aid)
        ticket = (
            await self._limits.admit(kind, params, declared) if kind != "count_tokens" else None
        )
        call = self._next_call()
        started, clock = self._started(ticket), time.perf_counter()
        try:
            result = await send(params)
        except Exception as exc:
            await self._limits.settle(ticket, model, Usage())  # it used no tokens
            await self.failed(kind, key, model, exc, started, clock, Usage(), call)
            raise  # not the API's: a bad argument the SDK refused before sending
        usage = usage_of(result)
        await self._limits.settle(ticket, model, usage)
        await self.succeeded(
            kind,
            key,
            model,
            usage,
            started,
            clock,
            stop_reason=getattr(result, "stop_reason", None),
            request_id=getattr(result, "_request_id", None),
        )
        return result

    @staticmethod
    def _started(ticket: Ticket | None) -> datetime:
        """When the call starts: for a call admitted under its queue's limits, its admission
        time (the database's clock), the instant the limits count it at."""
        if ticket is not None and ticket.admitted_at is not None:
            return ticket.admitted_at
        return datetime.now(UTC)

    def _next_call(self) -> int:
        self._calls += 1
        return self._calls

    async def before(self, key: str) -> None:
        """Wait (suspended) while the fleet holds ``key`` backed off."""
        gate = await self._services.llm_gate(key, self._ctx.run_id, self._ctx.queue)
        self._limits.known(gate.queue_limits)
        if gate.deferred_since is not None or gate.overloads > 0:
            self._recovering.add(key)
        if gate.backoff_until is not None and gate.backoff_until > gate.now:
            reason = gate.backoff_reason or "backed off"
            await self._defer(
                key,
                Unavailable(
                    Unavailability.RATE_LIMITED,
                    f"{key} is backed off until {gate.backoff_until.isoformat()}: {reason}",
                    gate.backoff_until,
                    None,
                    None,
                ),
                from_gate=True,
            )

    async def succeeded(
        self,
        kind: str,
        key: str,
        model: str,
        usage: Usage,
        started: datetime,
        clock: float,
        *,
        stop_reason: str | None = None,
        request_id: str | None = None,
        batch: bool = False,
    ) -> Decimal | None:
        cost = self.cost(model, usage, batch=batch)
        self._record(kind, model, "ok", usage, cost, started, clock, stop_reason, request_id, None)
        if key in self._recovering:
            self._recovering.discard(key)
            await self._services.llm_recovered(key, self._ctx.run_id)
        return cost

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
        """Dollars for ``usage`` of ``model`` at ``[llm] prices`` (None: no price known)."""
        price = price_of(model, self._settings.prices)
        return cost_of(usage, price, batch=batch) if price is not None else None

    async def failed(
        self,
        kind: str,
        key: str,
        model: str,
        exc: BaseException,
        started: datetime,
        clock: float,
        usage: Usage,
        call: int,
    ) -> None:
        """Record a failed call, then wait for the API or fail the run; returns only for an
        exception that is not the API's (the caller raises it)."""
        verdict = classify(exc)
        if verdict is None:
            return
        outcome = verdict.kind.value if isinstance(verdict, Unavailable) else "refused"
        cost = self.cost(model, usage) if usage.total else None
        self._record(
            kind,
            model,
            outcome,
            usage,
            cost,
            started,
            clock,
            None,
            verdict.request_id,
            verdict.message,
        )
        if isinstance(verdict, Refused):
            raise LLMRequestRefused(
                verdict.message, status=verdict.status, request_id=verdict.request_id
            ) from exc
        await self._defer(key, verdict)

    async def _defer(self, key: str, unavailable: Unavailable, *, from_gate: bool = False) -> None:
        """Hand the run back to the queue until the API is expected back (raises Suspend), or
        fail it (LLMUnavailable) when that is past ``[llm] max_wait``."""
        services, settings = self._services, self._settings
        deferral = await services.llm_defer_run(self._ctx.run_id, unavailable.message[:2000])
        now = deferral.now
        if from_gate:
            assert unavailable.until is not None
            wake = unavailable.until
        elif unavailable.kind is Unavailability.OVERLOADED:
            overloads = await services.llm_count_overload(key, unavailable.message[:2000])
            wake = max(unavailable.until or now, now + self._backoff(overloads))
            wake = await services.llm_back_off(key, wake, unavailable.message[:2000])
        elif unavailable.kind is Unavailability.RATE_LIMITED:
            wake = unavailable.until or now + self._backoff(deferral.deferrals)
            wake = await services.llm_back_off(key, wake, unavailable.message[:2000])
        else:  # this run's trouble reaching the API: the fleet goes on
            wake = unavailable.until or now + self._backoff(deferral.deferrals)
        wait = max(0.0, (wake - now).total_seconds())
        wait += random.uniform(0, min(WAKE_SPREAD_MAX, 0.1 * wait + 0.05))
        waited = (now - deferral.since).total_seconds()
        if waited + wait > settings.max_wait:
            raise LLMUnavailable(
                f"{unavailable.message} (the run has waited {waited:.0f}s for the API; the "
                f"next try would be past [llm] max_wait of {settings.max_wait:g}s)"
            )
        self._recovering.add(key)
        raise Suspend(datetime.now(UTC) + timedelta(seconds=wait))

    def _backoff(self, count: int) -> timedelta:
        """The adaptive wait after ``count`` failures in a row: doubled each time, with jitter
        (half to all of it), up to ``[llm] overload_backoff_max``."""
        settings = self._settings
        full = min(
            settings.overload_backoff_max,
            settings.overload_backoff * 2 ** min(max(count, 1) - 1, 30),
        )
        return timedelta(seconds=full * random.uniform(0.5, 1.0))

    def _record(
        self,
        kind: str,
        model: str,
        outcome: str,
        usage: Usage,
        cost: Decimal | None,
        started: datetime,
        clock: float,
        stop_reason: str | None,
        request_id: str | None,
        error: str | None,
    ) -> None:
        ctx = self._ctx
        self._services.llm_record(
            LLMCall(
                run_id=ctx.run_id,
                task_id=ctx.task_id,
                attempt=ctx.attempt,
                step=current_step.get(),
                queue=ctx.queue,
                concurrency_key=ctx.concurrency_key or None,
                tags=list(ctx.tags),
                model=model,
                kind=kind,
                outcome=outcome,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cost_usd=cost,
                latency_ms=round((time.perf_counter() - clock) * 1000),
                stop_reason=stop_reason,
                request_id=request_id,
                error=error,
                started_at=started,
            )
        )


def _message_usage(message: Message) -> Usage:
    return Usage.of(message.usage)


def _no_usage(_: object) -> Usage:
    return Usage()  # counting tokens is free: it uses none


class Messages:
    """``ctx.llm.messages``: the SDK's ``messages`` resource, each call attributed."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    async def create(self, **params: Any) -> Message:
        """``client.messages.create(**params)``: the ``Message``. ``model`` defaults to
        ``[llm] model``. For a streamed answer use :meth:`stream`."""
        if params.get("stream"):
            raise ValueError(
                "ctx.llm.messages.create(stream=True) is not supported: use "
                "`async with ctx.llm.messages.stream(...) as stream`"
            )
        client = self._llm.client

        async def send(p: dict[str, Any]) -> Message:
            message: Message = await client.messages.create(**p)
            return message

        return await self._llm._call("message", self._llm._params(params), send, _message_usage)

    async def count_tokens(self, **params: Any) -> MessageTokensCount:
        """``client.messages.count_tokens(**params)``: the input's token count (free)."""
        client = self._llm.client

        async def send(p: dict[str, Any]) -> MessageTokensCount:
            return await client.messages.count_tokens(**p)

        return await self._llm._call("count_tokens", self._llm._params(params), send, _no_usage)

    def stream(self, **params: Any) -> LLMStreamManager:
        """``async with ctx.llm.messages.stream(**params) as stream``: the SDK's stream, whose
        text deltas are also published on the run's change stream (``/api/stream?run=``)."""
        return LLMStreamManager(self._llm, self._llm._params(params))

    @property
    def batches(self) -> AsyncBatches:
        """The SDK's ``messages.batches``, unattributed: use ``ctx.llm.batch`` instead."""
        return self._llm.client.messages.batches


class LLMStreamManager:
    """What ``ctx.llm.messages.stream(...)`` returns: an async context manager."""

    def __init__(self, llm: LLM, params: dict[str, Any]) -> None:
        self._llm = llm
        self._params = params
        self._manager: AsyncMessageStreamManager[Any] | None = None
        self._stream: LLMStream | None = None
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> LLMStream:
        llm, model = self._llm, self._params["model"]
        params = dict(self._params)
        declared = declared_estimate(params)  # never sent: the SDK would refuse it
        await llm.before(model)
        self._ticket = await llm._limits.admit("stream", params, declared)
        call = llm._next_call()
        started, clock = llm._started(self._ticket), time.perf_counter()
        self._manager = llm.client.messages.stream(**params)
        try:
            sdk_stream = await self._manager.__aenter__()
        except Exception as exc:
            await llm._limits.settle(self._ticket, model, Usage())  # it used no tokens
            await llm.failed("stream", model, model, exc, started, clock, Usage(), call)
            raise
        self._stream = LLMStream(llm, sdk_stream, model, call, started, clock)
        return self._stream

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._manager is not None
        stream = self._stream
        try:
            try:
                if stream is not None:
                    await stream._stop_observing()
            finally:  # the SDK's response is closed whatever happened above
                await self._manager.__aexit__(*exc_info)
        finally:
            if stream is not None:
                await stream._closed(leaving_on_error=exc_info[0] is not None)
                # the reservation becomes what the stream used (so far, if it ended early)
                await self._llm._limits.settle(
                    self._ticket, self._params["model"], stream._usage_so_far()
                )


class LLMStream:
    """The SDK's ``AsyncMessageStream``, observed: iterate it (events), read ``text_stream``,
    or ``await get_final_message()`` / ``get_final_text()``, as with the SDK."""

    def __init__(
        self,
        llm: LLM,
        stream: AsyncMessageStream[Any],
        model: str,
        call: int,
        started: datetime,
        clock: float,
    ) -> None:
        self._llm = llm
        self._sdk = stream
        self._model = model
        self._call = call
        self._started = started
        self._clock = clock
        self._step = current_step.get()
        self._pending: list[str] = []
        self._published_at = -math.inf  # the first words go out at once
        self._interval = llm._settings.stream_interval
        self._recorded = False
        self._events: AsyncGenerator[Any, None] = self._observe()
        self._text_deltas: AsyncGenerator[str, None] = self._texts()
        self.text_stream: AsyncIterator[str] = self._text_deltas
        """The text deltas, as they arrive."""

    @property
    def request_id(self) -> str | None:
        return self._sdk.request_id

    @property
    def current_message_snapshot(self) -> Message:
        snapshot: Message = self._sdk.current_message_snapshot
        return snapshot

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events

    async def until_done(self) -> None:
        async for _ in self._events:
            pass

    async def get_final_message(self) -> Message:
        await self.until_done()
        message: Message = await self._sdk.get_final_message()
        return message

    async def get_final_text(self) -> str:
        await self.until_done()
        return await self._sdk.get_final_text()

    async def _texts(self) -> AsyncGenerator[str, None]:
        async for event in self._events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                yield event.delta.text

    async def _observe(self) -> AsyncGenerator[Any, None]:
        llm = self._llm
        try:
            async for event in self._sdk:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    self._pending.append(event.delta.text)
                self._publish_if_due()  # any event: text held back goes out once it is due
                yield event
        except Exception as exc:
            self._publish(done=True)
            self._recorded = True
            await llm.failed(
                "stream",
                self._model,
                self._model,
                exc,
                self._started,
                self._clock,
                self._usage_so_far(),
                self._call,
            )
            raise
        self._publish(done=True)
        if not self._recorded:
            self._recorded = True
            message = await self._sdk.get_final_message()
            await llm.succeeded(
                "stream",
                self._model,
                self._model,
                Usage.of(message.usage),
                self._started,
                self._clock,
                stop_reason=message.stop_reason,
                request_id=self._sdk.request_id,
            )

    def _usage_so_far(self) -> Usage:
        try:
            return Usage.of(self._sdk.current_message_snapshot.usage)
        except AssertionError:  # no message_start yet
            return Usage()

    def _publish_if_due(self) -> None:
        if self._pending and time.monotonic() - self._published_at >= self._interval:
            self._publish(done=False)

    def _publish(self, *, done: bool) -> None:
        if not self._pending and not done:
            return
        text, self._pending = "".join(self._pending), []
        self._published_at = time.monotonic()
        self._llm._services.llm_text(self._llm._ctx, self._step, self._call, text, done)

    async def _stop_observing(self) -> None:
        """The block ends: the iterators left suspended (a ``break`` out of ``text_stream``)
        are closed now, not whenever the garbage collector finds them."""
        await self._text_deltas.aclose()
        await self._events.aclose()

    async def _closed(self, *, leaving_on_error: bool) -> None:
        """The block ended before the stream was read to its end: the call is recorded all
        the same, whole (its stop reason and usage) when the message had ended, else as
        ``abandoned`` with the usage the API had counted so far."""
        if self._recorded:
            return
        self._recorded = True
        self._publish(done=True)
        usage, stop_reason = self._usage_so_far(), "abandoned"
        try:
            ended = self._sdk.current_message_snapshot.stop_reason
        except AssertionError:  # no message_start yet
            ended = None
        if ended is not None and not leaving_on_error:
            await self._llm.succeeded(
                "stream",
                self._model,
                self._model,
                usage,
                self._started,
                self._clock,
                stop_reason=ended,
                request_id=self._sdk.request_id,
            )
            return
        if ended is not None:
            stop_reason = ended  # whole, but leaving on an error: no await, just the record
        self._llm._record(
            "stream",
            self._model,
            "ok",
            usage,
            self._llm.cost(self._model, usage),
            self._started,
            self._clock,
            stop_reason,
            self._sdk.request_id,
            None,
        )

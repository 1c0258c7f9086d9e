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
- success: the call's usage and cost are recorded (batched; flushed before the run's outcome)
  before anything else is awaited, and the run's wait for that key ends (``taskd.llm_deferrals``
  holds a row per run and key, in the attempt that deferred: a success of another key, such as
  the count_tokens a token limit makes, does not end it; the run's next attempt starts afresh);
- cancellation in flight (the run canceled, past its max_duration, a drain): the call is
  recorded as ``canceled`` and its reservation settled (shielded, at most
  SHIELDED_BOOKKEEPING seconds), then the cancellation goes on.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from taskd.clock import now as wall_now
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
# A call left by cancellation (the run canceled, past its max_duration, a drain): its
# bookkeeping (the reservation's true-up, the key's recovery) is shielded from the
# cancellation for at most this long (seconds), then the cancellation goes on.
SHIELDED_BOOKKEEPING = 5.0
STREAM_CANCELED_ERROR = (
    "the stream was being read when the run was canceled, timed out or handed back: its "
    "usage is what the API had counted so far"
)
CANCELED_ERROR = (
    "the call was in flight when the run was canceled, timed out or handed back ({what}): "
    "its usage is unknown (its reservation counts its input estimate)"
)


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
        submission is recorded as the run's step ``llm-batch:N`` (``llm-batch:<step>:N``
        inside a ``ctx.step``): a re-execution never submits again, and a recorded batch is
        returned only to a call with the same custom ids (``BatchStepMismatch`` otherwise).
        The run suspends while the batch is processed (no slot held); the daemons poll
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
            verdict = self._failure(kind, model, exc, started, clock, Usage())  # recorded
            await self._limits.settle(ticket, model, Usage())  # it used no tokens
            await self._after_failure(key, verdict, exc, call)
            raise  # not the API's: a bad argument the SDK refused before sending
        except BaseException as exc:  # canceled in flight: recorded, settled, then on its way
            self._canceled(kind, model, exc, started, clock)
            await self._shielded(self._limits.settle(ticket, model, _estimated_input(ticket)))
            raise
        usage = usage_of(result)
        # recorded before any await: nothing after the API's answer can lose the record
        self._record_ok(
            kind,
            model,
            usage,
            started,
            clock,
            getattr(result, "stop_reason", None),
            getattr(result, "_request_id", None),
        )
        await self._limits.settle(ticket, model, usage)
        await self.recover(key)
        return result

    async def _shielded(self, bookkeeping: Coroutine[Any, Any, None]) -> None:
        """``bookkeeping`` for a call left by cancellation: shielded from it, for at most
        SHIELDED_BOOKKEEPING seconds (the cancellation goes on after)."""
        with anyio.move_on_after(SHIELDED_BOOKKEEPING, shield=True):
            await bookkeeping

    def _canceled(
        self, kind: str, model: str, exc: BaseException, started: datetime, clock: float
    ) -> None:
        """Record a call the run's cancellation (or a drain, or max_duration) interrupted."""
        self._record(
            kind,
            model,
            "canceled",
            Usage(),
            None,
            started,
            clock,
            None,
            None,
            CANCELED_ERROR.format(what=type(exc).__name__),
        )

    @staticmethod
    def _started(ticket: Ticket | None) -> datetime:
        """When the call starts: for a call admitted under its queue's limits, its admission
        time (the database's clock), the instant the limits count it at."""
        if ticket is not None and ticket.admitted_at is not None:
            return ticket.admitted_at
        return wall_now()

    def _next_call(self) -> int:
        self._calls += 1
        return self._calls

    async def before(self, key: str) -> None:
        """Wait (suspended) while the fleet holds ``key`` backed off."""
        ctx = self._ctx
        gate = await self._services.llm_gate(key, ctx.run_id, ctx.queue, ctx.attempt)
        self._limits.known(gate.queue_limits)
        # the run's wait for this key (not another's: a count_tokens success does not end a
        # wait for the model), or the key's overload streak: a success ends them
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
        """Record a call that succeeded, then end the run's wait for ``key`` (and the key's
        overload streak)."""
        cost = self._record_ok(
            kind, model, usage, started, clock, stop_reason, request_id, batch=batch
        )
        await self.recover(key)
        return cost

    def _record_ok(
        self,
        kind: str,
        model: str,
        usage: Usage,
        started: datetime,
        clock: float,
        stop_reason: str | None,
        request_id: str | None,
        *,
        batch: bool = False,
    ) -> Decimal | None:
        cost = self.cost(model, usage, batch=batch)
        self._record(kind, model, "ok", usage, cost, started, clock, stop_reason, request_id, None)
        return cost

    async def recover(self, key: str) -> None:
        """A call of ``key`` succeeded: the run's wait for it ends, and the key's overload
        streak. Best effort: the call is recorded already, and a database away past its
        patience leaves the wait to end with the attempt (logged, not raised: raising would
        fail an attempt whose call was paid)."""
        if key not in self._recovering:
            return
        self._recovering.discard(key)
        try:
            await self._services.llm_recovered(key, self._ctx.run_id)
        except Exception as exc:
            self._ctx.log.warning(
                f"the end of the run's wait for {key} was not recorded: {exc}", key=key
            )

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
        verdict = self._failure(kind, model, exc, started, clock, usage)
        await self._after_failure(key, verdict, exc, call)

    def _failure(
        self,
        kind: str,
        model: str,
        exc: BaseException,
        started: datetime,
        clock: float,
        usage: Usage,
    ) -> Unavailable | Refused | None:
        """What a failed call means (None: not the API's), the call recorded (no await)."""
        verdict = classify(exc)
        if verdict is None:
            return None
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
        return verdict

    async def _after_failure(
        self, key: str, verdict: Unavailable | Refused | None, exc: BaseException, call: int
    ) -> None:
        """Fail the run (a refusal) or wait for the API (raises); returns for None."""
        if verdict is None:
            return
        if isinstance(verdict, Refused):
            raise LLMRequestRefused(
                verdict.message, status=verdict.status, request_id=verdict.request_id
            ) from exc
        await self._defer(key, verdict)

    async def _defer(self, key: str, unavailable: Unavailable, *, from_gate: bool = False) -> None:
        """Hand the run back to the queue until the API is expected back (raises Suspend), or
        fail it (LLMUnavailable) when that is past ``[llm] max_wait``."""
        services, settings, ctx = self._services, self._settings, self._ctx
        deferral = await services.llm_defer_run(
            ctx.run_id, unavailable.message[:2000], key, ctx.attempt
        )
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
        raise Suspend(wall_now() + timedelta(seconds=wait))

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


def _estimated_input(ticket: Ticket | None) -> Usage:
    """What a call canceled in flight is trued up to: its input estimate (the API may have
    read and billed it; what it wrote, if anything, is unknown)."""
    return Usage(input_tokens=ticket.input_tokens if ticket is not None else 0)


def _cancellation(exc_type: type[BaseException] | None) -> bool:
    """Is the block left by cancellation (the run canceled, timed out, drained)?"""
    return exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class())


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
            verdict = llm._failure("stream", model, exc, started, clock, Usage())  # recorded
            await llm._limits.settle(self._ticket, model, Usage())  # it used no tokens
            await llm._after_failure(model, verdict, exc, call)
            raise
        except BaseException as exc:  # canceled before the stream began
            llm._canceled("stream", model, exc, started, clock)
            await llm._shielded(
                llm._limits.settle(self._ticket, model, _estimated_input(self._ticket))
            )
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
                canceled = _cancellation(exc_info[0])
                # recorded at once (no await), whole when the message had ended
                ended = stream._closed(canceled=canceled)
                bookkeeping = self._bookkeeping(stream, ended)
                if canceled:
                    await self._llm._shielded(bookkeeping)
                else:
                    await bookkeeping

    async def _bookkeeping(self, stream: LLMStream, ended: bool) -> None:
        """The reservation becomes what the stream used (so far, if it ended early); a
        stream whose message ended is a success of its model (the run's wait for it ends)."""
        model = self._params["model"]
        await self._llm._limits.settle(self._ticket, model, stream._usage_so_far())
        if ended:
            await self._llm.recover(model)


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

    def _closed(self, *, canceled: bool) -> bool:
        """The block ended before the stream was read to its end: the call is recorded all
        the same (no await), whole (outcome ``ok``, its stop reason and usage) when the
        message had ended, else with the usage the API had counted so far, as ``canceled``
        when the block was left by cancellation, else ``abandoned``. True: the message had
        ended (a success of its model, whatever the block did after)."""
        if self._recorded:
            return False
        self._recorded = True
        self._publish(done=True)
        usage = self._usage_so_far()
        try:
            ended = self._sdk.current_message_snapshot.stop_reason
        except AssertionError:  # no message_start yet
            ended = None
        llm = self._llm
        if ended is not None:
            llm._record_ok(
                "stream",
                self._model,
                usage,
                self._started,
                self._clock,
                ended,
                self._sdk.request_id,
            )
            return True
        outcome, error = "abandoned", None
        if canceled:
            outcome, error = "canceled", STREAM_CANCELED_ERROR
        llm._record(
            "stream",
            self._model,
            outcome,
            usage,
            llm.cost(self._model, usage),
            self._started,
            self._clock,
            "abandoned",
            self._sdk.request_id,
            error,
        )
        return False

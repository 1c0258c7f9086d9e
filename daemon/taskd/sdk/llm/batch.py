"""``ctx.llm.batch(requests)``: an Anthropic Message Batch at half price, the run suspended
while it is processed.

The first execution submits ONE batch and records its id as a step of the run (with a row of
``taskd.llm_batches``), named from where it is called: ``llm-batch:N`` for the N-th batch
called outside any ``ctx.step`` in the execution, ``llm-batch:<step>:N`` for the N-th batch
called inside the step ``<step>`` (so a step replayed from its record, whose batch is not called
again, does not renumber the batches after it). A recorded batch is returned only when its
requests' custom ids are those about to be returned (``BatchStepMismatch`` otherwise). It then
suspends the run: no slot is held and no process
waits. The daemons poll open batches from one maintenance loop (worker/llm_batch_poller.py), at
most once per ``[llm] batch_poll_interval`` for each batch across the fleet; when the batch
ends they store its results in request order, record one ``taskd.llm_calls`` row per request
(kind ``batch``, at batch prices) and wake the run. The run executes again, finds the step (it
never submits again) and the results: a ``Message`` per succeeded request, a
``BatchRequestFailed`` per errored, expired or canceled one.

Before it is submitted, a batch is admitted under the run's budget and its queue's budget per
concurrency key (sdk/llm/limits.py ``CallLimits.admit_batch``): its estimate is the sum of its
requests' (``max_tokens``, and the input counted or declared with ``estimated_input_tokens``,
taken out of the params before the API sees them) at batch prices. A batch that would pass a
budget raises ``BudgetExceeded`` (or, for a tenant budget that waits, suspends the run) and is
never submitted. The reservation is recorded with the batch's row and trued up to what the batch
was billed when it ends. The queue's token and request limits do not apply to batches (the
Message Batches API's rate limits are not the Messages API's).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import anyio

from taskd.clock import now as wall_now
from taskd.errors import AbortRun, StepNameRepeated, TaskdError
from taskd.logs import log_event
from taskd.models import LLMAdmission
from taskd.sdk.llm.limits import Ticket, declared_estimate
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.sdk.steps import current_step
from taskd.sdk.wait import Suspend

if TYPE_CHECKING:
    from anthropic.types import Message

    from taskd.sdk.context import Context
    from taskd.sdk.llm.client import LLM

log = logging.getLogger("taskd.llm")

BATCHES_KEY = "message_batches"  # the Batches API's rate limit is its own, not a model's
# A run waiting on its batch is woken when the batch ends; this recheck is the backstop (a
# wake-up lost with a database that went away): the run executes again, finds the batch
# open, and suspends again.
BATCH_RECHECK = 3600.0
MAX_REQUESTS = 100_000  # the API's limit per batch
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STEP_PREFIX = "llm-batch"
_LEGACY_NAME = re.compile(r"^llm-batch:[0-9]+$")
CANCEL_PATIENCE = 10.0  # seconds given to cancel a batch whose record failed

_REASONS = {
    "expired": "the batch expired (24 hours) before this request was processed",
    "canceled": "the batch was canceled before this request was processed",
    "missing": "the batch's results hold no result for this request",
}


class BatchRequestFailed(TaskdError):
    """What ``ctx.llm.batch`` returns in place of a ``Message`` for a request of the batch that
    did not succeed: ``custom_id``, ``result`` (``errored``, ``expired`` or ``canceled``), and
    for an errored one the API's ``error_type`` and ``message``. Returned, not raised."""

    def __init__(self, custom_id: str, result: str, error_type: str, message: str) -> None:
        super().__init__(f"batch request {custom_id} {result}: {error_type}: {message}")
        self.custom_id = custom_id
        self.result = result
        self.error_type = error_type
        self.message = message


class BatchStepMismatch(AbortRun):
    """The batch recorded under this ``ctx.llm.batch`` call's step holds other requests than
    the call's (its custom ids or their number differ): the task reached its batches in another
    order, or with other requests, than the execution that submitted them. Raised rather than
    returning another batch's results; it fails the run without a retry (a retry runs the same
    code)."""


@dataclass(frozen=True, slots=True)
class BatchState:
    """A recorded batch as the run reads it: its status, its results once ended (request
    order), the custom ids of its requests and the ``ctx.step`` it was submitted in."""

    status: str
    results: list[Any] | None
    custom_ids: list[str]
    in_step: str | None


@runtime_checkable
class BatchServices(Protocol):
    """What ``ctx.llm.batch`` needs from the daemon (taskd.worker.llm_batch_services)."""

    async def llm_batch_record(
        self,
        ctx: Context,
        step: str,
        batch_id: str,
        in_step: str | None,
        custom_ids: list[str],
        models: list[str],
        admission_id: int | None = None,
        reserved_usd: Decimal = Decimal(0),
    ) -> bool: ...

    async def llm_admit_batch(
        self,
        queue: str,
        key: str,
        run_id: uuid.UUID,
        input: int,
        output: int,
        cost: Decimal | None,
        requests: int,
    ) -> LLMAdmission: ...

    async def llm_batch_read(self, run_id: uuid.UUID, batch_id: str) -> BatchState | None: ...

    async def llm_batch_describe(self, run_id: uuid.UUID, batch_id: str) -> BatchState | None:
        """The batch's custom ids and step, its results not read (nor marked read)."""
        ...

    async def llm_batch_cancel(self, batch_id: str) -> None: ...


# how many batches each execution (its ctx.llm) has reached, per enclosing ctx.step (None:
# outside any step): the N of llm-batch:N / llm-batch:<step>:N
_reached: weakref.WeakKeyDictionary[LLM, dict[str | None, int]] = weakref.WeakKeyDictionary()
# the steps of batches this execution has read (an older taskd's llm-batch:N adopted included)
_used: weakref.WeakKeyDictionary[LLM, set[str]] = weakref.WeakKeyDictionary()


def step_name(in_step: str | None, n: int) -> str:
    """The step recording the ``n``-th batch called in ``in_step`` (None: outside steps)."""
    return f"{_STEP_PREFIX}:{n}" if in_step is None else f"{_STEP_PREFIX}:{in_step}:{n}"


def prepare(
    requests: Sequence[Mapping[str, Any]], default_model: str
) -> list[tuple[str, dict[str, Any], int | None]]:
    """``(custom_id, params, estimated_input_tokens)`` of each request, in order; ``model``
    defaults to ``default_model``, a request without a ``custom_id`` gets
    ``request-<index>``; a declared ``estimated_input_tokens`` is taken out of the params."""
    if isinstance(requests, str | bytes | Mapping) or not isinstance(requests, Sequence):
        raise TypeError(
            "ctx.llm.batch takes a list of requests (Messages API params dicts, or "
            f"{{'custom_id': ..., 'params': {{...}}}}), got {type(requests).__name__}"
        )
    if not requests:
        raise ValueError("ctx.llm.batch needs at least one request")
    if len(requests) > MAX_REQUESTS:
        raise ValueError(
            f"ctx.llm.batch takes at most {MAX_REQUESTS} requests per batch, got {len(requests)}"
        )
    items: list[tuple[str, dict[str, Any], int | None]] = []
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if not isinstance(request, Mapping):
            raise TypeError(
                f"batch request {index}: a dict of Messages API params, got "
                f"{type(request).__name__}"
            )
        if "custom_id" in request or "params" in request:
            if set(request) != {"custom_id", "params"}:
                raise ValueError(
                    f"batch request {index}: a request naming its custom_id is "
                    f"{{'custom_id': ..., 'params': {{...}}}}, got keys {sorted(request)}"
                )
            custom_id, params = request["custom_id"], request["params"]
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise ValueError(
                    f"batch request {index}: custom_id must be 1 to 64 letters, digits, _ or "
                    f"-, got {custom_id!r}"
                )
            if not isinstance(params, Mapping):
                raise TypeError(
                    f"batch request {index}: params must be a dict, got {type(params).__name__}"
                )
        else:
            custom_id, params = f"request-{index}", request
        if custom_id in seen:
            raise ValueError(f"batch request {index}: custom_id {custom_id!r} used twice")
        seen.add(custom_id)
        params = dict(params)
        if params.get("stream"):
            raise ValueError(f"batch request {index}: a batch request cannot stream")
        if not params.get("model"):
            params["model"] = default_model
        try:
            declared = declared_estimate(params)  # never sent: the API would refuse it
        except ValueError as exc:
            raise ValueError(f"batch request {index}: {exc}") from None
        items.append((custom_id, params, declared))
    return items


async def batch(
    llm: LLM, requests: Sequence[Mapping[str, Any]]
) -> list[Message | BatchRequestFailed]:
    """The engine of ``ctx.llm.batch`` (see the module's docstring)."""
    items = prepare(requests, llm.default_model)
    ctx, services = llm._ctx, llm._services
    if not isinstance(services, BatchServices):
        raise RuntimeError("ctx.llm.batch needs a run executed by a taskd daemon")
    in_step = current_step.get()
    counts = _reached.setdefault(llm, {})
    n = counts[in_step] = counts.get(in_step, 0) + 1
    steps = ctx._steps_of_run()
    recorded_steps = await steps.recorded()
    used = _used.setdefault(llm, set())
    name = step_name(in_step, n)
    # the N-th batch outside steps of a run whose llm-batch:N an older taskd gave to a batch
    # in a step (it numbered every batch of an execution)
    aside = f"{_STEP_PREFIX}::{n}"
    if in_step is None and aside in recorded_steps:
        name = aside
    if name in steps.seen:
        raise StepNameRepeated(f"step name {name!r} used twice in this run")
    steps.seen.add(name)
    custom_ids = [custom_id for custom_id, _, _ in items]
    ticket: Ticket | None = None
    state: BatchState | None = None
    recorded = None if name in used else recorded_steps.get(name)
    if recorded is not None and recorded.status == "completed":
        batch_id = str(recorded.result["batch_id"])
        state = await _read(services, ctx.run_id, batch_id, name)
        if state.in_step != in_step and _LEGACY_NAME.match(name):
            state = None  # an older taskd's llm-batch:N of a batch in a step: not this one
    if state is None:
        legacy = await _legacy(llm, services, recorded_steps, in_step, custom_ids, used | {name})
        if legacy is not None:
            name, batch_id = legacy
        else:
            if name in recorded_steps or name in used:  # taken by an older taskd's batch
                name = aside
                steps.seen.add(name)
            batch_id, ticket = await _submit(llm, services, name, items)
        state = await _read(services, ctx.run_id, batch_id, name)
    used.add(name)
    if state.in_step != in_step:
        raise BatchStepMismatch(
            f"Message Batch {batch_id} recorded as step {name!r} was submitted "
            f"{_where(state.in_step)}, this ctx.llm.batch call is {_where(in_step)}: reach a "
            "run's batches in the same order on every execution"
        )
    _check(name, batch_id, state, custom_ids)
    if state.status != "ended" or state.results is None:
        raise Suspend(wall_now() + timedelta(seconds=BATCH_RECHECK))
    results = state.results
    if len(results) != len(custom_ids):
        raise BatchStepMismatch(
            f"Message Batch {batch_id} (step {name!r}) ended with {len(results)} result(s) "
            f"for {len(custom_ids)} request(s)"
        )
    if ticket is not None:  # it ended before this execution suspended: trued up already
        llm._limits.settled_elsewhere(ticket, _billed(llm, items, results))
    return [outcome_of(item) for item in results]


async def _read(services: BatchServices, run_id: uuid.UUID, batch_id: str, name: str) -> BatchState:
    state = await services.llm_batch_read(run_id, batch_id)
    if state is None:
        raise RuntimeError(f"Message Batch {batch_id} (step {name!r}) has no record")
    return state


def _where(in_step: str | None) -> str:
    return "outside any ctx.step" if in_step is None else f"in ctx.step {in_step!r}"


def _check(name: str, batch_id: str, state: BatchState, custom_ids: list[str]) -> None:
    """The recorded batch holds the requests about to be returned, else BatchStepMismatch."""
    if state.custom_ids == custom_ids:
        return
    if len(state.custom_ids) != len(custom_ids):
        differ = f"{len(state.custom_ids)} request(s) recorded, {len(custom_ids)} asked for"
    else:
        pairs = zip(state.custom_ids, custom_ids, strict=True)
        at = next(i for i, (a, b) in enumerate(pairs) if a != b)
        differ = f"request {at} is {state.custom_ids[at]!r} there, {custom_ids[at]!r} here"
    raise BatchStepMismatch(
        f"Message Batch {batch_id} recorded as step {name!r} holds other requests than this "
        f"ctx.llm.batch call ({differ}): reach a run's batches in the same order, with the "
        "same requests, on every execution (each step's batches are numbered within it)"
    )


async def _legacy(
    llm: LLM,
    services: BatchServices,
    recorded_steps: Mapping[str, Any],
    in_step: str | None,
    custom_ids: list[str],
    used: set[str],
) -> tuple[str, str] | None:
    """A batch an older taskd recorded as ``llm-batch:N``, N counted over the execution's
    batches in steps and out: adopted when it was submitted in ``in_step`` (None: outside
    steps) with these requests and no other call of this execution took its name (``used``).
    (name, batch id), or None."""
    for legacy_name, step in recorded_steps.items():
        if not _LEGACY_NAME.match(legacy_name) or legacy_name in used:
            continue
        if step.status != "completed" or not isinstance(step.result, Mapping):
            continue
        batch_id = str(step.result.get("batch_id"))
        state = await services.llm_batch_describe(llm._ctx.run_id, batch_id)
        if state is not None and state.in_step == in_step and state.custom_ids == custom_ids:
            return legacy_name, batch_id
    return None


def _billed(
    llm: LLM, items: list[tuple[str, dict[str, Any], int | None]], results: Sequence[Any]
) -> Decimal:
    """What an ended batch's requests cost at batch prices (as the poller recorded them)."""
    total = Decimal(0)
    for (_, params, _), item in zip(items, results, strict=False):
        result = item.get("result") or {}
        price = price_of(params["model"], llm._settings.prices)
        if price is None or result.get("type") != "succeeded":
            continue
        usage = Usage.of((result.get("message") or {}).get("usage") or {})
        total += cost_of(usage, price, batch=True)
    return total


async def _submit(
    llm: LLM,
    services: BatchServices,
    name: str,
    items: list[tuple[str, dict[str, Any], int | None]],
) -> tuple[str, Ticket | None]:
    """Admit the batch under the budgets, submit it (through the daemon's client, SDK retries
    off) and record it with the run's step and its reservation; a 429, 529, 5xx or lost
    connection hands the run back to the queue, a refusal fails it (``LLM.failed``)."""
    ctx = llm._ctx
    model = items[0][1]["model"]
    await llm.before(BATCHES_KEY)

    def admit(
        key: str, input: int, output: int, cost: Decimal | None, requests: int
    ) -> Awaitable[LLMAdmission]:
        return services.llm_admit_batch(ctx.queue, key, ctx.run_id, input, output, cost, requests)

    ticket = await llm._limits.admit_batch(
        [(params, declared) for _, params, declared in items], admit
    )
    call = llm._next_call()
    started, clock = wall_now(), time.perf_counter()
    client = llm.client
    body = [{"custom_id": custom_id, "params": params} for custom_id, params, _ in items]
    try:
        created = await client.messages.batches.create(requests=cast(Any, body))
    except Exception as exc:
        await llm._limits.settle(ticket, model, Usage())  # nothing submitted, nothing billed
        await llm.failed("batch", BATCHES_KEY, model, exc, started, clock, Usage(), call)
        raise  # not the API's: a bad argument the SDK refused before sending
    try:
        recorded = await services.llm_batch_record(
            ctx,
            name,
            created.id,
            current_step.get(),
            [custom_id for custom_id, _, _ in items],
            [str(params["model"]) for _, params, _ in items],
            ticket.admission_id if ticket is not None else None,
            ticket.cost if ticket is not None else Decimal(0),
        )
    except Exception as exc:
        # Submitted, recorded nowhere (the database away past the patience): no execution
        # will ever read it, and the retry submits again. Canceled now, best effort; its
        # reservation released; its id logged for an operator.
        log_event(
            log,
            logging.ERROR,
            f"Message Batch {created.id} submitted but not recorded ({type(exc).__name__}: "
            f"{exc}): canceling it",
            run_id=str(ctx.run_id),
            batch_id=created.id,
        )
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_PATIENCE):
            await services.llm_batch_cancel(created.id)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_PATIENCE):
            try:
                await llm._limits.settle(ticket, model, Usage())
            except Exception as settle_exc:  # the database still away: the window ends it
                log.warning(
                    "Message Batch %s: its reservation not released: %s", created.id, settle_exc
                )
        raise
    if not recorded:
        # canceled at once below: it processed nothing (or next to nothing) to bill
        await llm._limits.settle(ticket, model, Usage())
        # The run was taken from this attempt (canceled, or rescued after a lost lease): no
        # execution will read this batch.
        await services.llm_batch_cancel(created.id)
        raise RuntimeError(
            f"Message Batch {created.id} not recorded: the run is no longer this worker's "
            "(the batch was canceled)"
        )
    if BATCHES_KEY in llm._recovering:
        llm._recovering.discard(BATCHES_KEY)
        await llm._services.llm_recovered(BATCHES_KEY, ctx.run_id)
    return created.id, ticket


def outcome_of(item: Mapping[str, Any]) -> Message | BatchRequestFailed:
    """A stored result (``{custom_id, result}``) as the task gets it."""
    from anthropic.types import Message  # the SDK is loaded by the run's first LLM call

    custom_id = str(item.get("custom_id", "?"))
    result = item.get("result") or {}
    kind = str(result.get("type", "missing"))
    if kind == "succeeded":
        return Message.model_validate(result["message"])
    if kind == "errored":
        error = result.get("error") or {}
        inner = error.get("error", error) if isinstance(error, Mapping) else {}
        return BatchRequestFailed(
            custom_id,
            "errored",
            str(inner.get("type") or "error"),
            str(inner.get("message") or "the request failed"),
        )
    return BatchRequestFailed(custom_id, kind, kind, _REASONS.get(kind, f"the request {kind}"))

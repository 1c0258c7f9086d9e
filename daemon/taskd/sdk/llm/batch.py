"""``ctx.llm.batch(requests)``: an Anthropic Message Batch at half price, the run suspended
while it is processed.

The first execution submits ONE batch and records its id as the run's step ``llm-batch:N``
(with a row of ``taskd.llm_batches``), then suspends the run: no slot is held and no process
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

import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from taskd.errors import StepNameRepeated, TaskdError
from taskd.models import LLMAdmission
from taskd.sdk.llm.limits import Ticket, declared_estimate
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.sdk.steps import current_step
from taskd.sdk.wait import Suspend

if TYPE_CHECKING:
    from anthropic.types import Message

    from taskd.sdk.context import Context
    from taskd.sdk.llm.client import LLM

BATCHES_KEY = "message_batches"  # the Batches API's rate limit is its own, not a model's
# A run waiting on its batch is woken when the batch ends; this recheck is the backstop (a
# wake-up lost with a database that went away): the run executes again, finds the batch
# open, and suspends again.
BATCH_RECHECK = 3600.0
MAX_REQUESTS = 100_000  # the API's limit per batch
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STEP_PREFIX = "llm-batch"

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

    async def llm_batch_read(
        self, run_id: uuid.UUID, batch_id: str
    ) -> tuple[str, list[Any] | None] | None: ...

    async def llm_batch_cancel(self, batch_id: str) -> None: ...


# how many batches each execution (its ctx.llm) has reached: the N of llm-batch:N
_reached: weakref.WeakKeyDictionary[LLM, int] = weakref.WeakKeyDictionary()


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
    reached = _reached.get(llm, 0) + 1
    _reached[llm] = reached
    name = f"{_STEP_PREFIX}:{reached}"
    steps = ctx._steps_of_run()
    if name in steps.seen:
        raise StepNameRepeated(f"step name {name!r} used twice in this run")
    steps.seen.add(name)
    recorded = (await steps.recorded()).get(name)
    ticket: Ticket | None = None
    if recorded is not None and recorded.status == "completed":
        batch_id = str(recorded.result["batch_id"])
    else:
        batch_id, ticket = await _submit(llm, services, name, items)
    state = await services.llm_batch_read(ctx.run_id, batch_id)
    if state is None:
        raise RuntimeError(f"Message Batch {batch_id} (step {name!r}) has no record")
    status, results = state
    if status != "ended" or results is None:
        raise Suspend(datetime.now(UTC) + timedelta(seconds=BATCH_RECHECK))
    if ticket is not None:  # it ended before this execution suspended: trued up already
        llm._limits.settled_elsewhere(ticket, _billed(llm, items, results))
    return [outcome_of(item) for item in results]


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
    started, clock = datetime.now(UTC), time.perf_counter()
    client = llm.client
    body = [{"custom_id": custom_id, "params": params} for custom_id, params, _ in items]
    try:
        created = await client.messages.batches.create(requests=cast(Any, body))
    except Exception as exc:
        await llm._limits.settle(ticket, model, Usage())  # nothing submitted, nothing billed
        await llm.failed("batch", BATCHES_KEY, model, exc, started, clock, Usage(), call)
        raise  # not the API's: a bad argument the SDK refused before sending
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

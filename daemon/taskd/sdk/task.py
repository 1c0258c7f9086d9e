"""``@task``: turns an ``async def run(payload, ctx)`` into a TaskDefinition."""

from __future__ import annotations

import copy
import inspect
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter

from taskd.durations import Duration, to_seconds
from taskd.errors import RunFailed
from taskd.payloads import check_idempotency_keys, encode_payload
from taskd.sdk.context import Context
from taskd.sdk.current import current_client, current_context
from taskd.sdk.queues import Queue
from taskd.sdk.retry import Retry, run_policy

if TYPE_CHECKING:
    from taskd.client import Client

P = TypeVar("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"

StartHook = Callable[[Any, Context], Awaitable[None]]
SuccessHook = Callable[[Any, Any, Context], Awaitable[None]]
FailureHook = Callable[[Any, BaseException, int, Context], Awaitable[None]]
CancelHook = Callable[[Any, Context], Awaitable[None]]


class TaskDefinition(Generic[P, R]):
    """A registered task: its function, policies and hooks, plus typed trigger handles."""

    def __init__(
        self,
        fn: Callable[[P, Context], Awaitable[R]],
        *,
        id: str,
        retry: Retry,
        max_duration: float | None,
        queue: Queue,
        on_start: StartHook | None = None,
        on_success: SuccessHook | None = None,
        on_failure: FailureHook | None = None,
        on_cancel: CancelHook | None = None,
        on_event: Sequence[str] = (),
        budget_usd: float | None = None,
        version: str | None = None,
    ) -> None:
        self.fn = fn
        self.budget_usd = budget_usd
        # the code's version as @task(version=...) gave it (None: the deployment's, [worker]
        # version); runs record the version that first started them (see worker/versions.py)
        self.version = version
        self.events = tuple(on_event)
        self.schedule: Any = None  # a ScheduleSpec when declared with @schedules.task
        self.id = id
        self.retry = retry
        self.max_duration = max_duration
        # what @task was given (None: not given): the project's defaults fill the rest
        self.own_retry: Retry | None = retry
        self.own_max_duration: float | None = max_duration
        self.queue = queue
        self.on_start_hook = on_start
        self.on_success_hook = on_success
        self.on_failure_hook = on_failure
        self.on_cancel_hook = on_cancel
        self.payload_adapter = _payload_adapter(fn)
        self.output_adapter = _output_adapter(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", id)

    def __repr__(self) -> str:
        return f"<task {self.id!r} queue={self.queue.name!r}>"

    def with_defaults(
        self, retry: Retry | None, max_duration: float | None
    ) -> TaskDefinition[P, R]:
        """This task as a daemon with these project defaults (``[tasks] retry`` and
        ``max_duration``) runs it: its own ``retry``/``max_duration`` where it set them, the
        defaults where it did not. A copy: the definition itself is left as declared."""
        resolved = copy.copy(self)
        resolved.retry = self.own_retry or retry or Retry()
        resolved.max_duration = (
            self.own_max_duration if self.own_max_duration is not None else max_duration
        )
        return resolved

    async def __call__(self, payload: P, ctx: Context) -> R:
        """Call the function directly (tests, composition); no run is created."""
        return await self.fn(payload, ctx)

    def parse_payload(self, raw: Any) -> Any:
        """Validate a stored payload against the function's annotation (pydantic)."""
        if self.payload_adapter is None:
            return raw
        return self.payload_adapter.validate_python(raw)

    # hooks as decorators: @my_task.on_failure ------------------------------------------------

    def on_start(self, hook: StartHook) -> StartHook:
        """Decorator: ``hook(payload, ctx)`` runs before each attempt."""
        self.on_start_hook = hook
        return hook

    def on_success(self, hook: SuccessHook) -> SuccessHook:
        """Decorator: ``hook(payload, output, ctx)`` runs after the task function returned."""
        self.on_success_hook = hook
        return hook

    def on_failure(self, hook: FailureHook) -> FailureHook:
        """Decorator: ``hook(payload, error, attempts, ctx)`` runs once, when the run has failed
        for good (the dead-letter hook); ``error`` is a FailedOutsideAttempt when the run
        failed outside its code (worker lost, unknown task, output not stored)."""
        self.on_failure_hook = hook
        return hook

    def on_cancel(self, hook: CancelHook) -> CancelHook:
        """Decorator: ``hook(payload, ctx)`` runs when a cancel request stops a running
        attempt (the same as ``@task(on_cancel=...)``)."""
        self.on_cancel_hook = hook
        return hook

    # typed producers ------------------------------------------------------------------------

    async def trigger(
        self,
        payload: P,
        *,
        client: Client | None = None,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
        tags: Sequence[str] = (),
        ttl: Duration | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: Duration = "24h",
        concurrency_key: str | None = None,
        connection: Any = None,
    ) -> uuid.UUID:
        """Create a run of this task; returns its id. See ``Client.trigger``."""
        return await (client or current_client()).trigger(
            self,
            payload,
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            max_duration=max_duration,
            tags=tags,
            ttl=ttl,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            concurrency_key=concurrency_key,
            connection=connection,
        )

    async def batch_trigger(
        self,
        payloads: Sequence[P],
        *,
        client: Client | None = None,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
        tags: Sequence[str] = (),
        ttl: Duration | None = None,
        concurrency_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: Duration = "24h",
        connection: Any = None,
    ) -> list[uuid.UUID]:
        """Create one run per payload in one statement; returns their ids in order."""
        return await (client or current_client()).batch_trigger(
            self,
            payloads,
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            max_duration=max_duration,
            tags=tags,
            ttl=ttl,
            concurrency_key=concurrency_key,
            idempotency_keys=idempotency_keys,
            idempotency_ttl=idempotency_ttl,
            connection=connection,
        )

    async def trigger_and_wait(
        self,
        payload: P,
        *,
        tags: Sequence[str] = (),
        max_attempts: int | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: Duration = "24h",
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
    ) -> R:
        """From inside a task: run this task as a child and return its output.

        The parent suspends (WAITING, its slot freed) until the child ends, and resumes by
        executing again: the child is created once per call site, even when the parent is
        replayed. A child that fails, is canceled or expires raises RunFailed with its error.
        """
        [result] = await self.batch_trigger_and_wait(
            [payload],
            tags=tags,
            max_attempts=max_attempts,
            queue=queue,
            concurrency_key=concurrency_key,
            idempotency_keys=[idempotency_key] if idempotency_key is not None else None,
            idempotency_ttl=idempotency_ttl,
            retry=retry,
            max_duration=max_duration,
        )
        if isinstance(result, RunFailed):
            raise result
        return result

    async def batch_trigger_and_wait(
        self,
        payloads: Sequence[P],
        *,
        tags: Sequence[str] = (),
        max_attempts: int | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: Duration = "24h",
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
    ) -> list[R | RunFailed]:
        """From inside a task: one child per payload; once every child has ended, their
        outputs in order, with a RunFailed (not raised) for each child that did not complete.

        ``idempotency_keys`` (one per payload, None for none): a child whose key another run
        of this task holds is not created; that run is waited for instead.
        """
        attempts, backoff, duration = run_policy(max_attempts, retry, max_duration)
        values = [orjson.loads(encode_payload(p, 2**62)) for p in payloads]  # as JSON values
        results = await current_context().run_children(
            self.id,
            queue or self.queue.name,
            values,
            list(tags),
            attempts,
            concurrency_key,
            check_idempotency_keys(idempotency_keys, len(values)),
            to_seconds(idempotency_ttl),
            backoff,
            duration,
        )
        if self.output_adapter is None:
            return results
        # outputs are stored as JSON: the child's return annotation (a pydantic model...)
        # gives the parent the value the child returned
        adapter = self.output_adapter
        return [r if isinstance(r, RunFailed) else adapter.validate_python(r) for r in results]


def task(
    *,
    id: str,
    retry: Retry | None = None,
    max_duration: Duration | None = None,
    queue: Queue | str | None = None,
    on_start: StartHook | None = None,
    on_success: SuccessHook | None = None,
    on_failure: FailureHook | None = None,
    on_cancel: CancelHook | None = None,
    on_event: str | Sequence[str] = (),
    budget_usd: float | None = None,
    version: str | None = None,
) -> Callable[[Callable[[P, Context], Awaitable[R]]], TaskDefinition[P, R]]:
    """Declare a task.

    ``id`` names it in every producer; ``retry`` governs failed attempts (not given: the
    project's ``[tasks] retry``, by default ``Retry()``: 3 attempts); ``max_duration``
    (seconds or "5m"; not given: ``[tasks] max_duration``, by default none) cancels an attempt
    that runs longer and counts it as failed. A trigger's ``retry=``/``max_duration=``
    override both for its run; ``queue`` groups tasks for routing. Hooks: ``on_start(payload,
    ctx)``, ``on_success(payload, output, ctx)``, ``on_failure(payload, error, attempts, ctx)``
    (called once, when the run has failed for good: the dead-letter hook), ``on_cancel(payload,
    ctx)`` (when a cancel request stops a running attempt). ``on_event``: an event name (or
    several) whose every ``send_event`` starts a run of this task with the event's payload.
    ``budget_usd``: the most a run may spend on LLM calls made through ``ctx.llm`` (over all
    its attempts); a call that would pass it is not sent and the run fails (BudgetExceeded).
    ``version``: this code's version of the task (not given: the deployment's, ``[worker]
    version``); a run records the version that first started it, and a started run with
    recorded steps is executed again only by a daemon serving that version (see the README's
    "Versions").
    """
    if not isinstance(id, str) or not id.strip():
        raise ValueError("@task needs a non-empty id")
    resolved_queue = Queue(queue) if isinstance(queue, str) else (queue or Queue(DEFAULT_QUEUE))
    duration = to_seconds(max_duration) if max_duration is not None else None
    events = (on_event,) if isinstance(on_event, str) else tuple(on_event)
    if any(not isinstance(e, str) or not e.strip() for e in events):
        raise ValueError(f"task {id!r}: on_event names must be non-empty strings")
    if duration is not None and duration <= 0:
        raise ValueError(f"task {id!r}: max_duration must be positive")
    if budget_usd is not None and (
        isinstance(budget_usd, bool)
        or not isinstance(budget_usd, int | float)
        or not 0 < budget_usd < float("inf")
    ):
        raise ValueError(f"task {id!r}: budget_usd must be a positive number of dollars")
    if version is not None and (
        not isinstance(version, str) or not version.strip() or len(version) > 200
    ):
        raise ValueError(
            f"task {id!r}: version must be a non-empty string of at most 200 characters"
        )

    def decorate(fn: Callable[[P, Context], Awaitable[R]]) -> TaskDefinition[P, R]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"task {id!r}: the function must be `async def` (run blocking code with "
                "`await anyio.to_thread.run_sync(...)`)"
            )
        definition = TaskDefinition(
            fn,
            id=id,
            retry=retry or Retry(),
            max_duration=duration,
            queue=resolved_queue,
            on_start=on_start,
            on_success=on_success,
            on_failure=on_failure,
            on_cancel=on_cancel,
            on_event=events,
            budget_usd=float(budget_usd) if budget_usd is not None else None,
            version=version.strip() if version is not None else None,
        )
        definition.own_retry = retry
        return definition

    return decorate


def _output_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """A validator for the return annotation (outputs are stored as JSON: a parent gets the
    child's model back through it), or None when there is none to apply."""
    try:
        annotation = typing.get_type_hints(fn).get("return", inspect.Parameter.empty)
    except Exception:
        return None
    if annotation in (inspect.Parameter.empty, Any, object, None, type(None)):
        return None
    try:
        return TypeAdapter(annotation)
    except Exception:  # a type pydantic cannot validate: the JSON as stored
        return None


def _payload_adapter(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """A validator for the first parameter's annotation, or None when it has none (or Any)."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError("a task function takes (payload, ctx)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be resolved: validate nothing
        return None
    annotation = hints.get(params[0].name, inspect.Parameter.empty)
    if annotation in (inspect.Parameter.empty, Any, object):
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return TypeAdapter(annotation)
    return TypeAdapter(annotation)

"""Runs one attempt of one run and decides what happens next. No SQL here.

The result is an Outcome for the completer: the run completes, fails for good, or goes back
to the queue for a retry after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from taskd import clock
from taskd.errors import AbortRun, OutcomeNotStored
from taskd.logs import log_event
from taskd.models import AttemptOutcome, ClaimedRun, Outcome, RunStatus
from taskd.sdk.context import Context, RunServices
from taskd.sdk.current import reset_current_context, set_current_context
from taskd.sdk.retry import Retry, retry_after
from taskd.sdk.task import TaskDefinition
from taskd.sdk.wait import Suspend
from taskd.storable import NotStorable, encode_storable, escaped_text

log = logging.getLogger("taskd.executor")

TRACEBACK_LIMIT = 8_000
DEFAULT_MAX_OUTPUT_BYTES = 1_048_576  # [tasks] max_output_bytes
# A server asking for more than a week is treated as asking for a week.


class MaxDurationExceeded(Exception):
    """The attempt ran longer than the task's ``max_duration``."""


def describe(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` itself raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() raised>"


def encode_error(exc: BaseException, *, with_traceback: bool = True) -> bytes:
    """The JSON stored as an attempt's (and run's) error. Its text is escaped (NUL, lone
    surrogates): a parser's message quoting bad input must be stored like any other, not
    turn a failure the run retries into an outcome the database refuses."""
    text = None
    if with_traceback and exc.__traceback__ is not None:
        try:
            text = escaped_text("".join(traceback.format_exception(exc)))[-TRACEBACK_LIMIT:]
        except Exception:
            text = None
    return orjson.dumps(
        {
            "type": escaped_text(type(exc).__name__),
            "message": escaped_text(describe(exc)),
            "traceback": text,
        }
    )


def _to_json_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"output of type {type(value).__name__} is not JSON-serialisable")


def encode_output(value: Any, limit: int = DEFAULT_MAX_OUTPUT_BYTES) -> bytes:
    """The output as JSON for the run, or OutcomeNotStored (an AbortRun: the function has
    returned, and running it again would repeat its work for the same verdict)."""
    try:
        return encode_storable(value, _to_json_value, limit, "max_output_bytes")
    except NotStorable as exc:
        raise OutcomeNotStored(
            f"the run's output could not be stored ({exc}); the run fails without running again"
        ) from None


async def execute(
    run: ClaimedRun, definition: TaskDefinition[Any, Any], services: RunServices | None = None
) -> Outcome:
    """Run one attempt: validate, hooks, the function under max_duration, then the verdict.

    Cancellation (shutdown, cancel) propagates to the caller, which hands the run back.
    """
    # the trigger's own (the run's retry and max_duration) over the task's, which the daemon
    # resolved with the project's defaults
    try:
        retry = definition.retry.overridden(run.retry)
    except (TypeError, ValueError) as exc:  # a row written around taskd.trigger's checks
        log_event(
            log,
            logging.WARNING,
            f"the run's retry is not usable, the task's applies: {exc}",
            run_id=str(run.id),
            task=run.task_id,
        )
        retry = definition.retry
    max_attempts = run.max_attempts or retry.max_attempts
    max_duration = run.max_duration if run.max_duration is not None else definition.max_duration
    try:
        payload = definition.parse_payload(run.payload)
    except Exception as exc:  # ValidationError, or a validator of the user's that raised
        # A payload that does not fit the task never will: fail now, no retry.
        ctx = _context(run, run.payload, max_attempts, services)
        return await _fail_for_good(run, definition, ctx, exc, AttemptOutcome.FAILED)
    ctx = _context(run, payload, max_attempts, services, definition.budget_usd)

    # No limit, no timeout context: entering and leaving one costs ~2 us, a twentieth of the
    # daemon's CPU for a no-op run.
    timeout = asyncio.timeout(max_duration) if max_duration is not None else None
    context_token = set_current_context(ctx)
    try:
        if definition.on_start_hook is not None:
            await definition.on_start_hook(payload, ctx)
        if timeout is None:
            result = await definition.fn(payload, ctx)
        else:
            async with timeout:
                result = await definition.fn(payload, ctx)
        output = encode_output(result, _output_limit(services))
    except Suspend as suspended:
        return _suspended(run, suspended)
    except BaseExceptionGroup as group:
        # Concurrent code in the task (a task group of LLM calls, say) wraps what its children
        # raised: a wait for the API stays a wait, a refusal stays final.
        decisive = _decisive(group)
        if isinstance(decisive, AbortRun):
            return await _fail_for_good(run, definition, ctx, decisive, AttemptOutcome.FAILED)
        if isinstance(decisive, Suspend):
            return _suspended(run, decisive)
        return await _failed_attempt(run, definition, ctx, group, AttemptOutcome.FAILED, retry)
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is None or current.cancelling() == 0:
            # Nobody cancelled this task: the task's code raised CancelledError itself (an
            # awaited future a library cancelled, say). A failed attempt like any other.
            return await _failed_attempt(run, definition, ctx, exc, AttemptOutcome.FAILED, retry)
        if not run.cancel_requested:
            raise  # a drain (or a superseded attempt): in_flight decides
        current.uncancel()  # the cancel is handled here: the hook may await
        return await _canceled(run, definition, ctx)
    except AbortRun as exc:
        return await _fail_for_good(run, definition, ctx, exc, AttemptOutcome.FAILED)
    except TimeoutError as exc:
        if timeout is None or not timeout.expired():
            return await _failed_attempt(run, definition, ctx, exc, AttemptOutcome.FAILED, retry)
        exceeded = MaxDurationExceeded(f"attempt exceeded max_duration of {max_duration:g}s")
        return await _failed_attempt(
            run, definition, ctx, exceeded, AttemptOutcome.TIMED_OUT, retry
        )
    except BaseException as exc:
        return await _failed_attempt(run, definition, ctx, exc, AttemptOutcome.FAILED, retry)
    finally:
        reset_current_context(context_token)

    if definition.on_success_hook is not None:
        try:
            await definition.on_success_hook(payload, result, ctx)
        except asyncio.CancelledError:
            # The attempt has completed: a shutdown landing in the hook must not hand the run
            # back to run again. The outcome is returned; the run's task ends right after.
            ctx.log.warning("on_success hook interrupted by shutdown; the run stays completed")
        except BaseException:  # a hook never changes a completed outcome
            ctx.log.exception("on_success hook raised; the run stays completed")
    log_event(
        log,
        logging.DEBUG,
        "run completed",
        run_id=str(run.id),
        task=run.task_id,
        attempt=run.attempt,
    )
    return Outcome(run.id, run.attempt, RunStatus.COMPLETED, AttemptOutcome.COMPLETED, output)


def _suspended(run: ClaimedRun, suspended: Suspend) -> Outcome:
    """A long wait: the attempt ends without being spent; the run sleeps in the database."""
    delay = max(0.0, (suspended.wake_at - clock.now()).total_seconds())
    log_event(
        log,
        logging.DEBUG,
        f"run suspended until {suspended.wake_at.isoformat()}",
        run_id=str(run.id),
        task=run.task_id,
        attempt=run.attempt,
    )
    return Outcome(
        run.id, run.attempt, RunStatus.WAITING, AttemptOutcome.COMPLETED, None, None, delay
    )


def _decisive(group: BaseExceptionGroup[BaseException]) -> Suspend | AbortRun | None:
    """What decides a group's outcome: its first AbortRun (the run fails for good), else,
    when it holds only suspensions, the latest of them (the run waits until every one of
    its waits is over), else None (an ordinary failure)."""
    aborts, _ = group.split(AbortRun)
    if aborts is not None:
        return _leaves(aborts)[0]  # type: ignore[return-value]
    suspends, rest = group.split(Suspend)
    if suspends is None or rest is not None:
        return None
    waits = [leaf for leaf in _leaves(suspends) if isinstance(leaf, Suspend)]
    return max(waits, key=lambda wait: wait.wake_at)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def unstorable(outcome: Outcome, exc: BaseException) -> Outcome:
    """The outcome to write instead of one the database refused (e.g. an output it rejects)."""
    message = escaped_text(
        f"the run's outcome could not be stored, the database refused it: {describe(exc)}"
    )
    error = orjson.dumps({"type": "OutcomeNotStored", "message": message})
    return Outcome(
        outcome.run_id,
        outcome.attempt,
        RunStatus.FAILED,
        AttemptOutcome.FAILED,
        None,
        error,
        replaces_refused=True,
        owes_failure_hook=True,
    )


def canceled_before_start(run: ClaimedRun) -> Outcome:
    """A run whose cancel request arrived before its attempt's first step."""
    error = orjson.dumps({"type": "Canceled", "message": "canceled by request before it ran"})
    return Outcome(run.id, run.attempt, RunStatus.CANCELED, AttemptOutcome.CANCELED, None, error)


def crashed(run: ClaimedRun, exc: BaseException) -> Outcome:
    """The outcome of an attempt whose handling itself failed (a defect, not the task's)."""
    error = orjson.dumps(
        {"type": "ExecutorError", "message": escaped_text(f"{type(exc).__name__}: {describe(exc)}")}
    )
    return Outcome(
        run.id,
        run.attempt,
        RunStatus.FAILED,
        AttemptOutcome.FAILED,
        None,
        error,
        owes_failure_hook=True,
    )


async def _canceled(run: ClaimedRun, definition: TaskDefinition[Any, Any], ctx: Context) -> Outcome:
    log_event(
        log, logging.INFO, "run canceled", run_id=str(run.id), task=run.task_id, attempt=run.attempt
    )
    if definition.on_cancel_hook is not None:
        try:
            await definition.on_cancel_hook(ctx.payload, ctx)
        except asyncio.CancelledError:  # a shutdown during the hook: the run is canceled anyway
            ctx.log.warning("on_cancel hook interrupted by shutdown")
        except BaseException:
            ctx.log.exception("on_cancel hook raised")
    error = orjson.dumps({"type": "Canceled", "message": "canceled by request"})
    return Outcome(run.id, run.attempt, RunStatus.CANCELED, AttemptOutcome.CANCELED, None, error)


def _output_limit(services: RunServices | None) -> int:
    return services.max_output_bytes if services is not None else DEFAULT_MAX_OUTPUT_BYTES


def _context(
    run: ClaimedRun,
    payload: Any,
    max_attempts: int,
    services: RunServices | None,
    budget_usd: float | None = None,
) -> Context:
    return Context(
        run_id=run.id,
        task_id=run.task_id,
        attempt=run.attempt,
        max_attempts=max_attempts,
        payload=payload,
        queue=run.queue,
        tags=run.tags,
        metadata=run.metadata,
        log_lines=run.log_lines,
        services=services,
        wait_threshold=services.wait_threshold if services is not None else 5.0,
        concurrency_key=run.concurrency_key or None,
        budget_usd=budget_usd,
    )


async def _failed_attempt(
    run: ClaimedRun,
    definition: TaskDefinition[Any, Any],
    ctx: Context,
    exc: BaseException,
    attempt_outcome: AttemptOutcome,
    retry: Retry,
) -> Outcome:
    if ctx.attempt >= ctx.max_attempts:
        return await _fail_for_good(run, definition, ctx, exc, attempt_outcome)
    delay = retry_after(exc)
    if delay is None:
        delay = retry.delay_after(ctx.attempt)
    log_event(
        log,
        logging.WARNING,
        f"attempt failed, retrying in {delay:.3g}s: {type(exc).__name__}: {describe(exc)}",
        run_id=str(run.id),
        task=run.task_id,
        attempt=run.attempt,
        max_attempts=ctx.max_attempts,
    )
    return Outcome(
        run.id, run.attempt, RunStatus.QUEUED, attempt_outcome, None, encode_error(exc), delay
    )


async def _fail_for_good(
    run: ClaimedRun,
    definition: TaskDefinition[Any, Any],
    ctx: Context,
    exc: BaseException,
    attempt_outcome: AttemptOutcome,
) -> Outcome:
    with_traceback = not isinstance(exc, ValidationError | AbortRun)
    log_event(
        log,
        logging.ERROR,
        f"run failed: {type(exc).__name__}: {describe(exc)}",
        run_id=str(run.id),
        task=run.task_id,
        attempt=run.attempt,
    )
    if definition.on_failure_hook is not None:
        try:
            await definition.on_failure_hook(ctx.payload, exc, run.attempt, ctx)
        except asyncio.CancelledError:  # the run has failed for good: record it anyway
            ctx.log.warning("on_failure hook interrupted by shutdown")
        except BaseException:  # the run has failed either way
            ctx.log.exception("on_failure hook raised")
    return Outcome(
        run.id,
        run.attempt,
        RunStatus.FAILED,
        attempt_outcome,
        None,
        encode_error(exc, with_traceback=with_traceback),
    )

"""``ctx.step``: durable steps, recorded once per run and never recomputed for it.

The first time a run reaches a step, its function is called (with the step's own retry
policy) and its JSON result recorded; every later execution of the run (a retry, a resume
after a wait, a restart after a crash) gets the recorded result back without the call. The
value returned is the JSON round trip of the function's result either way, so the code after
a step sees the same thing on the first execution and on a replay.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

import anyio
import orjson
from pydantic import BaseModel

from taskd import clock
from taskd.errors import AbortRun, StepNameRepeated, StepResultNotStored
from taskd.logs import log_event
from taskd.models import Step
from taskd.sdk.retry import Retry, retry_after
from taskd.storable import NotStorable, encode_storable, escaped_text

log = logging.getLogger("taskd.step")


DEFAULT_MAX_RESULT_BYTES = 1_048_576

current_step: ContextVar[str | None] = ContextVar("taskd_current_step", default=None)
"""The step whose function is running (what an LLM call made in it is attributed to)."""


class StepStore(Protocol):
    """What steps need from the daemon (see taskd.worker.run_services). ``record_step``
    raises NotStorable when the database refuses the result itself."""

    max_output_bytes: int

    async def load_steps(self, run_id: uuid.UUID) -> dict[str, Step]: ...

    async def record_step(
        self,
        run_id: uuid.UUID,
        name: str,
        attempt: int,
        *,
        status: str,
        result: str | None,
        error: str | None,
        tries: int,
        started_at: datetime,
    ) -> bool: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"a step result of type {type(value).__name__} is not JSON-serialisable")


class Steps:
    """The steps of one execution of a run (one per attempt's context)."""

    def __init__(self, run_id: uuid.UUID, attempt: int, store: StepStore | None) -> None:
        self._run_id = run_id
        self._attempt = attempt
        self._store = store
        self._recorded: dict[str, Step] | None = None
        self._loading = anyio.Lock()
        self.seen: set[str] = set()

    async def run(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any] | Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retry: Retry | None,
    ) -> Any:
        if not isinstance(name, str) or not name:
            raise ValueError("a step needs a non-empty name")
        if name in self.seen:
            raise StepNameRepeated(
                f"step name {name!r} used twice in this run: step names identify recorded "
                f"results, so a step called in a loop needs an index in its name "
                f'(f"{name}-{{i}}")'
            )
        self.seen.add(name)
        recorded = (await self._load()).get(name)
        if recorded is not None and recorded.status == "completed":
            return recorded.result
        if recorded is not None and _not_stored(recorded):
            # Its function returned once already: the task caught the error and went on.
            raise StepResultNotStored((recorded.error or {}).get("message", ""))
        policy = retry or Retry(max_attempts=1)
        started_at = clock.now()
        tries = 0
        while True:
            tries += 1
            step_token = current_step.set(name)
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                if tries < policy.max_attempts and not isinstance(exc, AbortRun):
                    # the step sleeps in its slot: a server's retry_after counts, as for runs
                    honoured = retry_after(exc)
                    delay = policy.delay_after(tries) if honoured is None else honoured
                    log_event(
                        log,
                        logging.WARNING,
                        f"step {name!r} failed (try {tries} of {policy.max_attempts}), "
                        f"retrying in {delay:.3g}s: {type(exc).__name__}: {exc}",
                        run_id=str(self._run_id),
                        step=name,
                    )
                    await clock.sleep(delay, in_run=True)
                    continue
                await self._record(name, "failed", None, _error(exc), tries, started_at)
                raise
            finally:
                current_step.reset(step_token)
            break
        # The function has returned: its side effect (a charge, an email) happened, so
        # whatever becomes of its result, it is not called again for this run.
        limit = self._store.max_output_bytes if self._store else DEFAULT_MAX_RESULT_BYTES
        try:
            encoded = encode_storable(value, _json_default, limit, "max_output_bytes")
            await self._record(name, "completed", encoded.decode(), None, tries, started_at)
        except NotStorable as exc:
            error = StepResultNotStored(
                f"step {name!r} returned a value that cannot be stored ({exc}); the step is "
                "not called again and the run fails"
            )
            await self._record_not_stored(name, error, tries, started_at)
            raise error from None
        return orjson.loads(encoded)

    async def recorded(self) -> dict[str, Step]:
        return await self._load()

    async def _load(self) -> dict[str, Step]:
        if self._recorded is None:
            async with self._loading:
                if self._recorded is None:
                    self._recorded = (
                        await self._store.load_steps(self._run_id) if self._store else {}
                    )
        return self._recorded

    async def _record_not_stored(
        self, name: str, error: StepResultNotStored, tries: int, started_at: datetime
    ) -> None:
        """Record the step as failed for good, so that no later execution of the run calls
        it (a task may catch the error, and fail or wait after it). Best effort: the run
        fails for good anyway."""
        try:
            await self._record(name, "failed", None, _error(error), tries, started_at)
        except Exception as exc:
            log_event(
                log,
                logging.WARNING,
                f"step {name!r} could not be recorded as not stored: {type(exc).__name__}",
                run_id=str(self._run_id),
                step=name,
            )

    async def _record(
        self,
        name: str,
        status: str,
        result: str | None,
        error: str | None,
        tries: int,
        started_at: datetime,
    ) -> None:
        if self._store is None:
            return
        written = await self._store.record_step(
            self._run_id,
            name,
            self._attempt,
            status=status,
            result=result,
            error=error,
            tries=tries,
            started_at=started_at,
        )
        if not written:
            log_event(
                log,
                logging.WARNING,
                f"step {name!r} not recorded: the run is no longer this worker's attempt",
                run_id=str(self._run_id),
                step=name,
            )


def _error(exc: BaseException) -> str:
    """A failed step's error as JSON; its text escaped so that jsonb takes it (a NUL in a
    parser's message must not turn a failure the run retries into one it cannot store)."""
    try:
        message = str(exc)
    except Exception:
        message = f"<{type(exc).__name__}: str() raised>"
    error = {"type": escaped_text(type(exc).__name__), "message": escaped_text(message)}
    return orjson.dumps(error).decode()


def _not_stored(step: Step) -> bool:
    return step.status == "failed" and (step.error or {}).get("type") == "StepResultNotStored"

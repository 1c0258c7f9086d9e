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
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import orjson
from pydantic import BaseModel

from daemon.errors import StepNameRepeated
from daemon.logs import log_event
from daemon.models import Step
from daemon.sdk.retry import Retry, retry_after

log = logging.getLogger("taskd.step")


class StepStore(Protocol):
    """What steps need from the daemon (see daemon.worker.run_services)."""

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
        policy = retry or Retry(max_attempts=1)
        started_at = datetime.now(UTC)
        tries = 0
        while True:
            tries += 1
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
                encoded = orjson.dumps(value, default=_json_default)
            except Exception as exc:
                if tries < policy.max_attempts:
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
                    await anyio.sleep(delay)
                    continue
                error = orjson.dumps({"type": type(exc).__name__, "message": str(exc)})
                await self._record(name, "failed", None, error.decode(), tries, started_at)
                raise
            await self._record(name, "completed", encoded.decode(), None, tries, started_at)
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

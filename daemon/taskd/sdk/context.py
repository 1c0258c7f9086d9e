"""``ctx``: what a running task knows about its run."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio

from taskd import clock
from taskd.errors import RunFailed, StepNameRepeated, TokenNotFound, WaitTimeout
from taskd.logs import RunLogger
from taskd.models import RunStatus
from taskd.sdk.llm.client import LLM
from taskd.sdk.llm.services import LLMServices
from taskd.sdk.retry import Retry
from taskd.sdk.steps import Steps, StepStore
from taskd.sdk.wait import Suspend, WaitToken, sleep_until

CHILDREN_RECHECK = 60.0  # seconds: a waiting parent looks at its children at least this often
TOKEN_RECHECK = 1.0  # seconds: a run looks again at a token another transaction is completing

task_logger = logging.getLogger("taskd.task")


class RunServices(StepStore, LLMServices, Protocol):
    """What a context needs from the daemon running it (see taskd.worker.run_services)."""

    wait_threshold: float
    """Waits longer than this (seconds) suspend the run."""

    async def set_metadata(self, ctx: Context, values: dict[str, Any]) -> dict[str, Any]: ...

    async def token_create(
        self, token_id: uuid.UUID, run_id: uuid.UUID, lifetime: float
    ) -> datetime: ...

    async def token_await(
        self, token_id: uuid.UUID, run_id: uuid.UUID
    ) -> dict[str, Any] | None: ...

    async def children_create(
        self,
        ctx: Context,
        step_name: str,
        task_id: str,
        queue: str | None,
        payloads: list[Any],
        tags: list[str],
        max_attempts: int | None,
        concurrency_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: float = 0.0,
        retry: dict[str, Any] | None = None,
        max_duration: float | None = None,
    ) -> list[uuid.UUID]: ...

    async def children_results(
        self, run_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any]]: ...

    async def token_time_out(self, token_id: uuid.UUID, run_id: uuid.UUID) -> bool: ...

    def store_log(self, ctx: Context, level: int, message: str, fields: dict[str, Any]) -> None: ...


class Context:
    """Passed to every task function as its second argument.

    ``run_id``, ``task_id``, ``attempt`` (1-based), ``max_attempts``, ``payload`` (validated),
    ``tags``, ``queue``, ``metadata`` (what ``set_metadata`` stored), and ``log``: a logger
    whose lines carry run id, task and attempt, and are stored with the run.
    """

    __slots__ = (
        "_children",
        "_llm",
        "_log",
        "_metadata",
        "_metadata_lock",
        "_services",
        "_steps",
        "_tokens",
        "_waits",
        "attempt",
        "budget_usd",
        "concurrency_key",
        "log_lines",
        "max_attempts",
        "payload",
        "queue",
        "run_id",
        "tags",
        "task_id",
        "wait_threshold",
    )

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        task_id: str,
        attempt: int,
        max_attempts: int,
        payload: Any,
        queue: str,
        tags: list[str],
        metadata: dict[str, Any] | None = None,
        log_lines: int = 0,
        services: RunServices | None = None,
        wait_threshold: float = 5.0,
        concurrency_key: str | None = None,
        budget_usd: float | None = None,
    ) -> None:
        self.run_id = run_id
        """The run's id (a UUIDv7)."""
        self.task_id = task_id
        """The task's id."""
        self.attempt = attempt
        """This attempt's number, from 1."""
        self.max_attempts = max_attempts
        """The run's attempt limit (the trigger's, else the task's retry policy)."""
        self.payload = payload
        """The payload, validated against the task function's annotation."""
        self.queue = queue
        """The queue the run was claimed from."""
        self.tags = tags
        """The trigger's tags."""
        self.concurrency_key = concurrency_key
        """The trigger's concurrency key (the tenant), or None."""
        self.budget_usd = budget_usd
        """The run's LLM budget in dollars (``@task(budget_usd=...)``), or None."""
        self._llm: LLM | None = None
        self._metadata: dict[str, Any] = dict(metadata or {})
        self._metadata_lock: anyio.Lock | None = None
        self.log_lines = log_lines
        """Log lines stored for this run so far (all attempts): the per-run cap counts them."""
        self._services = services
        self._steps: Steps | None = None
        self._waits = 0
        self._tokens = 0
        self._children = 0
        self.wait_threshold = wait_threshold
        """Waits longer than this (seconds) suspend the run; shorter ones sleep in its slot."""
        self._log: RunLogger | None = None

    @property
    def log(self) -> RunLogger:
        """A logger (``ctx.log.info("sent", to=address)``): its lines carry the run id, task
        and attempt, go to the daemon's log, and are stored with the run (``taskd logs``),
        keyword arguments as fields."""
        if self._log is None:  # built on first use: most no-op runs never log
            sink = self._store_log if self._services is not None else None
            self._log = RunLogger(
                task_logger, str(self.run_id), self.task_id, self.attempt, sink=sink
            )
        return self._log

    def _store_log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        assert self._services is not None
        self._services.store_log(self, level, message, fields)

    @property
    def llm(self) -> LLM:
        """The official Anthropic client (``anthropic.AsyncAnthropic``), wrapped: ``await
        ctx.llm.messages.create(model=..., max_tokens=..., messages=[...])``. Each call is
        recorded with the run, step and task (tokens, cost); 429s, overloads and connection
        errors hand the run back to the queue without spending an attempt; a refused request
        fails the run (LLMRequestRefused). Configured by ``[llm]``."""
        if self._llm is None:
            if self._services is None:
                raise RuntimeError("ctx.llm needs a run executed by a taskd daemon")
            self._llm = LLM(self, self._services)
        return self._llm

    @property
    def metadata(self) -> dict[str, Any]:
        """The run's metadata (a copy): what earlier ``set_metadata`` calls stored, also in
        earlier attempts."""
        return dict(self._metadata)

    async def set_metadata(self, **values: Any) -> None:
        """Merge ``values`` into the run's metadata (by key) and store it now.

        Readable while the run executes, through ``client.get_run``, ``/api/runs/{id}`` and
        ``/api/stream``: ``await ctx.set_metadata(progress=0.4, stage="claude")``. Values must
        be JSON-serialisable (TypeError) and hold no NUL character (ValueError); the merged
        object is capped by ``[tasks] max_metadata_bytes`` (MetadataTooLarge). A refused call
        stores nothing. Each call is one write: call it at meaningful steps, not per item of a
        tight loop.
        """
        if self._services is None:
            self._metadata.update(values)  # a context outside a daemon (tests of task code)
            return
        if not values:
            return
        if self._metadata_lock is None:
            self._metadata_lock = anyio.Lock()
        # One call at a time: each merges into (and caps) what the previous one stored, also
        # when a task sets metadata from concurrent coroutines.
        async with self._metadata_lock:
            self._metadata = await self._services.set_metadata(self, values)

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: Retry | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once per run and return its JSON result.

        The result is recorded; when the run executes again (a retry, a resume after a wait,
        a restart after a crash) the recorded result is returned without calling ``fn``. The
        value returned is the JSON form of the result (a pydantic model comes back as a dict)
        on the first execution too. ``retry``: the step's own policy (default: one try; the
        run's retry policy then applies). A step whose tries are exhausted raises its error
        (the attempt fails) and is called again by the next attempt. A result that cannot
        be stored (not JSON, a NUL in a string, over ``[tasks] max_output_bytes``) raises
        StepResultNotStored: the run fails for good and ``fn`` is never called again. Names
        must be unique in a run: a step in a loop carries an index (``f"fetch-{i}"``).
        """
        return await self._steps_of_run().run(name, fn, args, kwargs, retry)

    def _steps_of_run(self) -> Steps:
        if self._steps is None:
            self._steps = Steps(self.run_id, self.attempt, self._services)
        return self._steps

    async def wait_until(self, wake_at_from: Callable[[datetime], datetime]) -> None:
        """The engine of ``wait.for_`` and ``wait.until`` (use those)."""
        self._waits += 1
        wake_text = await self._steps_of_run().run(
            f"wait:{self._waits}",
            lambda: wake_at_from(clock.now()).isoformat(),
            (),
            {},
            None,
        )
        wake_at = datetime.fromisoformat(wake_text)
        remaining = (wake_at - clock.now()).total_seconds()
        if remaining <= 0:
            return
        if remaining <= self.wait_threshold:
            await sleep_until(wake_at)
            return
        if self._services is None:
            raise RuntimeError(
                "a wait longer than the wait threshold suspends the run: it needs a run "
                "executed by a taskd daemon"
            )
        raise Suspend(wake_at)

    async def create_token(self, lifetime: float) -> WaitToken:
        """The engine of ``wait.create_token``."""
        if self._services is None:
            raise RuntimeError("wait tokens need a run executed by a taskd daemon")
        services = self._services
        self._tokens += 1

        async def create() -> dict[str, str]:
            token_id = uuid.uuid4()
            expires_at = await services.token_create(token_id, self.run_id, lifetime)
            return {"id": str(token_id), "expires_at": expires_at.isoformat()}

        recorded = await self._steps_of_run().run(f"token:{self._tokens}", create, (), {}, None)
        return WaitToken(uuid.UUID(recorded["id"]), datetime.fromisoformat(recorded["expires_at"]))

    async def wait_for_token(self, token_id: uuid.UUID) -> Any:
        """The engine of ``wait.for_token``."""
        if self._services is None:
            raise RuntimeError("wait tokens need a run executed by a taskd daemon")
        services = self._services
        timed_out = WaitTimeout(f"wait token {token_id} was not completed within its timeout")

        async def read() -> dict[str, Any]:
            token = await services.token_await(token_id, self.run_id)
            if token is None:
                raise TokenNotFound(f"no wait token with id {token_id}")
            return token

        # Timeouts are the database's: this daemon's clock may be ahead of it or behind.
        token = await read()
        left = (token["expires_at"] - token["now"]).total_seconds()
        if token["status"] == "pending" and left <= 0 and not token["held"]:
            if await services.token_time_out(token_id, self.run_id):
                raise timed_out
            token = await read()  # completed meanwhile, or being completed: its state now
            left = (token["expires_at"] - token["now"]).total_seconds()
        if token["status"] == "completed":
            return token["data"]
        if token["status"] == "timed_out":
            raise timed_out
        if token["held"] or left <= 0:
            # Another transaction is completing it (it may still roll back), or the database's
            # clock went back: look again soon, without holding the slot or waiting on a lock.
            left = min(left, TOKEN_RECHECK) if left > 0 else TOKEN_RECHECK
        # The wake-up is handed over as a time on this daemon's clock: "left" from now.
        raise Suspend(clock.now() + timedelta(seconds=left))

    async def run_children(
        self,
        task_id: str,
        queue: str | None,
        payloads: list[Any],
        tags: list[str],
        max_attempts: int | None,
        concurrency_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: float = 0.0,
        retry: dict[str, Any] | None = None,
        max_duration: float | None = None,
    ) -> list[Any]:
        """The engine of ``trigger_and_wait`` / ``batch_trigger_and_wait``: each child's
        output, or a RunFailed for a child that did not complete."""
        if self._services is None:
            raise RuntimeError("trigger_and_wait needs a run executed by a taskd daemon")
        self._children += 1
        name = f"children:{self._children}"
        steps = self._steps_of_run()
        if name in steps.seen:
            raise StepNameRepeated(f"step name {name!r} used twice in this run")
        steps.seen.add(name)
        recorded = (await steps.recorded()).get(name)
        created_at = clock.now()
        if recorded is not None and recorded.status == "completed":
            ids = [uuid.UUID(text) for text in recorded.result]
            created_at = recorded.started_at
        else:
            ids = await self._services.children_create(
                self,
                name,
                task_id,
                queue,
                payloads,
                tags,
                max_attempts,
                concurrency_key,
                idempotency_keys,
                idempotency_ttl,
                retry,
                max_duration,
            )
        results = await self._services.children_results(self.run_id, ids)
        if any(not RunStatus(results[i]["status"]).terminal for i in ids if i in results):
            # Woken when the last child finishes. The recheck is the backstop, for a last
            # child that finished while this parent was still writing its suspension, or by a
            # path that wakes no parent (a cancel in SQL): half the time waited so far, from
            # half a second to CHILDREN_RECHECK, so a parent re-executes O(log) times.
            waited = (clock.now() - created_at).total_seconds()
            recheck = min(CHILDREN_RECHECK, max(0.5, waited / 2))
            raise Suspend(clock.now() + timedelta(seconds=recheck))
        outputs: list[Any] = []
        for child_id in ids:
            child = results.get(child_id)
            if child is None:  # pruned: its result is gone
                outputs.append(RunFailed(child_id, "missing", {"type": "RunMissing"}))
            elif child["status"] == RunStatus.COMPLETED:
                outputs.append(child["output"])
            else:
                outputs.append(RunFailed(child_id, child["status"], child["error"]))
        return outputs

    @property
    def is_last_attempt(self) -> bool:
        """This attempt is the run's last: failing now fails the run for good."""
        return self.attempt >= self.max_attempts

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id}, task_id={self.task_id!r}, attempt={self.attempt})"

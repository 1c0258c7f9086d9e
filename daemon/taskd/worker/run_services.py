"""What a running task reaches through its context: metadata writes and stored log lines."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import orjson

from taskd import clock
from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import LLMSettings
from taskd.errors import MetadataTooLarge
from taskd.ids import new_run_ids
from taskd.logs import log_event
from taskd.models import LogLine, RunStatus, Step
from taskd.payloads import check_concurrency_key, encode_payload
from taskd.sdk.context import Context
from taskd.storable import NotStorable, has_nul
from taskd.store.database import DB_ERRORS, DatabaseError, refuses_data
from taskd.store.steps import StepOutcome
from taskd.store.store import Store
from taskd.store.waits import ChildRuns
from taskd.worker.llm_batch_services import LLMBatchServices
from taskd.worker.llm_call_writer import LLMCallWriter
from taskd.worker.llm_services import LLMCallServices
from taskd.worker.log_writer import RunLogWriter

log = logging.getLogger("taskd.run")
T = TypeVar("T")

# How long a step's record is retried while the database is away or the run's row is locked
# (a lock wait is bounded by the pool's lock_timeout): the step's function has returned, and
# an attempt failed here would call it again. Step loads and metadata writes are retried as
# long: a connection lost under them is no failure of the task's code.
STEP_RECORD_PATIENCE = 30.0


def level_name(level: int) -> str:
    if level >= logging.ERROR:
        return "error"
    if level >= logging.WARNING:
        return "warning"
    if level >= logging.INFO:
        return "info"
    return "debug"


class WorkerRunServices(LLMCallServices, LLMBatchServices):
    """The daemon's side of ``ctx.set_metadata``, of the ``ctx.log`` lines it stores, of
    steps, waits, tokens and child runs, and (LLMCallServices) of ``ctx.llm``."""

    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        changes: ChangeHub,
        log_writer: RunLogWriter,
        *,
        max_metadata_bytes: int,
        run_lines: int,
        run_level: int,
        wait_threshold: float = 5.0,
        max_payload_bytes: int = 1_048_576,
        max_output_bytes: int = 1_048_576,
        llm_writer: LLMCallWriter | None = None,
        llm_settings: LLMSettings | None = None,
        task_versions: dict[str, str] | None = None,
    ) -> None:
        super().__init__(store, changes, llm_writer, llm_settings or LLMSettings(), self._patiently)
        # this daemon's version of each task it serves: a child run gets its task's (the code
        # deployed beside its parent's), else its parent's (store/waits.sql create_children)
        self._task_versions = task_versions or {}
        self.wait_threshold = wait_threshold
        self.max_output_bytes = max_output_bytes
        self._max_payload_bytes = max_payload_bytes
        self._store = store
        self._worker_id = worker_id
        self._changes = changes
        self._log_writer = log_writer
        self._max_metadata_bytes = max_metadata_bytes
        self._run_lines = run_lines
        self._run_level = run_level

    async def token_create(
        self, token_id: uuid.UUID, run_id: uuid.UUID, lifetime: float
    ) -> datetime:
        # A retry is safe: it has the same id, and finds the token a first try made.
        return await self._patiently(
            "wait token not created",
            run_id,
            self._store.tokens.create,
            token_id,
            run_id,
            lifetime,
        )

    async def token_await(self, token_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, Any] | None:
        # A retry is safe: marking the token awaited and its data seen again changes nothing.
        return await self._patiently(
            "wait token not read", run_id, self._store.tokens.mark_awaited, token_id, run_id
        )

    async def token_time_out(self, token_id: uuid.UUID, run_id: uuid.UUID) -> bool:
        # A retry after a first try that timed the token out returns False: the caller then
        # reads the token, timed out.
        return await self._patiently(
            "wait token not timed out", run_id, self._store.tokens.time_out, token_id
        )

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
    ) -> list[uuid.UUID]:
        check_concurrency_key(concurrency_key)
        encoded = [encode_payload(p, self._max_payload_bytes) for p in payloads]
        ids = new_run_ids(len(encoded))
        # A retry is safe: it has the same ids, and the statement is a compare-and-set under
        # the step's name; a first try that committed unseen is found by its ids.
        created = await self._patiently(
            "child runs not created",
            ctx.run_id,
            self._store.waits.create_children,
            ChildRuns(
                ctx.run_id,
                self._worker_id,
                ctx.attempt,
                step_name,
                task_id,
                queue,
                ids,
                encoded,
                tags,
                max_attempts,
                concurrency_key,
                idempotency_keys,
                idempotency_ttl,
                retry,
                max_duration,
                version=self._task_versions.get(task_id),
            ),
        )
        if created is None:
            raise RuntimeError("child runs not created: the run is no longer this worker's")
        return created

    async def children_results(
        self, run_id: uuid.UUID, ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any]]:
        return await self._patiently(
            "child runs not read", run_id, self._store.waits.children_results, ids
        )

    async def load_steps(self, run_id: uuid.UUID) -> dict[str, Step]:
        steps = await self._patiently("steps not loaded", run_id, self._store.steps.list, run_id)
        return {step.name: step for step in steps}

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
    ) -> bool:
        # A retry is safe: the write is a compare-and-set that never overwrites a completed
        # step, and a run lost meanwhile makes it write nothing.
        try:
            return await self._patiently(
                f"step {name!r} not recorded",
                run_id,
                self._store.steps.record,
                StepOutcome(
                    run_id,
                    name,
                    self._worker_id,
                    attempt,
                    status=status,
                    result=result,
                    error=error,
                    tries=tries,
                    started_at=started_at,
                ),
            )
        except DatabaseError as exc:
            if refuses_data(exc):
                # the same write can never succeed: the step fails the run for good
                raise NotStorable(f"the database refused it: {exc}") from None
            raise

    async def set_metadata(self, ctx: Context, values: dict[str, Any]) -> dict[str, Any]:
        merged = {**ctx.metadata, **values}
        try:
            encoded = orjson.dumps(merged)
            patch = orjson.dumps(values)
        except TypeError as exc:
            raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
        if len(encoded) > self._max_metadata_bytes:
            raise MetadataTooLarge(len(encoded), self._max_metadata_bytes)
        if b"\\u0000" in patch and has_nul(orjson.loads(patch)):
            # PostgreSQL's jsonb refuses it: say so here, not with a database error.
            raise ValueError("metadata cannot hold the NUL character (\\x00): jsonb refuses it")
        # A retry is safe: merging the same keys again stores the same object.
        written = await self._patiently(
            "metadata not stored",
            ctx.run_id,
            self._store.runs.set_metadata,
            ctx.run_id,
            self._worker_id,
            ctx.attempt,
            patch.decode(),
        )
        if not written:
            # The run is no longer this attempt's (canceled, or rescued after a lost lease):
            # its outcome will not be written either.
            log_event(
                log,
                logging.WARNING,
                "metadata not stored: the run is no longer this worker's",
                run_id=str(ctx.run_id),
                attempt=ctx.attempt,
            )
            return merged
        if self._changes.active:
            self._changes.publish(
                RunChange(
                    ChangeKind.METADATA,
                    ctx.run_id,
                    ctx.task_id,
                    RunStatus.EXECUTING.value,
                    ctx.attempt,
                    data=merged,
                )
            )
        return merged

    async def _patiently(
        self,
        what: str,
        run_id: uuid.UUID | None,
        call: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """``call(*args)``, again while the database is away (the connection cut, the server
        restarting, a lock wait timed out) for up to STEP_RECORD_PATIENCE. For idempotent
        calls only. Data the database refuses is raised at once."""
        deadline = time.monotonic() + STEP_RECORD_PATIENCE
        failures = 0
        while True:
            try:
                return await call(*args)
            except DB_ERRORS as exc:
                if isinstance(exc, DatabaseError) and refuses_data(exc):
                    raise
                failures += 1
                delay = min(2.0, 0.05 * 2**failures)
                if time.monotonic() + delay > deadline:
                    raise
                log_event(
                    log,
                    logging.WARNING,
                    f"{what} yet, retrying in {delay:.2g}s: {type(exc).__name__}: {exc}",
                    run_id=str(run_id),
                )
                await anyio.sleep(delay)

    def store_log(self, ctx: Context, level: int, message: str, fields: dict[str, Any]) -> None:
        if level < self._run_level or self._run_lines == 0:
            return
        if ctx.log_lines > self._run_lines:
            return
        if ctx.log_lines == self._run_lines:
            ctx.log_lines += 1
            self._add(
                ctx,
                logging.WARNING,
                f"log cap reached: this run stores at most {self._run_lines} lines; later "
                "lines go to the daemon's output only",
                {},
            )
            return
        ctx.log_lines += 1
        self._add(ctx, level, message, fields)

    def _add(self, ctx: Context, level: int, message: str, fields: dict[str, Any]) -> None:
        self._log_writer.add(
            LogLine(
                ctx.run_id,
                ctx.task_id,
                ctx.attempt,
                clock.now(),
                level_name(level),
                _cap_message(storable_text(message)),
                _cap_fields(encode_fields(fields)) if fields else None,
            )
        )


_SURROGATES = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL takes it: without NUL characters, and with lone surrogates (a
    non-UTF-8 file name decoded with surrogateescape, say) replaced by U+FFFD. Otherwise the
    whole batch of lines it is written with would be refused."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    return text.replace("\x00", "")


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {
            storable_text(k if isinstance(k, str) else str(k)): _storable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _as_text(value: Any) -> str:
    return storable_text(str(value))


def encode_fields(fields: dict[str, Any]) -> bytes:
    """A line's fields as JSON for jsonb: values JSON lacks become their ``str``, keys that
    are not strings too, and text is made storable (see ``storable_text``)."""
    try:
        encoded = orjson.dumps(fields, default=_as_text, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # lone surrogates (orjson refuses them), keys such as tuples
        encoded = None
    if encoded is None or b"\\u0000" in encoded:
        # Rare: clean the values themselves. (Cutting ``\\u0000`` out of the encoded bytes
        # would break a string with a backslash before "u0000" in it, and the JSON with it.)
        plain = orjson.loads(encoded) if encoded is not None else fields
        encoded = orjson.dumps(_storable(plain), default=_as_text)
    return encoded


# One line is a log line, not a data store: what is stored is capped (stdout keeps it whole),
# so that a task logging a megabyte per line cannot make batches the database chokes on.
MAX_MESSAGE_CHARS = 8_000
MAX_FIELDS_BYTES = 16_384


def _cap_message(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… [{len(text) - MAX_MESSAGE_CHARS} more characters]"


def _cap_fields(encoded: bytes) -> bytes:
    if len(encoded) <= MAX_FIELDS_BYTES:
        return encoded
    preview = encoded[: MAX_FIELDS_BYTES // 2].decode(errors="ignore")
    return orjson.dumps({"truncated": f"{len(encoded)} bytes of fields", "preview": preview})

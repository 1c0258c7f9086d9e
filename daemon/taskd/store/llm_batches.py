"""Message Batches submitted by ``ctx.llm.batch`` (``taskd.llm_batches``): the submission
recorded with the run's step, the polls the daemons share (at most one per interval for each
batch), the end (its results, its calls' records, the run woken) and the run's reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import orjson

from taskd.models import LLMCall
from taskd.storable import escaped_text
from taskd.store.llm import LLMStore
from taskd.store.queries import load

SQL = load("llm_batches")

MAX_RESULTS_BYTES = 128 * 2**20
"""The most a batch's stored results take (JSON): jsonb refuses a value over 255 MB. The
requests whose results would pass it (in request order) are stored as ``errored`` with the
error type ``results_too_large``; their calls are still recorded with what they used."""
MAX_FINISH_FAILURES = 3
"""Tries at storing an ended batch before it is written ended without its results (each
request ``errored``, type ``results_not_stored``, naming the cause): no download forever."""
# What a refusal of the data (not a database away) raises: retrying the same data is useless.
REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
    asyncpg.IntegrityConstraintViolationError,
)


def errored_result(custom_id: str, error_type: str, message: str) -> dict[str, Any]:
    """A stored result saying the request's result is not there, and why."""
    return {
        "custom_id": custom_id,
        "result": {"type": "errored", "error": {"error": {"type": error_type, "message": message}}},
    }


def _escaped(value: Any) -> Any:
    """``value`` with every string (keys too) passed through ``escaped_text``: NUL written as
    the four characters ``\\x00``, lone surrogates as ``\\udcff``."""
    if isinstance(value, str):
        return escaped_text(value)
    if isinstance(value, dict):
        return {escaped_text(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _item_json(item: Any) -> bytes:
    try:
        encoded = orjson.dumps(item)
    except TypeError:  # a lone surrogate
        return orjson.dumps(_escaped(item))
    if b"\\u0000" in encoded:
        return orjson.dumps(_escaped(item))
    return encoded


def storable_results(results: Sequence[Any], limit: int | None = None) -> str:
    """``results`` as the JSON array stored: NUL and lone surrogates escaped (jsonb refuses
    them), and past ``limit`` bytes (MAX_RESULTS_BYTES) each further result an ``errored``
    one of type ``results_too_large``."""
    limit = MAX_RESULTS_BYTES if limit is None else limit
    parts: list[bytes] = []
    size = 2
    for item in results:
        encoded = _item_json(item)
        if size + len(encoded) + 1 > limit:
            custom_id = str(item.get("custom_id", "?")) if isinstance(item, dict) else "?"
            encoded = orjson.dumps(
                errored_result(
                    escaped_text(custom_id),
                    "results_too_large",
                    f"the batch's results pass taskd's limit of {limit} bytes for one batch "
                    "(taskd.store.llm_batches.MAX_RESULTS_BYTES) from this request on: its "
                    "result is not stored (split the batch)",
                )
            )
        size += len(encoded) + 1
        parts.append(encoded)
    return (b"[" + b",".join(parts) + b"]").decode()


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A batch just submitted by a run's attempt (``run_id``, ``worker_id``, ``attempt``: the
    compare-and-set), recorded as its step ``step`` with ``step_result`` (JSON text)."""

    run_id: uuid.UUID
    worker_id: uuid.UUID
    attempt: int
    step: str
    step_result: str
    batch_id: str
    in_step: str | None
    task_id: str
    queue: str | None
    concurrency_key: str | None
    tags: Sequence[str]
    custom_ids: Sequence[str]
    models: Sequence[str]
    poll_interval: float
    admission_id: int | None = None
    """Its reservation under the queue's budget (trued up when it ends), or None."""
    reserved_usd: Decimal = Decimal(0)
    """Its estimated cost at batch prices, held against the run's budget while it is open."""


@dataclass(frozen=True, slots=True)
class DueBatch:
    """An open batch claimed for one poll."""

    id: int
    batch_id: str
    run_id: uuid.UUID
    step: str
    in_step: str | None
    task_id: str
    attempt: int
    queue: str | None
    concurrency_key: str | None
    tags: list[str]
    custom_ids: list[str]
    models: list[str]
    submitted_at: datetime
    cancel_requested_at: datetime | None
    run_status: str | None
    finish_failures: int = 0
    """Tries at storing it ended that failed (MAX_FINISH_FAILURES: written ended without)."""
    last_error: str | None = None

    @property
    def run_finished(self) -> bool:
        """Its run ended (or is gone): nobody will read the results."""
        return self.run_status is None or self.run_status in (
            "completed",
            "failed",
            "canceled",
            "expired",
        )


class LLMBatchStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, batch: BatchRecord) -> bool:
        """Record a submitted batch and its step, atomically; False when the run is no longer
        this attempt's (nothing was written). A retry after a first try whose commit went
        unseen finds the batch recorded and returns True."""
        b = batch
        row_id = await self.pool.fetchval(
            SQL["record"],
            b.run_id,
            b.worker_id,
            b.attempt,
            b.step,
            b.step_result,
            b.batch_id,
            b.in_step,
            b.task_id,
            b.queue,
            b.concurrency_key,
            list(b.tags),
            list(b.custom_ids),
            list(b.models),
            b.poll_interval,
            b.admission_id,
            b.reserved_usd,
        )
        if row_id is not None:
            return True
        recorded: bool = await self.pool.fetchval(SQL["exists"], b.batch_id, b.run_id)
        return recorded

    async def read(self, batch_id: str, run_id: uuid.UUID) -> dict[str, Any] | None:
        """``status``, ``results`` (once ended, in request order), ``custom_ids`` and
        ``in_step`` of the run's batch, marking ended results read; None when there is no such
        batch."""
        row = await self.pool.fetchrow(SQL["read"], batch_id, run_id)
        return None if row is None else dict(row)  # jsonb: decoded by the pool's codec

    async def describe(self, batch_id: str, run_id: uuid.UUID) -> dict[str, Any] | None:
        """``status``, ``custom_ids`` and ``in_step`` of the run's batch (``results`` None),
        nothing marked read; None when there is no such batch."""
        row = await self.pool.fetchrow(SQL["describe"], batch_id, run_id)
        return None if row is None else dict(row)

    async def mark_runs_finished(self, limit: int = 1000) -> int:
        """Open batches whose run ended (or is gone), not yet asked to cancel: due now (the
        claim then cancels them). A walk of the open batches: run every few ticks, not each."""
        marked: int = await self.pool.fetchval(SQL["mark_runs_finished"], limit)
        return marked

    async def finish_failed(self, row_id: int, error: str) -> None:
        """A try at storing the ended batch failed (the next poll downloads it again)."""
        await self.pool.execute(SQL["finish_failed"], row_id, error)

    async def claim_due(self, interval: float, limit: int) -> list[DueBatch]:
        """Open batches due for a poll, their next poll moved ``interval`` seconds ahead."""
        rows = await self.pool.fetch(SQL["claim_due"], interval, limit)
        return [
            DueBatch(
                row["id"],
                row["batch_id"],
                row["run_id"],
                row["step"],
                row["in_step"],
                row["task_id"],
                row["attempt"],
                row["queue"],
                row["concurrency_key"],
                list(row["tags"]),
                list(row["custom_ids"]),
                list(row["models"]),
                row["submitted_at"],
                row["cancel_requested_at"],
                row["run_status"],
                row["finish_failures"],
                row["last_error"],
            )
            for row in rows
        ]

    async def polled(self, row_id: int, status: str | None, error: str | None) -> None:
        await self.pool.execute(SQL["polled"], row_id, status, error)

    async def cancel_requested(self, row_id: int) -> None:
        await self.pool.execute(SQL["cancel_requested"], row_id)

    async def finish(
        self, row_id: int, results: Sequence[Any], calls: Sequence[LLMCall]
    ) -> tuple[bool, list[tuple[uuid.UUID, str]]]:
        """The batch ended: its results (in request order) and its calls' records stored, its
        admission trued up with what its calls used and cost (at batch prices: what was
        billed; an errored, expired or canceled request nothing), and its run woken if it
        waits, in one transaction. ``(ended here, runs woken)``: not ended here when another
        daemon ended it first (nothing was written). The results are stored as
        ``storable_results`` makes them (NUL escaped, the size bounded); a refusal of the data
        (REFUSALS) raises, nothing written."""
        encoded = storable_results(results)
        used_input = sum(c.input_tokens + c.cache_write_tokens + c.cache_read_tokens for c in calls)
        used_output = sum(c.output_tokens for c in calls)
        cost = sum((c.cost_usd or Decimal(0) for c in calls), Decimal(0))
        async with self.pool.acquire() as connection, connection.transaction():
            if await connection.fetchval(SQL["lock_open"], row_id) is None:
                return False, []
            await connection.execute(SQL["true_up"], row_id, used_input, used_output, cost)
            if calls:
                # the calls' records in the same transaction: an end written twice (two
                # daemons) or half (a crash) never counts a batch's tokens twice or not at all
                await LLMStore(cast(asyncpg.Pool, connection)).insert_calls(calls)
            rows = await connection.fetch(SQL["finish"], row_id, encoded)
        return True, [(row[0], row[1]) for row in rows]

    async def wake_missed(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        """Waiting runs whose batch ended unread (its wake-up found them still executing):
        back to the queue. (run id, task id)."""
        rows = await self.pool.fetch(SQL["wake_missed"], limit)
        return [(row[0], row[1]) for row in rows]

    async def of_run(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        """A run's batches, oldest first."""
        return [dict(row) for row in await self.pool.fetch(SQL["list_of_run"], run_id)]

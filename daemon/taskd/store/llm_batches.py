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
from taskd.store.llm import LLMStore
from taskd.store.queries import load

SQL = load("llm_batches")


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

    async def read(self, batch_id: str, run_id: uuid.UUID) -> tuple[str, list[Any] | None] | None:
        """``(status, results)`` of the run's batch (results once ended, in request order),
        marking ended results read; None when there is no such batch."""
        row = await self.pool.fetchrow(SQL["read"], batch_id, run_id)
        if row is None:
            return None
        return row["status"], row["results"]  # jsonb: decoded by the pool's codec

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
        daemon ended it first (nothing was written)."""
        encoded = orjson.dumps(list(results)).decode()
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

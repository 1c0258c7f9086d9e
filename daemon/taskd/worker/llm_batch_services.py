"""The daemon's side of ``ctx.llm.batch`` (a mixin of WorkerRunServices): a batch admitted under
the budgets, a submitted batch recorded with the run's step (and its reservation), its state
read when the run executes again, and an orphan batch canceled."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from taskd.config import LLMSettings
from taskd.logs import log_event
from taskd.models import LLMAdmission
from taskd.sdk.context import Context
from taskd.sdk.llm.batch import BatchState
from taskd.store.llm_batches import BatchRecord
from taskd.store.store import Store

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("taskd.llm")


class LLMBatchServices:
    """Needs, from the class it is mixed into: the store, the worker's id, the LLM settings,
    the SDK client and ``_llm_patiently`` (LLMCallServices)."""

    _store: Store
    _worker_id: uuid.UUID
    _llm_patiently: Callable[..., Awaitable[Any]]
    llm_settings: LLMSettings
    llm_client: Callable[[], anthropic.AsyncAnthropic]

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
    ) -> bool:
        # A retry is safe: the statement is a compare-and-set under the step's name, and a
        # first try that committed unseen is found by the batch's id.
        recorded: bool = await self._llm_patiently(
            "Message Batch not recorded",
            ctx.run_id,
            self._store.llm_batches.record,
            BatchRecord(
                run_id=ctx.run_id,
                worker_id=self._worker_id,
                attempt=ctx.attempt,
                step=step,
                step_result=orjson.dumps(
                    {"batch_id": batch_id, "requests": len(custom_ids)}
                ).decode(),
                batch_id=batch_id,
                in_step=in_step,
                task_id=ctx.task_id,
                queue=ctx.queue,
                concurrency_key=ctx.concurrency_key or None,
                tags=list(ctx.tags),
                custom_ids=custom_ids,
                models=models,
                poll_interval=self.llm_settings.batch_poll_interval,
                admission_id=admission_id,
                reserved_usd=reserved_usd,
            ),
        )
        return recorded

    async def llm_admit_batch(
        self,
        queue: str,
        key: str,
        run_id: uuid.UUID,
        input: int,
        output: int,
        cost: Decimal | None,
        requests: int,
    ) -> LLMAdmission:
        """Admit a Message Batch of ``requests`` requests (the sums of their estimates) under
        the queue's budget per concurrency key, over every daemon (not its token limits)."""
        admission: LLMAdmission = await self._llm_patiently(
            "Message Batch not admitted",
            run_id,
            partial(self._store.llm_limits.admit, batch_requests=requests),
            queue,
            key,
            run_id,
            input,
            output,
            cost,
        )
        return admission

    async def llm_batch_read(self, run_id: uuid.UUID, batch_id: str) -> BatchState | None:
        # A retry is safe: marking the results read again changes nothing.
        row: dict[str, Any] | None = await self._llm_patiently(
            "Message Batch not read", run_id, self._store.llm_batches.read, batch_id, run_id
        )
        return _state(row)

    async def llm_batch_describe(self, run_id: uuid.UUID, batch_id: str) -> BatchState | None:
        """The batch's custom ids and ``ctx.step``, its results not read."""
        row: dict[str, Any] | None = await self._llm_patiently(
            "Message Batch not read",
            run_id,
            self._store.llm_batches.describe,
            batch_id,
            run_id,
        )
        return _state(row)

    async def llm_batch_cancel(self, batch_id: str) -> None:
        """Best effort: a batch no run will read is canceled (what it already processed is
        still billed, and recorded when it ends, if it was recorded)."""
        try:
            await self.llm_client().messages.batches.cancel(batch_id)
        except Exception as exc:
            log_event(
                log,
                logging.WARNING,
                f"Message Batch {batch_id} not canceled: {type(exc).__name__}: {exc}",
                batch_id=batch_id,
            )


def _state(row: dict[str, Any] | None) -> BatchState | None:
    if row is None:
        return None
    return BatchState(row["status"], row["results"], list(row["custom_ids"]), row["in_step"])

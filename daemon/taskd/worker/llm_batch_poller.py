"""The batch poller: open Message Batches (``ctx.llm.batch``) asked about, each at most once per
``[llm] batch_poll_interval`` across the fleet, and their runs woken when they end.

Every daemon runs this loop; a batch is claimed for one poll by moving its next poll an
interval ahead (``FOR UPDATE SKIP LOCKED``), so the fleet asks the API about each batch at most
once per interval however many daemons run. A poll that finds the batch ended reads its JSONL
results and, in one transaction, stores them in request order, records one ``taskd.llm_calls``
row per request (kind ``batch``, at batch prices) and puts the run back in the queue. A batch
whose run ended meanwhile (canceled, failed) is canceled, best effort: what it processed is
still billed, and recorded when it ends. The batches live in the database: one that ends while
no daemon runs is found by the next one to start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from taskd import clock
from taskd.changes import ChangeKind
from taskd.config import LLMSettings
from taskd.logs import log_event
from taskd.models import LLMCall
from taskd.sdk.llm.failures import classify
from taskd.sdk.llm.prices import Usage, cost_of, price_of
from taskd.storable import escaped_text
from taskd.store.database import DB_ERRORS
from taskd.store.llm_batches import (
    MAX_FINISH_FAILURES,
    REFUSALS,
    DueBatch,
    errored_result,
)
from taskd.store.store import Store
from taskd.telemetry import Telemetry
from taskd.worker.findings import BATCH, Findings
from taskd.worker.llm_services import load_sdk

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("taskd.llm")

CLAIM_LIMIT = 8  # batches polled at once by one daemon (each one request, or a download)
MAX_TICK = 1.0  # seconds between two looks for due batches (cheap: a partial index)
MAX_ERROR_CHARS = 2000
RUNS_FINISHED_EVERY = 10  # ticks between two looks for open batches whose run ended


class LLMBatchPoller:
    def __init__(
        self,
        store: Store,
        settings: LLMSettings,
        client: Callable[[], anthropic.AsyncAnthropic],
        *,
        findings: Findings,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._client = client
        self._findings = findings
        self._telemetry = telemetry or findings.telemetry
        self._ticks = 0

    @property
    def tick(self) -> float:
        """How often the loop looks for due batches: a fraction of the poll interval, so a
        batch is polled close to its time, at most every MAX_TICK."""
        return min(MAX_TICK, max(0.05, self._settings.batch_poll_interval / 4))

    async def run_once(self) -> int:
        """Wake runs whose batch ended unread, then poll the batches due; how many polled."""
        for run_id, task_id in await self._store.llm_batches.wake_missed(BATCH):
            self._findings.changed(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)
        if self._ticks % RUNS_FINISHED_EVERY == 0:
            # a walk of the open batches: every few ticks (the claim is an index range)
            await self._store.llm_batches.mark_runs_finished()
        self._ticks += 1
        due = await self._store.llm_batches.claim_due(
            self._settings.batch_poll_interval, CLAIM_LIMIT
        )
        if due:
            async with anyio.create_task_group() as group:
                for batch in due:
                    group.start_soon(self._poll_safely, batch)
        return len(due)

    async def run(self) -> None:
        """Every tick, in a loop of its own."""
        while True:
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("polling Message Batches failed, retrying: %s", exc)
            await clock.sleep(self.tick)

    async def _poll_safely(self, batch: DueBatch) -> None:
        try:
            await self.poll(batch)
        except DB_ERRORS as exc:
            self._telemetry.db_error("maintenance")
            log.error("Message Batch %s: its poll not recorded: %s", batch.batch_id, exc)

    async def poll(self, batch: DueBatch) -> None:
        """One claimed batch: one request to the API (cancel if its run ended, else
        retrieve); if it ended, its results read and the end recorded."""
        await load_sdk()  # off the event loop, when a batch is due, not at every start
        import anthropic

        store = self._store.llm_batches
        if batch.finish_failures >= MAX_FINISH_FAILURES:
            # Downloaded and refused (or the database away) that many times: ended without
            # its results, each request errored naming the cause, so the run wakes.
            cause = (
                f"taskd could not store this batch's results after {batch.finish_failures} "
                f"tries: {batch.last_error or 'unknown error'}"
            )
            await self._end_without_results(batch, "results_not_stored", cause)
            return
        try:
            client = self._client()
            if batch.run_finished and batch.cancel_requested_at is None:
                await store.cancel_requested(batch.id)
                state = await client.messages.batches.cancel(batch.batch_id)
                log_event(
                    log,
                    logging.INFO,
                    f"Message Batch {batch.batch_id} canceled: its run ended "
                    f"({batch.run_status or 'deleted'})",
                    run_id=str(batch.run_id),
                    batch_id=batch.batch_id,
                )
            else:
                state = await client.messages.batches.retrieve(batch.batch_id)
            if state.processing_status != "ended":
                await store.polled(batch.id, state.processing_status, None)
                return
            results = await self._results(client, batch)
        except anthropic.NotFoundError as exc:
            # The API no longer knows it (deleted, or another key's): it never ends there.
            message = _message(exc)
            results = [
                {
                    "custom_id": custom_id,
                    "result": {
                        "type": "errored",
                        "error": {"error": {"type": "not_found_error", "message": message}},
                    },
                }
                for custom_id in batch.custom_ids
            ]
        except DB_ERRORS:
            raise
        except Exception as exc:  # the API away, refusing, or no key: the next poll retries
            message = _message(exc)
            log_event(
                log,
                logging.WARNING,
                f"Message Batch {batch.batch_id} not polled, next try in "
                f"{self._settings.batch_poll_interval:g}s: {message}",
                run_id=str(batch.run_id),
                batch_id=batch.batch_id,
            )
            await store.polled(batch.id, None, message[:MAX_ERROR_CHARS])
            return
        calls = self.calls(batch, results)
        try:
            ended, woken = await store.finish(batch.id, results, calls)
        except REFUSALS as exc:
            # The data refused (not the database away): the same data would be refused on
            # every poll. Ended with each request errored naming the cause; its calls kept.
            cause = f"the database refused this batch's results: {type(exc).__name__}: {exc}"
            log_event(
                log,
                logging.ERROR,
                f"Message Batch {batch.batch_id}: {cause}",
                run_id=str(batch.run_id),
                batch_id=batch.batch_id,
            )
            await self._end_without_results(batch, "results_not_stored", cause, calls)
            return
        except DB_ERRORS as exc:
            await self._count_failure(batch, exc)
            raise
        if not ended:
            return
        self._ended(batch, results, calls, woken)

    async def _count_failure(self, batch: DueBatch, exc: BaseException) -> None:
        try:
            await self._store.llm_batches.finish_failed(
                batch.id, escaped_text(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
            )
        except DB_ERRORS:
            pass  # the database away: the failure it had is logged by the caller

    async def _end_without_results(
        self,
        batch: DueBatch,
        error_type: str,
        cause: str,
        calls: list[LLMCall] | None = None,
    ) -> None:
        """The batch written ended, each request ``errored`` (``error_type``, ``cause``), its
        run woken; ``calls``: its calls' records when known (what the API billed), else one
        errored record per request without usage."""
        cause = escaped_text(cause)[:MAX_ERROR_CHARS]
        results = [errored_result(c, error_type, cause) for c in batch.custom_ids]
        if calls is None:
            calls = self.calls(batch, results)
        try:
            ended, woken = await self._store.llm_batches.finish(batch.id, results, calls)
        except REFUSALS:
            calls = self.calls(batch, results)  # the calls refused: their records without
            ended, woken = await self._store.llm_batches.finish(batch.id, results, calls)
        if ended:
            self._ended(batch, results, calls, woken)

    def _ended(
        self,
        batch: DueBatch,
        results: Sequence[Any],
        calls: list[LLMCall],
        woken: list[tuple[Any, str]],
    ) -> None:
        self._telemetry.llm_calls(calls)
        log_event(
            log,
            logging.INFO,
            f"Message Batch {batch.batch_id} ended: {len(results)} request(s)",
            run_id=str(batch.run_id),
            batch_id=batch.batch_id,
        )
        for run_id, task_id in woken:
            self._findings.changed(ChangeKind.WOKEN, run_id, task_id, "queued", None, None)

    async def _results(
        self, client: anthropic.AsyncAnthropic, batch: DueBatch
    ) -> list[dict[str, Any]]:
        """The batch's results in request order (the API's order is not), each
        ``{custom_id, result}``; a request the results lack is ``missing``."""
        found: dict[str, Any] = {}
        async for response in await client.messages.batches.results(batch.batch_id):
            found[response.custom_id] = response.result.model_dump(mode="json")
        return [
            {"custom_id": custom_id, "result": found.get(custom_id, {"type": "missing"})}
            for custom_id in batch.custom_ids
        ]

    def calls(self, batch: DueBatch, results: Sequence[dict[str, Any]]) -> list[LLMCall]:
        """One call record per request, attributed to the run, step and tenant that submitted
        the batch; succeeded ones with their tokens at batch prices (half)."""
        now = clock.now()
        latency = max(0, round((now - batch.submitted_at).total_seconds() * 1000))
        calls = []
        for model, item in zip(batch.models, results, strict=True):
            result = item["result"]
            kind = str(result.get("type"))
            usage, stop_reason, error = Usage(), None, None
            if kind == "succeeded":
                message = result.get("message") or {}
                usage = Usage.of(message.get("usage") or {})
                stop_reason = message.get("stop_reason")
                stop_reason = None if stop_reason is None else escaped_text(str(stop_reason))
                outcome = "ok"
            else:
                outcome = kind
                error = _result_error(result)
            price = price_of(model, self._settings.prices)
            cost = (
                cost_of(usage, price, batch=True)
                if price is not None and (outcome == "ok" or usage.total)
                else None
            )
            calls.append(
                LLMCall(
                    run_id=batch.run_id,
                    task_id=batch.task_id,
                    attempt=batch.attempt,
                    step=batch.in_step or batch.step,
                    queue=batch.queue,
                    concurrency_key=batch.concurrency_key,
                    tags=list(batch.tags),
                    model=model,
                    kind="batch",
                    outcome=outcome,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cost_usd=cost,
                    latency_ms=min(latency, 2**31 - 1),
                    stop_reason=stop_reason,
                    request_id=f"{batch.batch_id}/{item['custom_id']}",
                    error=error,
                    started_at=batch.submitted_at,
                )
            )
        return calls


def _message(exc: BaseException) -> str:
    verdict = classify(exc)
    return verdict.message if verdict is not None else f"{type(exc).__name__}: {exc}"


def _result_error(result: dict[str, Any]) -> str:
    kind = str(result.get("type"))
    if kind == "errored":
        error = result.get("error") or {}
        inner = error.get("error", error) if isinstance(error, dict) else {}
        text = f"{inner.get('type') or 'error'}: {inner.get('message') or ''}"
        return escaped_text(text)[:MAX_ERROR_CHARS]
    return f"the request {kind} before it was processed"

"""The daemon's side of ``ctx.llm``: the one SDK client, the fleet-wide backoffs in the
database, the call records' writer and the stream's text on the run's change stream."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import LLMSettings
from taskd.errors import LLMRequestRefused
from taskd.models import LLMAdmission, LLMCall, LLMDeferral, LLMGate, RunStatus
from taskd.sdk.context import Context
from taskd.store.store import Store
from taskd.worker.llm_call_writer import LLMCallWriter

if TYPE_CHECKING:
    import anthropic

T = TypeVar("T")

SDK_MODULES = (
    "httpx2",
    "anthropic",
    "anthropic.types",
    "anthropic.lib.streaming",
    "anthropic.resources.messages.batches",
)
"""What ctx.llm and the batch poller import from the SDK."""


async def load_sdk() -> None:
    """The Anthropic SDK imported in a worker thread, the first time only.

    Its imports take a second or more on a loaded machine; on the event loop they would stall
    every heartbeat, claim and stream of the daemon meanwhile (in CI, a daemon's 3 s leases
    expired while it imported the SDK at its first call, and its runs ran twice). In a thread
    the loop keeps turning (the import lock makes a concurrent import wait for this one).
    """
    if all(name in sys.modules for name in SDK_MODULES):
        return
    await anyio.to_thread.run_sync(_import_sdk)


def _import_sdk() -> None:
    for name in SDK_MODULES:
        importlib.import_module(name)


# ``patiently(what, run_id, call, *args)``: the call again while the database is away
Patiently = Callable[..., Awaitable[Any]]


class LLMCallServices:
    def __init__(
        self,
        store: Store,
        changes: ChangeHub,
        writer: LLMCallWriter | None,
        settings: LLMSettings,
        patiently: Patiently,
    ) -> None:
        self.llm_settings = settings
        self._llm_store = store.llm
        self._llm_limit_store = store.llm_limits
        self._llm_changes = changes
        self._llm_writer = writer
        self._llm_patiently = patiently
        self._llm_client: anthropic.AsyncAnthropic | None = None

    def llm_client(self) -> anthropic.AsyncAnthropic:
        """One client per daemon (one connection pool), built at the first call. The SDK's
        own retries are off: waiting for the API is the daemon's business (a run waits in
        the queue, not in a slot), and the two would stack."""
        if self._llm_client is None:
            import anthropic  # loaded at the daemon's first LLM call, not at its start
            import httpx2

            settings = self.llm_settings

            key = os.environ.get(settings.api_key_env)
            if not key:
                raise LLMRequestRefused(
                    f"no Anthropic API key: set the environment variable {settings.api_key_env} "
                    "(the name is [llm] api_key_env) for the daemon"
                )
            self._llm_client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=settings.base_url or None,
                max_retries=0,
                timeout=httpx2.Timeout(settings.timeout, connect=settings.connect_timeout),
            )
        return self._llm_client

    async def llm_close(self) -> None:
        if self._llm_client is not None:
            await self._llm_client.close()
            self._llm_client = None

    async def llm_gate(
        self, key: str, run_id: uuid.UUID, queue: str = "", attempt: int = 0
    ) -> LLMGate:
        if self._llm_client is None:
            await load_sdk()  # every call passes its gate first: the client is built after it
        gate: LLMGate = await self._llm_patiently(
            "LLM backoff not read", run_id, self._llm_store.gate, key, run_id, queue, attempt
        )
        return gate

    async def llm_defer_run(
        self, run_id: uuid.UUID, reason: str, key: str, attempt: int
    ) -> LLMDeferral:
        """The run waits for ``key`` (its attempt ``attempt``): one deferral, counted once
        even when asked again after a lost answer (its id is made here, once)."""
        request = uuid.uuid4()
        deferral: LLMDeferral = await self._llm_patiently(
            "LLM wait not recorded",
            run_id,
            self._llm_store.defer_run,
            run_id,
            reason,
            key,
            attempt,
            request,
        )
        return deferral

    async def llm_count_overload(self, key: str, reason: str) -> int:
        """The key's overload streak after this answer (answers arriving inside the backoff
        window the streak opened do not lengthen it: asked again, neither)."""
        settings = self.llm_settings
        # the shortest wait of the streak's steps (the jitter takes half to all of a step)
        overloads: int = await self._llm_patiently(
            "LLM overload not counted",
            None,
            self._llm_store.count_overload,
            key,
            reason,
            settings.overload_backoff * 0.5,
            settings.overload_backoff_max * 0.5,
        )
        return overloads

    async def llm_back_off(self, key: str, until: datetime, reason: str) -> datetime:
        held: datetime = await self._llm_patiently(
            "LLM backoff not recorded", None, self._llm_store.back_off, key, until, reason
        )
        return held

    async def llm_recovered(self, key: str, run_id: uuid.UUID) -> None:
        await self._llm_patiently(
            "LLM recovery not recorded", run_id, self._llm_store.recovered, key, run_id
        )

    async def llm_queue_limits(self, queue: str, run_id: uuid.UUID) -> dict[str, Any] | None:
        """The queue's LLM call limits and budget, as the database holds them."""
        limits: dict[str, Any] | None = await self._llm_patiently(
            "LLM limits not read", run_id, self._llm_limit_store.limits, queue
        )
        return limits

    async def llm_admit(
        self,
        queue: str,
        key: str,
        run_id: uuid.UUID,
        input: int,
        output: int,
        cost: Decimal | None,
    ) -> LLMAdmission:
        """Admit a call under the queue's limits and the key's budget, over every daemon.
        Asked again after a lost answer, the admission already made is found by its id (made
        here, once), not reserved twice."""
        request = uuid.uuid4()
        asked = 0

        async def admit() -> LLMAdmission:
            nonlocal asked
            asked += 1
            return await self._llm_limit_store.admit(
                queue, key, run_id, input, output, cost, request=request, again=asked > 1
            )

        admission: LLMAdmission = await self._llm_patiently("LLM call not admitted", run_id, admit)
        return admission

    async def llm_true_up(
        self, admission_id: int, run_id: uuid.UUID, input: int, output: int, cost: Decimal
    ) -> None:
        """An admitted call's reservation becomes what it used."""
        await self._llm_patiently(
            "LLM usage not trued up",
            run_id,
            self._llm_limit_store.true_up,
            admission_id,
            input,
            output,
            cost,
        )

    async def llm_run_spend(self, run_id: uuid.UUID) -> Decimal:
        """Dollars the run's recorded LLM calls cost (all attempts)."""
        spent: Decimal = await self._llm_patiently(
            "LLM spend not read", run_id, self._llm_limit_store.run_spend, run_id
        )
        return spent

    def llm_record(self, call: LLMCall) -> None:
        if self._llm_writer is not None:
            self._llm_writer.add(call)

    def llm_text(self, ctx: Context, step: str | None, call: int, text: str, done: bool) -> None:
        if not self._llm_changes.active:
            return
        self._llm_changes.publish(
            RunChange(
                ChangeKind.LLM_TEXT,
                ctx.run_id,
                ctx.task_id,
                RunStatus.EXECUTING.value,
                ctx.attempt,
                data={"step": step, "call": call, "text": text, "done": done},
            )
        )

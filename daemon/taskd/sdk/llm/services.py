"""What ``ctx.llm`` needs from the daemon running the run (taskd.worker.llm_services).

Apart from the client: importing ``taskd`` (a producer, the CLI) does not load the SDK; a
daemon loads it at its first LLM call.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from taskd.config import LLMSettings
from taskd.models import LLMAdmission, LLMCall, LLMDeferral, LLMGate

if TYPE_CHECKING:
    import anthropic

    from taskd.sdk.context import Context


class LLMServices(Protocol):
    """What ``ctx.llm`` needs from the daemon running the run (taskd.worker.run_services)."""

    llm_settings: LLMSettings

    def llm_client(self) -> anthropic.AsyncAnthropic: ...

    async def llm_gate(
        self, key: str, run_id: uuid.UUID, queue: str = "", attempt: int = 0
    ) -> LLMGate: ...

    async def llm_defer_run(
        self, run_id: uuid.UUID, reason: str, key: str, attempt: int
    ) -> LLMDeferral: ...

    async def llm_count_overload(self, key: str, reason: str) -> int: ...

    async def llm_back_off(self, key: str, until: datetime, reason: str) -> datetime: ...

    async def llm_recovered(self, key: str, run_id: uuid.UUID) -> None: ...

    def llm_record(self, call: LLMCall) -> None: ...

    async def llm_queue_limits(self, queue: str, run_id: uuid.UUID) -> dict[str, Any] | None: ...

    async def llm_admit(
        self,
        queue: str,
        key: str,
        run_id: uuid.UUID,
        input: int,
        output: int,
        cost: Decimal | None,
    ) -> LLMAdmission: ...

    async def llm_true_up(
        self, admission_id: int, run_id: uuid.UUID, input: int, output: int, cost: Decimal
    ) -> None: ...

    async def llm_run_spend(self, run_id: uuid.UUID) -> Decimal: ...

    def llm_text(
        self, ctx: Context, step: str | None, call: int, text: str, done: bool
    ) -> None: ...

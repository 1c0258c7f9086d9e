"""The fake Anthropic API wired to in-process daemons: ``[llm] base_url`` points at it and
the API key variable is set for the test."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import asyncpg

from taskd.config import Settings
from taskd.testing.anthropic import FakeAnthropic


def llm_config(
    fake: FakeAnthropic, then: Callable[[Settings], None] | None = None, **llm: Any
) -> Callable[[Settings], None]:
    """A ``configure`` for ``start_daemon``: ``[llm] base_url`` is the fake's, plus ``llm``
    settings (``max_wait=...``)."""

    def configure(settings: Settings) -> None:
        settings.llm.base_url = fake.url
        for key, value in llm.items():
            setattr(settings.llm, key, value)
        if then is not None:
            then(settings)

    return configure


async def calls_of(db: asyncpg.Connection, run_id: Any) -> list[dict[str, Any]]:
    """The stored LLM calls of a run, oldest first."""
    rows = await db.fetch("SELECT * FROM taskd.llm_calls WHERE run_id = $1 ORDER BY id", run_id)
    return [dict(row) for row in rows]


def dollars(tokens_in: int, tokens_out: int, price_in: str, price_out: str) -> Decimal:
    """What the tokens cost at these prices per million (the test's own arithmetic)."""
    return (tokens_in * Decimal(price_in) + tokens_out * Decimal(price_out)) / Decimal(10**6)

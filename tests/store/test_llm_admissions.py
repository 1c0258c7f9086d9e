"""LLM admissions against the database directly: two stores on pools of their own (two
daemons) admitting calls at once never reserve more than a queue's limit in a window; a
budget's wait says when the window has room; the pruner deletes admissions older than a day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import anyio
import asyncpg
import pytest

from taskd import Budget, Queue, Rate
from taskd.config import RetentionSettings
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.pruner import Pruner


@pytest.fixture
async def stores(database: str) -> AsyncIterator[tuple[Store, Store]]:
    first, second = await create_pool(database), await create_pool(database)
    try:
        yield Store(first), Store(second)
    finally:
        await first.close()
        await second.close()


async def test_two_daemons_admitting_at_once_stay_within_the_limit(
    stores: tuple[Store, Store], db: asyncpg.Connection
) -> None:
    one, two = stores
    await one.queues.sync([Queue("q", rate_limit=Rate(tokens=1000, per="1h")).settings()])
    admitted: list[bool] = []

    async def admit(store: Store) -> None:
        admission = await store.llm_limits.admit("q", "", None, 50, 50, None)
        admitted.append(admission.admitted)

    async with anyio.create_task_group() as group:
        for n in range(40):
            group.start_soon(admit, one if n % 2 else two)
    assert admitted.count(True) == 10  # 10 calls of 100 tokens: the hour's 1,000
    assert await db.fetchval("SELECT sum(input + output) FROM taskd.llm_admissions") == 1000


async def test_a_budget_that_waits_says_when_the_oldest_spend_leaves_the_window(
    stores: tuple[Store, Store], db: asyncpg.Connection
) -> None:
    store, _ = stores
    budget = Budget(usd=1, per="1h", on_exceed="wait")
    await store.queues.sync([Queue("q", budget=budget).settings()])
    first = await store.llm_limits.admit("q", "k", None, 10, 10, Decimal("0.6"))
    assert first.admitted and first.admitted_at is not None
    other_key = await store.llm_limits.admit("q", "other", None, 10, 10, Decimal("0.6"))
    assert other_key.admitted  # a budget per concurrency key
    waits = await store.llm_limits.admit("q", "k", None, 10, 10, Decimal("0.6"))
    assert not waits.admitted and not waits.exceeded
    assert waits.retry_at == first.admitted_at + timedelta(hours=1)
    assert waits.reason is not None and "$1 per 3600s: $0.6 spent" in waits.reason
    # trued up: the call cost less than its estimate, the next one fits
    assert first.id is not None
    await store.llm_limits.true_up(first.id, 10, 5, Decimal("0.3"))
    assert (await store.llm_limits.admit("q", "k", None, 10, 10, Decimal("0.6"))).admitted
    # more than the whole budget never fits: it fails rather than wait for ever
    never = await store.llm_limits.admit("q", "k", None, 10, 10, Decimal("1.5"))
    assert never.exceeded and not never.admitted


async def test_the_pruner_deletes_admissions_older_than_a_day(
    stores: tuple[Store, Store], db: asyncpg.Connection
) -> None:
    store, _ = stores
    await store.queues.sync([Queue("q", rate_limit=Rate(requests=5, per="1d")).settings()])
    old = await store.llm_limits.admit("q", "", None, 0, 0, None)
    await store.llm_limits.admit("q", "", None, 0, 0, None)
    await db.execute(
        "UPDATE taskd.llm_admissions SET admitted_at = admitted_at - interval '25 hours'"
        " WHERE id = $1",
        old.id,
    )
    await Pruner(store, RetentionSettings()).run_once()
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_admissions") == 1

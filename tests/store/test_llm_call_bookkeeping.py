"""The bookkeeping of ctx.llm calls against the database directly: an admission or a deferral
asked again (its first answer lost with the connection) counts once; a run's wait belongs to
the key that deferred it, within one attempt; the answers of calls in flight when the API
overloaded lengthen the model's streak once, not once each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import anyio
import asyncpg
import pytest

from taskd import Client, Queue, Rate
from taskd.store.database import create_pool
from taskd.store.store import Store

HAIKU = "claude-haiku-4-5"


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def test_an_admission_asked_again_is_reserved_once(
    store: Store, db: asyncpg.Connection
) -> None:
    await store.queues.sync([Queue("q", rate_limit=Rate(tokens=1000, per="1h")).settings()])
    request = uuid.uuid4()
    first = await store.llm_limits.admit("q", "", None, 300, 100, None, request=request)
    # the commit's answer was lost: the same admission is asked again
    again = await store.llm_limits.admit("q", "", None, 300, 100, None, request=request, again=True)
    assert first.admitted and again.admitted and again.id == first.id
    assert again.admitted_at == first.admitted_at
    assert await db.fetchval("SELECT sum(input + output) FROM taskd.llm_admissions") == 400
    # another admission is one more reservation
    other = await store.llm_limits.admit("q", "", None, 300, 100, None, request=uuid.uuid4())
    assert other.admitted and other.id != first.id
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_admissions") == 2


async def test_a_deferral_belongs_to_its_key_and_attempt_and_counts_once(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    run_id = await client.trigger("no.daemon", {})
    first = await store.llm.defer_run(run_id, "429", HAIKU, 1, uuid.uuid4())
    assert first.deferrals == 1
    request = uuid.uuid4()
    second = await store.llm.defer_run(run_id, "429", HAIKU, 1, request)
    again = await store.llm.defer_run(run_id, "429", HAIKU, 1, request)  # asked again
    assert second.deferrals == again.deferrals == 2 and second.since == first.since
    gate = await store.llm.gate(HAIKU, run_id, "default", 1)
    assert gate.deferred_since == first.since and gate.deferrals == 2
    # the key the run waits for is the model's: count_tokens' gate sees no wait
    assert (await store.llm.gate("count_tokens", run_id, "default", 1)).deferred_since is None
    # a success of another key does not end it
    await store.llm.recovered("count_tokens", run_id)
    assert (await store.llm.gate(HAIKU, run_id, "default", 1)).deferrals == 2
    # the next attempt does not see the last attempt's wait; its own deferral starts afresh
    assert (await store.llm.gate(HAIKU, run_id, "default", 2)).deferred_since is None
    await db.execute("UPDATE taskd.llm_deferrals SET since = since - interval '1 hour'")
    fresh = await store.llm.defer_run(run_id, "529", HAIKU, 2, uuid.uuid4())
    assert fresh.deferrals == 1 and (fresh.now - fresh.since).total_seconds() < 60
    # a success of the key ends it
    await store.llm.recovered(HAIKU, run_id)
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_deferrals") == 0


async def test_overload_answers_inside_the_backoff_window_do_not_lengthen_the_streak(
    store: Store, db: asyncpg.Connection
) -> None:
    counts: list[int] = []

    async def answer() -> None:
        counts.append(await store.llm.count_overload(HAIKU, "529", 30.0, 1500.0))

    async with anyio.create_task_group() as group:
        for _ in range(20):  # the answers of 20 calls in flight when the API overloaded
            group.start_soon(answer)
    assert counts == [1] * 20
    row = await db.fetchrow("SELECT overloads, until > now() AS held FROM taskd.llm_backoffs")
    assert row is not None and row["overloads"] == 1 and row["held"]
    # an answer after the window ended is the next overload in a row
    await db.execute("UPDATE taskd.llm_backoffs SET until = now() - interval '1 second'")
    assert await store.llm.count_overload(HAIKU, "529", 30.0, 1500.0) == 2
    assert await store.llm.count_overload(HAIKU, "529", 30.0, 1500.0) == 2
    # its step's shortest wait is held at once: 30 s doubled
    wait = await db.fetchval("SELECT extract(epoch FROM until - now()) FROM taskd.llm_backoffs")
    assert Decimal(30) < wait <= Decimal(60)

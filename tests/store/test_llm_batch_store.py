"""The store verbs of ctx.llm.batch's poller: a due batch is claimed by one poll for the whole
fleet until its next poll, its end is written once (results and call records together, the
run woken), and a run whose wake-up was missed (it was still executing) is woken, a bounded
number of times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import anyio
import asyncpg
import pytest

from taskd.models import LLMCall
from taskd.store.database import create_pool
from taskd.store.store import Store
from tests.support.runs import insert_run


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def open_batch(db: asyncpg.Connection, run_id: uuid.UUID, batch_id: str) -> None:
    await db.execute(
        """INSERT INTO taskd.llm_batches (batch_id, run_id, step, task_id, attempt, custom_ids,
                                          models, request_count, next_poll_at)
           VALUES ($1, $2, 'llm-batch:1', 't', 1, '{a,b}', '{m,m}', 2, now())""",
        batch_id,
        run_id,
    )


def call(run_id: uuid.UUID) -> LLMCall:
    return LLMCall(
        run_id=run_id,
        task_id="t",
        attempt=1,
        step="llm-batch:1",
        queue="default",
        concurrency_key=None,
        tags=[],
        model="m",
        kind="batch",
        outcome="ok",
        input_tokens=10,
        output_tokens=5,
        cache_write_tokens=0,
        cache_read_tokens=0,
        cost_usd=Decimal("0.001"),
        latency_ms=1,
        stop_reason="end_turn",
        request_id="msgbatch_1/a",
        error=None,
        started_at=datetime.now(UTC),
    )


async def test_a_due_batch_is_claimed_once_for_the_fleet_until_its_next_poll(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id="t", status="waiting")
    await open_batch(db, run_id, "msgbatch_1")
    claims: list[int] = []

    async def poller() -> None:
        claims.append(len(await store.llm_batches.claim_due(60.0, 8)))

    async with anyio.create_task_group() as group:  # two daemons' pollers at once
        group.start_soon(poller)
        group.start_soon(poller)
    assert sorted(claims) == [0, 1]
    assert await store.llm_batches.claim_due(60.0, 8) == []
    # the interval passes (skipped): due again
    await db.execute("UPDATE taskd.llm_batches SET next_poll_at = now()")
    [due] = await store.llm_batches.claim_due(60.0, 8)
    assert due.batch_id == "msgbatch_1" and due.custom_ids == ["a", "b"]
    assert not due.run_finished
    assert await db.fetchval("SELECT polls FROM taskd.llm_batches") == 2


async def test_a_canceled_runs_open_batch_is_due_at_once(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id="t", status="canceled")
    await open_batch(db, run_id, "msgbatch_1")
    await db.execute("UPDATE taskd.llm_batches SET next_poll_at = now() + interval '1 hour'")
    assert await store.llm_batches.claim_due(60.0, 8) == []  # the claim reads no runs
    assert await store.llm_batches.mark_runs_finished() == 1  # the poller's look every N ticks
    [due] = await store.llm_batches.claim_due(60.0, 8)
    assert due.run_finished and due.cancel_requested_at is None
    await store.llm_batches.cancel_requested(due.id)
    assert await store.llm_batches.mark_runs_finished() == 0
    assert await store.llm_batches.claim_due(60.0, 8) == []  # asked once


async def test_the_end_is_written_once_with_its_calls_and_wakes_the_run(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(
        db, task_id="t", status="waiting", run_at=datetime(2100, 1, 1, tzinfo=UTC)
    )
    await open_batch(db, run_id, "msgbatch_1")
    [due] = await store.llm_batches.claim_due(60.0, 8)
    results = [{"custom_id": "a", "result": {"type": "expired"}}] * 2
    ended, woken = await store.llm_batches.finish(due.id, results, [call(run_id)] * 2)
    assert ended and woken == [(run_id, "t")]
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id) == "queued"
    again = await store.llm_batches.finish(due.id, results, [call(run_id)] * 2)
    assert again == (False, [])
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_calls") == 2
    state = await store.llm_batches.read("msgbatch_1", run_id)
    assert state is not None and (state["status"], state["results"]) == ("ended", results)
    assert state["custom_ids"] == ["a", "b"] and state["in_step"] is None
    assert await store.llm_batches.read("msgbatch_1", uuid.uuid4()) is None


async def test_a_run_that_missed_its_wake_up_is_woken_at_most_three_times(
    store: Store, db: asyncpg.Connection
) -> None:
    # the batch ended while its run was executing; the run suspended after, not having read it
    run_id = await insert_run(db, task_id="t", status="executing")
    await open_batch(db, run_id, "msgbatch_1")
    [due] = await store.llm_batches.claim_due(60.0, 8)
    assert await store.llm_batches.finish(due.id, [{"custom_id": "a"}] * 2, []) == (True, [])
    for _ in range(3):
        await db.execute("UPDATE taskd.runs SET status = 'waiting' WHERE id = $1", run_id)
        assert await store.llm_batches.wake_missed() == [(run_id, "t")]
    await db.execute("UPDATE taskd.runs SET status = 'waiting' WHERE id = $1", run_id)
    assert await store.llm_batches.wake_missed() == []  # its code no longer reads the batch
    # a run that read its results is not woken for them
    other = await insert_run(db, task_id="t", status="executing")
    await open_batch(db, other, "msgbatch_2")
    [due] = await store.llm_batches.claim_due(60.0, 8)
    await store.llm_batches.finish(due.id, [{"custom_id": "a"}] * 2, [])
    assert (await store.llm_batches.read("msgbatch_2", other) or {}).get("status") == "ended"
    await db.execute("UPDATE taskd.runs SET status = 'waiting' WHERE id = $1", other)
    assert await store.llm_batches.wake_missed() == []

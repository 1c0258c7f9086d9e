"""What the store keeps of an ended Message Batch: any text the API sent is storable (NUL and
lone surrogates escaped, as taskd stores every text), the stored size is bounded (the results
past the bound stored as per-request errors), a failed try at storing it is counted, and the
batch of a run that has finished leaves the poller's look for missed wake-ups."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from taskd.store.database import create_pool
from taskd.store.llm_batches import storable_results
from taskd.store.store import Store
from tests.support.runs import insert_run


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def open_batch(db: asyncpg.Connection, run_id: uuid.UUID) -> int:
    row_id: int = await db.fetchval(
        """INSERT INTO taskd.llm_batches (batch_id, run_id, step, task_id, attempt, custom_ids,
                                          models, request_count, next_poll_at)
           VALUES ('msgbatch_1', $1, 'llm-batch:1', 't', 1, '{a,b}', '{m,m}', 2, now())
           RETURNING id""",
        run_id,
    )
    return row_id


def _text(value: str) -> dict[str, object]:
    message = {"content": [{"type": "text", "text": value}]}
    return {"custom_id": "a", "result": {"type": "succeeded", "message": message}}


def test_nul_and_lone_surrogates_are_escaped_and_other_text_is_kept() -> None:
    stored = orjson.loads(
        storable_results(
            [_text("a \x00 b"), _text("half \udcff pair"), _text("a literal \\u0000 stays")]
        )
    )
    texts = [item["result"]["message"]["content"][0]["text"] for item in stored]
    assert texts == ["a \\x00 b", "half \\udcff pair", "a literal \\u0000 stays"]


def test_results_past_the_bound_are_per_request_errors_in_order() -> None:
    results = [{"custom_id": f"r{i}", "result": {"type": "expired"}} for i in range(10)]
    one = len(orjson.dumps(results[0])) + 1
    stored = orjson.loads(storable_results(results, limit=2 + 4 * one))
    assert [item["custom_id"] for item in stored] == [f"r{i}" for i in range(10)]
    assert [item["result"]["type"] for item in stored] == ["expired"] * 4 + ["errored"] * 6
    error = stored[4]["result"]["error"]["error"]
    assert error["type"] == "results_too_large" and "split the batch" in error["message"]


async def test_escaped_results_are_stored_and_read_back(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id="t", status="waiting")
    row_id = await open_batch(db, run_id)
    results = [_text("a \x00 b"), {"custom_id": "b", "result": {"type": "expired"}}]
    assert (await store.llm_batches.finish(row_id, results, []))[0]
    state = await store.llm_batches.read("msgbatch_1", run_id)
    assert state is not None
    assert state["results"][0]["result"]["message"]["content"][0]["text"] == "a \\x00 b"


async def test_a_failed_try_at_storing_the_end_is_counted(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id="t", status="waiting")
    row_id = await open_batch(db, run_id)
    await store.llm_batches.finish_failed(row_id, "QueryCanceledError: statement timeout")
    await store.llm_batches.finish_failed(row_id, "QueryCanceledError: statement timeout")
    [due] = await store.llm_batches.claim_due(60.0, 8)
    assert due.finish_failures == 2
    assert due.last_error == "QueryCanceledError: statement timeout"


async def test_the_end_of_a_finished_runs_batch_leaves_the_missed_wake_up_look(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id="t", status="canceled")
    row_id = await open_batch(db, run_id)
    assert (await store.llm_batches.finish(row_id, [{"custom_id": "a"}] * 2, []))[0]
    # nobody will read it: marked read, so wake_missed's index no longer holds it
    assert await db.fetchval("SELECT read_at IS NOT NULL FROM taskd.llm_batches")
    waiting = await insert_run(db, task_id="t", status="waiting")
    await db.execute(
        """INSERT INTO taskd.llm_batches (batch_id, run_id, step, task_id, attempt, custom_ids,
                                          models, request_count, next_poll_at)
           VALUES ('msgbatch_2', $1, 'llm-batch:1', 't', 1, '{a}', '{m}', 1, now())""",
        waiting,
    )
    second = await db.fetchval("SELECT id FROM taskd.llm_batches WHERE batch_id = 'msgbatch_2'")
    await store.llm_batches.finish(second, [{"custom_id": "a"}], [])
    assert not await db.fetchval(
        "SELECT read_at IS NOT NULL FROM taskd.llm_batches WHERE id = $1", second
    )

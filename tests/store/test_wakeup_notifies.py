"""Every statement that makes a run claimable now tells the daemons (NOTIFY taskd_wakeup with
the run's queue), so that no daemon waits for its poll: a retry due at once, a rescued run, a
waiting run whose time came, a parent whose children ended, a slot freed in a limited queue.

(A regression test: the NOTIFYs of five of these statements were written in a CTE that the
planner dropped, and the polls hid it.)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskd.models import AttemptOutcome, Outcome, RunStatus
from taskd.store.database import create_pool
from taskd.store.store import Store
from tests.support.runs import insert_run, sql


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database, size=2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


class Notices:
    def __init__(self) -> None:
        self.queues: list[str] = []
        self.arrived = anyio.Event()

    def __call__(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self.queues.append(payload)
        self.arrived.set()

    async def expect(self, queue: str) -> None:
        with anyio.fail_after(5):
            while queue not in self.queues:
                self.arrived = anyio.Event()
                await self.arrived.wait()
        self.queues.clear()


@pytest.fixture
async def notices(database: str) -> AsyncIterator[Notices]:
    connection = await asyncpg.connect(database)
    found = Notices()
    await connection.add_listener("taskd_wakeup", found)
    try:
        yield found
    finally:
        await connection.close()


async def executing_run(db: asyncpg.Connection, queue: str, worker: uuid.UUID) -> uuid.UUID:
    return await insert_run(
        db,
        task_id="t",
        queue=queue,
        status="executing",
        attempt=1,
        worker_id=worker,
        lease_expires_at=sql("now() + interval '1 minute'"),
        attempt_started_at=sql("now()"),
        started_at=sql("now()"),
    )


async def test_each_statement_that_frees_a_run_wakes_the_daemons(
    db: asyncpg.Connection, store: Store, notices: Notices
) -> None:
    worker = uuid.uuid4()

    # a retry due at once
    run_id = await executing_run(db, "retries", worker)
    retry = Outcome(run_id, 1, RunStatus.QUEUED, AttemptOutcome.FAILED, retry_delay=0.0)
    assert await store.runs.complete_many(worker, [retry]) == {run_id: "queued"}
    await notices.expect("retries")

    # a slot freed in a queue with a concurrency limit
    await db.execute("INSERT INTO taskd.queues (name, concurrency) VALUES ('limited', 1)")
    run_id = await executing_run(db, "limited", worker)
    done = Outcome(run_id, 1, RunStatus.COMPLETED, AttemptOutcome.COMPLETED, output=b"1")
    assert await store.runs.complete_many(worker, [done]) == {run_id: "completed"}
    await notices.expect("limited")

    # a run whose worker is gone, rescued
    run_id = await executing_run(db, "rescued", worker)
    assert [row[0] for row in await store.runs.rescue([worker])] == [run_id]
    await notices.expect("rescued")

    # a waiting run whose time came
    await insert_run(
        db, task_id="t", queue="woken", status="waiting", run_at=sql("now() - interval '1 second'")
    )
    assert len(await store.waits.wake_due()) == 1
    await notices.expect("woken")

    # a waiting parent whose last child ended
    parent = await insert_run(
        db, task_id="t", queue="parents", status="waiting", run_at=sql("now() + interval '1 hour'")
    )
    child = await insert_run(
        db, task_id="t", status="completed", parent_id=parent, finished_at=sql("now()")
    )
    assert [row[0] for row in await store.waits.wake_parents([child])] == [parent]
    await notices.expect("parents")

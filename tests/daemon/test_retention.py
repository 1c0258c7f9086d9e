"""The retention pruner: what is past its retention goes, in batches that never block the queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, task
from taskd.config import Settings
from taskd.ids import uuid_at
from taskd.store.database import create_pool
from taskd.store.retention import SQL as RETENTION_SQL
from taskd.store.store import Store
from tests.support.in_process import StartDaemon
from tests.support.retention import DAY, LONG_AGO, NOW, TASK, id_at, pruner, seed_run
from tests.support.runs import insert_run
from tests.support.waiting import wait_for

TERMINAL = ["completed", "failed", "canceled", "expired"]


async def seed_worker(db: asyncpg.Connection, stopped: datetime | None) -> uuid.UUID:
    worker_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO taskd.workers (id, host, pid, version, concurrency, lock_key, started_at,"
        " heartbeat_at, stopped_at) VALUES ($1, 'host', 1, 'test', 1, 1, $2, $2, $3)",
        worker_id,
        LONG_AGO,
        stopped,
    )
    return worker_id


async def seed_event(db: asyncpg.Connection, created: datetime) -> uuid.UUID:
    event_id = id_at(created)
    await db.execute(
        "INSERT INTO taskd.events (id, name, created_at) VALUES ($1, 'retention.event', $2)",
        event_id,
        created,
    )
    return event_id


async def ids(db: asyncpg.Connection, table: str, column: str = "id") -> set[Any]:
    return {row[0] for row in await db.fetch(f"SELECT {column} FROM taskd.{table}")}


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def test_prune_deletes_only_what_is_past_its_retention(
    db: asyncpg.Connection, store: Store
) -> None:
    old = [
        await seed_run(db, TERMINAL[i % 4], LONG_AGO + timedelta(minutes=i), LONG_AGO)
        for i in range(30)
    ]
    kept = [
        # Created long ago, finished within the retention (a long run, a delayed one).
        await seed_run(db, "completed", LONG_AGO, NOW - timedelta(hours=1)),
        await seed_run(db, "failed", LONG_AGO, NOW - timedelta(hours=23)),
        await seed_run(db, "completed", NOW - timedelta(hours=1), NOW - timedelta(minutes=1)),
        # Not finished, however old: never pruned.
        await seed_run(db, "queued", LONG_AGO, None),
        await seed_run(db, "executing", LONG_AGO, None),
        await seed_run(db, "waiting", LONG_AGO, None),
    ]
    old_events = [await seed_event(db, NOW - timedelta(days=3)) for _ in range(3)]
    new_events = [await seed_event(db, NOW - timedelta(days=1)) for _ in range(2)]
    gone_worker = await seed_worker(db, NOW - timedelta(days=4))
    recent_worker = await seed_worker(db, NOW - timedelta(days=1))
    live_worker = await seed_worker(db, None)  # started long ago, still running

    maintenance = pruner(store, batch=7)  # 30 runs: 5 batches (7, 7, 7, 7, 2)
    deleted = await maintenance.run_once(now=NOW)

    assert deleted == {
        "runs": len(old),
        "events": 3,
        "workers": 1,
        "idempotency_keys": 0,
        "llm_calls": 0,
    }
    assert await ids(db, "runs") == set(kept)
    assert await ids(db, "attempts", "run_id") == set(kept)
    assert await ids(db, "run_logs", "run_id") == set(kept)
    assert await db.fetchval("SELECT count(*) FROM taskd.run_logs") == 2 * len(kept)
    assert await ids(db, "events") == set(new_events)
    assert not set(old_events) & await ids(db, "events")
    assert await ids(db, "workers") == {recent_worker, live_worker}
    assert gone_worker not in await ids(db, "workers")

    # Nothing left past its retention: a second pass deletes nothing; counters add up.
    assert await maintenance.run_once(now=NOW) == {
        "runs": 0,
        "events": 0,
        "workers": 0,
        "idempotency_keys": 0,
        "llm_calls": 0,
    }
    assert maintenance.pruned == {
        "runs": 30,
        "events": 3,
        "workers": 1,
        "idempotency_keys": 0,
        "llm_calls": 0,
    }


async def test_runs_with_ids_that_are_not_uuidv7_are_never_pruned(
    db: asyncpg.Connection, store: Store
) -> None:
    """README: a run inserted by hand with another kind of id is never pruned, however
    old; a version-4 id may sort below the cutoff's UUIDv7 (its first bits are random)."""
    hand_made = [
        uuid.UUID("00000000-0000-4000-8000-000000000001"),  # sorts below every UUIDv7 of now
        uuid.UUID("01000000-89ab-4def-8123-456789abcdef"),
        uuid.UUID("fedcba98-7654-4321-8fed-cba987654321"),  # sorts above them
    ]
    for run_id in hand_made:
        await insert_run(
            db,
            id=run_id,
            task_id=TASK,
            status="completed",
            created_at=LONG_AGO,
            run_at=LONG_AGO,
            attempt=1,
            started_at=LONG_AGO,
            finished_at=LONG_AGO,
        )
    v7 = await seed_run(db, "completed", LONG_AGO, LONG_AGO)
    deleted = await pruner(store).run_once(now=NOW)
    assert await ids(db, "runs") == set(hand_made)
    assert deleted["runs"] == 1
    assert v7 not in await ids(db, "runs")


async def test_expired_idempotency_keys_are_pruned(db: asyncpg.Connection, store: Store) -> None:
    run_id = await seed_run(db, "completed", LONG_AGO, LONG_AGO)
    await db.executemany(
        "INSERT INTO taskd.idempotency_keys (task_id, idempotency_key, run_id, expires_at)"
        " VALUES ($1, $2, $3, now() + $4::text::interval)",
        [(TASK, "expired", run_id, "-1 hour"), (TASK, "live", run_id, "1 hour")],
    )
    deleted = await pruner(store, runs=0).run_once(now=NOW)
    assert deleted["idempotency_keys"] == 1
    keys = await db.fetch("SELECT idempotency_key FROM taskd.idempotency_keys")
    assert [row[0] for row in keys] == ["live"]


async def test_zero_keeps_everything(db: asyncpg.Connection, store: Store) -> None:
    runs = {await seed_run(db, "completed", LONG_AGO, LONG_AGO) for _ in range(3)}
    event = await seed_event(db, LONG_AGO)
    worker = await seed_worker(db, LONG_AGO)

    maintenance = pruner(store, runs=0, events=0, workers=0)
    assert await maintenance.run_once(now=NOW) == {
        "runs": 0,
        "events": 0,
        "workers": 0,
        "idempotency_keys": 0,
        "llm_calls": 0,
    }
    assert await ids(db, "runs") == runs
    assert await ids(db, "events") == {event}
    assert await ids(db, "workers") == {worker}

    # Each one on its own: runs kept forever, events and workers pruned.
    maintenance = pruner(store, runs=0)
    assert await maintenance.run_once(now=NOW) == {
        "runs": 0,
        "events": 1,
        "workers": 1,
        "idempotency_keys": 0,
        "llm_calls": 0,
    }
    assert await ids(db, "runs") == runs


async def test_the_pruner_skips_locked_rows_and_never_blocks_a_claim(
    db: asyncpg.Connection, store: Store
) -> None:
    old = [
        await seed_run(db, "completed", LONG_AGO + timedelta(minutes=i), LONG_AGO)
        for i in range(30)
    ]
    queued = await seed_run(db, "queued", LONG_AGO, None)
    locked = old[20]

    # Another pruner (a second daemon) is in the middle of a batch: it deleted the 10 oldest
    # runs and has not committed yet. Another transaction holds one more run (an operator's).
    other = await store.pool.acquire()
    try:
        batch = other.transaction()
        await batch.start()
        # its window: the 11 oldest ids, the queued run (which stays) and 10 finished ones
        pruning = await other.fetchrow(RETENTION_SQL["prune_runs"], uuid_at(NOW), NOW, 11, None)
        assert pruning is not None and pruning["deleted"] == 10
        async with db.transaction():
            await db.execute("SELECT 1 FROM taskd.runs WHERE id = $1 FOR UPDATE", locked)
            with anyio.fail_after(5):  # waiting on either lock would hang here
                deleted = await pruner(store, batch=7).run_once(now=NOW)
                claimed = await store.runs.claim([TASK], None, 10, uuid.uuid4(), 60.0)
            remaining = await ids(db, "runs")
        await batch.rollback()
    finally:
        await store.pool.release(other)

    assert deleted["runs"] == 30 - 10 - 1
    assert remaining == {*old[:10], locked, queued}
    assert [run.id for run in claimed.runs] == [queued]  # the queue went on meanwhile
    # The other pruner rolled back: its 10 runs came back, and go now with the unlocked one.
    assert (await pruner(store, batch=7).run_once(now=NOW))["runs"] == 11
    assert await ids(db, "runs") == {queued}
    assert await ids(db, "attempts", "run_id") == {queued}
    assert await ids(db, "run_logs", "run_id") == {queued}


@task(id=TASK)
async def noop(payload: Any, ctx: Context) -> None:
    return None


async def test_the_daemon_prunes_on_its_interval(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    old = {await seed_run(db, "completed", LONG_AGO, LONG_AGO) for _ in range(5)}

    def prune_often(settings: Settings) -> None:
        settings.retention.runs = DAY
        settings.retention.interval = 0.1

    async with start_daemon([noop], prune_often) as daemon:
        fresh = await client.trigger(noop)
        assert daemon.pruner is not None
        maintenance = daemon.pruner

        async def pruned() -> bool:
            # the count is taken when the delete's result is back: after its commit
            return maintenance.pruned["runs"] == len(old)

        await wait_for(pruned)
        assert not old & await ids(db, "runs")
    assert fresh in await ids(db, "runs")

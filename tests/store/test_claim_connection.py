"""The daemon's claimer keeps its claim pool's connection between claims (Store with
hold_claim_connection): claims reuse one session, a session cut under it costs one claim and
the next claim opens another, and the connection goes back before the pool closes."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import pytest

from taskd.store.database import DB_ERRORS, create_pool
from taskd.store.store import Store
from tests.support.runs import insert_runs

NAME = "taskd-claims"


async def claimer_pids(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = $1",
        NAME,
    )
    return [r["pid"] for r in rows]


async def test_claims_keep_one_connection_and_take_a_new_one_after_it_is_cut(
    database: str, db: asyncpg.Connection
) -> None:
    await insert_runs(db, 5, task_id="t")
    pool = await create_pool(database, size=1)
    claim_pool = await create_pool(database, size=1, application_name=NAME)
    store = Store(pool, claim_pool=claim_pool, hold_claim_connection=True)
    worker = uuid.uuid4()
    try:
        [pid] = await claimer_pids(db)
        for _ in range(2):
            claim = await store.runs.claim(["t"], None, 1, worker, 60.0)
            assert len(claim.runs) == 1
            assert await claimer_pids(db) == [pid]
            # held: the pool has nothing to give until the claimer gives it back
            with anyio.move_on_after(0.05) as waited:
                await claim_pool.acquire()
            assert waited.cancelled_caught

        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        # the cut costs the claim that meets it (asyncpg may still see the session open: the
        # error is a lost connection either way, which the claimer retries) ...
        with pytest.raises(DB_ERRORS):
            for _ in range(3):  # until the client has read the server's goodbye
                await store.runs.claim(["t"], None, 1, worker, 60.0)
        # ... and the next claim gets a session of its own
        claim = await store.runs.claim(["t"], None, 1, worker, 60.0)
        assert len(claim.runs) == 1
        [new_pid] = await claimer_pids(db)
        assert new_pid != pid
        claim = await store.runs.claim(["t"], None, 1, worker, 60.0)
        assert len(claim.runs) == 1
        assert await claimer_pids(db) == [new_pid]
    finally:
        await store.runs.release_claim_connection()
        with anyio.fail_after(5):  # nothing left out: the pool closes at once
            await claim_pool.close()
        await pool.close()
    executing = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'executing'")
    assert executing == 4


async def test_a_store_without_its_own_claim_pool_holds_nothing(
    database: str, db: asyncpg.Connection
) -> None:
    await insert_runs(db, 2, task_id="t")
    pool = await create_pool(database, size=1)
    store = Store(pool, hold_claim_connection=True)  # claims share the one pool
    try:
        claim = await store.runs.claim(["t"], None, 1, uuid.uuid4(), 60.0)
        assert len(claim.runs) == 1
        async with pool.acquire() as connection:  # given back after the claim
            assert await connection.fetchval("SELECT 1") == 1
    finally:
        with anyio.fail_after(5):
            await pool.close()

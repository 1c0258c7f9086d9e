"""A claimed run carries the retry and max_duration its trigger gave, even when the trigger's
transaction committed while the claim was already under way (the claim statement's snapshot
predates it; only the function's own pick sees the run)."""

from __future__ import annotations

import uuid

import anyio
import asyncpg

from taskd.store.database import create_pool
from taskd.store.store import Store
from tests.support.waiting import wait_for

OPTIONS = '{"retry": {"max_attempts": 7, "min_delay": "9s"}, "max_duration": "5s"}'


async def test_a_run_committed_during_the_claim_keeps_its_trigger_options(database: str) -> None:
    producer = await asyncpg.connect(database)
    blocker = await asyncpg.connect(database)
    pool = await create_pool(database)
    try:
        store = Store(pool)
        # the app's transaction: the run exists, not yet committed
        producing = producer.transaction()
        await producing.start()
        run_id = await producer.fetchval("SELECT taskd.trigger('t1', '{}', $1::jsonb)", OPTIONS)
        # hold the claim inside claim_runs, after its statement's snapshot was taken
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE taskd.queues IN ACCESS EXCLUSIVE MODE")
        claimed = []

        async def claim() -> None:
            result = await store.runs.claim(["t1"], None, 10, uuid.uuid4(), 60.0)
            claimed.extend(result.runs)

        async with anyio.create_task_group() as group:
            group.start_soon(claim)

            async def claim_waits_on_the_lock() -> bool:
                # Not through `blocker`: inside its transaction pg_stat_activity is one snapshot
                # (taken at its first read), so a first look that came before the claim began
                # to wait would be the answer forever (this failed on a loaded machine).
                waiting = await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE '%claim_runs%'"
                )
                return bool(waiting)

            await wait_for(claim_waits_on_the_lock)
            await producing.commit()
            await blocking.commit()
        (run,) = claimed
        assert run.id == run_id
        assert run.max_attempts == 7
        assert run.retry == {"min_delay": 9}  # (the attempt limit lives in max_attempts)
        assert run.max_duration == 5.0
    finally:
        await pool.close()
        await blocker.close()
        await producer.close()

"""A cancel request wins over whatever the attempt then does (L1, and the drain hand-back)."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, Retry, RunStatus, task
from taskd.store.runs import SQL as RUN_SQL
from tests.support.waiting import wait_for, wait_for_run

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


async def test_a_cancel_during_the_last_attempt_wins_over_its_failure(
    client: Client, db: asyncpg.Connection, start_daemon: Any
) -> None:
    attempts: list[int] = []

    @task(id="cancel.last-attempt", retry=Retry(max_attempts=1))
    async def last_attempt(payload: None, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await db.fetchval("SELECT taskd.cancel($1)", ctx.run_id)
        raise RuntimeError("failed before the cancel landed")  # no await after the cancel

    async with start_daemon([last_attempt], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(last_attempt), FINISHED)
    assert attempts == [1] and run.status is RunStatus.CANCELED
    assert run.finished_at is not None


async def test_a_cancel_requested_before_a_drain_hands_the_run_back_canceled(
    client: Client, db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    started = anyio.Event()

    @task(id="cancel.drained")
    async def drained(payload: None, ctx: Context) -> None:
        started.set()
        await anyio.sleep_forever()

    canceller = await asyncpg.connect(database)
    try:
        async with start_daemon([drained], poll_interval=0.05) as daemon:
            run_id = await client.trigger(drained)
            await started.wait()
            # The cancel is requested (not yet committed, so the daemon has not heard of it)
            # when the drain hands the run back: the hand-back waits for the row, then finds
            # the request.
            tx = canceller.transaction()
            await tx.start()
            assert await canceller.fetchval("SELECT taskd.cancel($1)", run_id) == "executing"
            async with anyio.create_task_group() as group:
                group.start_soon(daemon.stop, 0)
                await wait_for(
                    lambda: db.fetchval(
                        "SELECT count(*) > 0 FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query = $1",
                        RUN_SQL["release_many"],
                    )
                )
                await tx.commit()
        run = await wait_for_run(client, run_id, FINISHED)
    finally:
        await canceller.close()
    assert run.status is RunStatus.CANCELED
    assert run.attempt == 0  # the drained attempt is not spent

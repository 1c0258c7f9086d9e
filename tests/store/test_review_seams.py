"""Where issue 17's parts meet, in the database: the pruner and status webhooks' deliveries
(a delivery being redelivered is skipped, not waited for; a delivery's age is its created_at,
the virtual clock's in a taskd.testing database, not only its id's real time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import asyncpg

from taskd.store.store import Store
from tests.support.runs import insert_run

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def dead_deliveries(db: asyncpg.Connection, count: int) -> list[asyncpg.Record]:
    """``count`` dead run.completed deliveries (their runs failed)."""
    await db.execute(
        "INSERT INTO taskd.webhook_subscriptions (name, url, events, secret)"
        " VALUES ('all', 'http://127.0.0.1:9/hook', ARRAY['run.completed'], $1)",
        SECRET,
    )
    for _ in range(count):
        run = await insert_run(db, task_id="t")
        await db.execute("UPDATE taskd.runs SET status = 'completed' WHERE id = $1", run)
    await db.execute("UPDATE taskd.runs SET status = 'failed' WHERE task_id = 'taskd.webhook'")
    rows = await db.fetch("SELECT id, status FROM taskd.webhook_deliveries ORDER BY id")
    assert [r["status"] for r in rows] == ["dead"] * count
    return rows


async def test_the_pruner_skips_a_delivery_another_transaction_holds(
    database: str, db: asyncpg.Connection
) -> None:
    held, _other = await dead_deliveries(db, 2)
    redelivering = await asyncpg.connect(database)
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        async with redelivering.transaction():
            # what `redeliver` holds while it queues the delivery's new run
            await redelivering.execute(
                "SELECT 1 FROM taskd.webhook_deliveries WHERE id = $1 FOR UPDATE", held["id"]
            )
            with anyio.fail_after(20):
                pruned = await Store(pool).webhooks.prune(datetime.now(UTC) + timedelta(1), 10)
        assert pruned == 1
        left = await db.fetch("SELECT id FROM taskd.webhook_deliveries")
        assert [r["id"] for r in left] == [held["id"]]
    finally:
        await redelivering.close()
        await pool.close()


async def test_a_delivery_made_after_the_cutoff_stays_whatever_its_id(
    database: str, db: asyncpg.Connection
) -> None:
    """In a test database whose clock was skipped 30 days ahead, a delivery made now has an id
    of real time (uuidv7) but a created_at of the virtual time: 7 days' retention keeps it."""
    [delivery] = await dead_deliveries(db, 1)
    virtual_now = datetime.now(UTC) + timedelta(days=30)
    await db.execute(
        "UPDATE taskd.webhook_deliveries SET created_at = $2 WHERE id = $1",
        delivery["id"],
        virtual_now,
    )
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        hooks = Store(pool).webhooks
        assert await hooks.prune(virtual_now - timedelta(days=7), 10) == 0
        assert await hooks.prune(virtual_now + timedelta(seconds=1), 10) == 1
    finally:
        await pool.close()

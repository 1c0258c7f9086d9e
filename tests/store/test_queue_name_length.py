"""A run's queue name is one `taskd queues pause` accepts (review finding L13): 1 to 200
characters, checked by the database for producers that write SQL. (The development migration
0012 that renamed unfinished runs of older databases is squashed into 0001_baseline; what a
database it migrated still holds is checked in test_migration_adoption.py.)"""

from __future__ import annotations

import asyncpg
import pytest

from taskd import Client


async def test_sql_producers_cannot_create_a_run_in_a_queue_pause_refuses(
    client: Client, db: asyncpg.Connection
) -> None:
    for name in ("x" * 201, ""):
        with pytest.raises(asyncpg.CheckViolationError, match="runs_queue_name_length"):
            await db.fetchval(
                "SELECT taskd.trigger('t', '{}', jsonb_build_object('queue', $1::text))", name
            )
    longest = "q" * 200
    run_id = await db.fetchval(
        "SELECT taskd.trigger('t', '{}', jsonb_build_object('queue', $1::text))", longest
    )
    assert (await client.get_run(run_id)).queue == longest
    await client.pause_queue(longest)  # the queue it landed in can be paused
    assert await db.fetchval("SELECT paused FROM taskd.queues WHERE name = $1", longest)

"""A run's queue name is one `taskd queues pause` accepts (review finding L13): 1 to 200
characters, checked by the database for producers that write SQL; migration 0012 gives
unfinished runs with another name one that fits, so that their claims keep working."""

from __future__ import annotations

import asyncpg
import pytest

from taskd import Client
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations, shipped_migrations
from tests.support.runs import insert_run


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


async def test_migration_gives_unfinished_runs_a_queue_name_that_fits(
    empty_database: str,
) -> None:
    connection = await connect(empty_database)
    try:
        # the schema before 0012, with runs a SQL producer could create then
        await connection.execute("CREATE SCHEMA taskd")
        for migration in shipped_migrations():
            if migration.version < 12:
                await connection.execute(migration.sql)
        await connection.execute(
            "CREATE TABLE taskd.migrations (version int PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in shipped_migrations():
            if migration.version < 12:
                await connection.execute(
                    "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        rows = {}
        for label, queue, status in (
            ("queued", "a" * 300, "queued"),
            ("empty", "", "queued"),
            ("waiting", "b" * 250, "waiting"),
            ("finished", "c" * 300, "completed"),
        ):
            rows[label] = await insert_run(connection, task_id="t", queue=queue, status=status)

        applied = await apply_migrations(connection)
        assert [m.version for m in applied if m.version == 12] == [12]

        async def queue_of(label: str) -> str:
            name: str = await connection.fetchval(
                "SELECT queue FROM taskd.runs WHERE id = $1", rows[label]
            )
            return name

        assert await queue_of("queued") == "a" * 200
        assert await queue_of("empty") == "default"
        assert await queue_of("waiting") == "b" * 200
        assert await queue_of("finished") == "c" * 300  # never updated again: left as it was
        # the fixed runs can still be claimed (the constraint checks every update)
        await connection.execute(
            "UPDATE taskd.runs SET status = 'executing' WHERE id = ANY($1)",
            [rows["queued"], rows["empty"]],
        )
    finally:
        await connection.close()

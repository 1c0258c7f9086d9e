"""A database migrated by the development migrations 0001_initial..0014 keeps working.

They were squashed into 0001_baseline, which gives the same schema (pg_dump --schema-only of a
database migrated by the old files and of one migrated by the baseline are identical; the
command is in the README's notes). Such a database is therefore made here as the old files
left it: the baseline's schema with the fourteen old rows in taskd.migrations. It is adopted
at start-up: its rows become the baseline's, the later migrations apply, and runs suspended
before keep resuming: a run waiting on a token wakes when the token is completed, a parent
waiting on children wakes when its last child is canceled.

Any other state of the old rows (a partial migration, an old file edited since) is refused
with one line that says what to do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from taskd.store.database import connect
from taskd.store.migrations import (
    SQUASHED,
    MigrationError,
    apply_migrations,
    shipped_migrations,
)

APPLIED_AT = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
async def connection(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    connected = await connect(empty_database)
    try:
        yield connected
    finally:
        await connected.close()


async def migrated_by_the_old_files(
    connection: asyncpg.Connection, rows: tuple[tuple[int, str, str], ...] = SQUASHED
) -> None:
    """The schema the old files gave, recorded as they recorded themselves."""
    baseline = shipped_migrations()[0]
    await connection.execute("CREATE SCHEMA taskd")
    await connection.execute(baseline.sql)
    await connection.execute(
        "CREATE TABLE taskd.migrations (version int PRIMARY KEY, name text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for version, name, checksum in rows:
        await connection.execute(
            "INSERT INTO taskd.migrations VALUES ($1, $2, $3, $4)",
            version,
            name,
            checksum,
            APPLIED_AT if version == 1 else datetime.now(UTC),
        )


async def recorded(connection: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await connection.fetch(
        "SELECT version, name, checksum FROM taskd.migrations ORDER BY version"
    )
    return [(r["version"], r["name"], r["checksum"]) for r in rows]


async def test_the_old_rows_become_the_baselines_and_waiting_runs_still_resume(
    connection: asyncpg.Connection,
) -> None:
    await migrated_by_the_old_files(connection)
    # suspended by the previous version: a run on a token for an hour (wait.for_token marked
    # the token awaited), and a parent on its one unfinished child
    token_run = await connection.fetchval(
        "INSERT INTO taskd.runs (task_id, status, run_at) VALUES"
        " ('t', 'waiting', now() + interval '1 hour') RETURNING id"
    )
    token_id = await connection.fetchval(
        "INSERT INTO taskd.wait_tokens (id, run_id, expires_at, awaited)"
        " VALUES (taskd.new_run_id(), $1, now() + interval '1 hour', true) RETURNING id",
        token_run,
    )
    parent = await connection.fetchval(
        "INSERT INTO taskd.runs (task_id, status, run_at) VALUES"
        " ('parent', 'waiting', now() + interval '1 hour') RETURNING id"
    )
    child = await connection.fetchval(
        "INSERT INTO taskd.runs (task_id, parent_id) VALUES ('child', $1) RETURNING id", parent
    )
    # finished before 0012 added runs_queue_name_length (NOT VALID: history is not checked),
    # in a queue whose name it refuses: adoption must neither validate nor touch it
    async with connection.transaction():
        await connection.execute("ALTER TABLE taskd.runs DROP CONSTRAINT runs_queue_name_length")
        old_run = await connection.fetchval(
            "INSERT INTO taskd.runs (task_id, queue, status) VALUES ('t', $1, 'completed')"
            " RETURNING id",
            "c" * 300,
        )
        await connection.execute(
            "ALTER TABLE taskd.runs ADD CONSTRAINT runs_queue_name_length"
            " CHECK (queue <> '' AND length(queue) <= 200) NOT VALID"
        )

    shipped = shipped_migrations()
    applied = await apply_migrations(connection)
    assert [m.version for m in applied] == [m.version for m in shipped[1:]], "only the later"
    assert await recorded(connection) == [(m.version, m.name, m.checksum) for m in shipped]
    baseline_applied_at = await connection.fetchval(
        "SELECT applied_at FROM taskd.migrations WHERE version = 1"
    )
    assert baseline_applied_at == APPLIED_AT, "the schema dates from the oldest migration"
    assert await apply_migrations(connection) == [], "adopted once"
    assert await connection.fetchval("SELECT queue FROM taskd.runs WHERE id = $1", old_run) == (
        "c" * 300
    )
    assert not await connection.fetchval(
        "SELECT convalidated FROM pg_constraint WHERE conname = 'runs_queue_name_length'"
    )

    async def state(run_id: object) -> tuple[str, bool]:
        row = await connection.fetchrow(
            "SELECT status, run_at <= now() AS due FROM taskd.runs WHERE id = $1", run_id
        )
        assert row is not None
        return row["status"], row["due"]

    await connection.execute("SELECT taskd.complete_token($1, '\"yes\"')", token_id)
    assert await state(token_run) == ("queued", True)

    assert await connection.fetchval("SELECT taskd.cancel($1)", child) == "canceled"
    assert await state(parent) == ("queued", True)


async def test_a_partial_old_migration_is_refused_with_what_to_do(
    connection: asyncpg.Connection,
) -> None:
    await migrated_by_the_old_files(connection, SQUASHED[:11])
    before = await recorded(connection)
    with pytest.raises(MigrationError) as refused:
        await apply_migrations(connection)
    message = str(refused.value)
    assert "\n" not in message
    assert "0011_waits_hardening.sql" in message and "taskd migrate" in message, message
    assert await recorded(connection) == before, "nothing recorded or applied"


async def test_an_old_migration_edited_since_is_refused_with_what_to_do(
    connection: asyncpg.Connection,
) -> None:
    edited = tuple(
        (version, name, "an earlier edit" if version == 10 else checksum)
        for version, name, checksum in SQUASHED
    )
    await migrated_by_the_old_files(connection, edited)
    with pytest.raises(MigrationError) as refused:
        await apply_migrations(connection)
    message = str(refused.value)
    assert "\n" not in message
    assert "0010_queues.sql" in message and "DROP SCHEMA taskd" in message, message
    assert await recorded(connection) == list(edited)

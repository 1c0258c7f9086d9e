"""Schema from code: `taskd.migrate` and `taskd.schema_status`, as an application calls them.

`migrate` takes a DSN, an asyncpg Pool or a Connection, is idempotent, and several callers at
once on a fresh database all succeed with each migration applied once (the advisory lock).
`schema_status` says current, behind, ahead or uninitialised; a database a newer taskd
migrated (it records a migration this taskd does not ship) is refused by `migrate` with one
line that names the migration and says to upgrade taskd, before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

import taskd
from taskd.store.migrations import MIGRATIONS_TABLE, plain_sql, read_plan, shipped_migrations
from tests.support.waiting import wait_for

LABELS = [m.label for m in shipped_migrations()]


async def recorded(dsn: str) -> list[tuple[int, str, str]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT version, name, checksum FROM taskd.migrations ORDER BY version"
        )
    finally:
        await connection.close()
    return [(r["version"], r["name"], r["checksum"]) for r in rows]


async def at_baseline_only(dsn: str) -> None:
    """The database as the first shipped migration alone left it (recorded as taskd does)."""
    baseline = shipped_migrations()[0]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(MIGRATIONS_TABLE)
        await connection.execute(baseline.sql)
        await connection.execute(
            "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
            baseline.version,
            baseline.name,
            baseline.checksum,
        )
    finally:
        await connection.close()


async def record_future_migration(dsn: str) -> None:
    """What a newer taskd leaves: a migration this taskd does not ship, recorded as applied."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO taskd.migrations (version, name, checksum) "
            "VALUES (9999, 'from_the_future', 'unknown here')"
        )
    finally:
        await connection.close()


@pytest.fixture
async def pool(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(empty_database, min_size=1, max_size=2)
    try:
        yield created
    finally:
        await created.close()


async def test_several_callers_at_once_on_a_fresh_database_apply_each_migration_once(
    empty_database: str, pool: asyncpg.Pool
) -> None:
    callers = [taskd.migrate(empty_database) for _ in range(5)] + [taskd.migrate(pool)]
    results = await asyncio.gather(*callers)

    assert sorted(results, key=len) == [[]] * 5 + [LABELS], results
    assert [(v, n) for v, n, _ in await recorded(empty_database)] == [
        (m.version, m.name) for m in shipped_migrations()
    ]
    status = await taskd.schema_status(empty_database)
    assert status.state == "current"
    assert status.applied == LABELS
    assert status.pending == status.unknown == []
    assert status.database_version == status.code_version == shipped_migrations()[-1].version


async def test_migrate_takes_a_pool_or_a_connection_and_is_idempotent(
    empty_database: str, pool: asyncpg.Pool
) -> None:
    assert await taskd.migrate(pool) == LABELS
    assert await taskd.migrate(pool) == []
    connection = await asyncpg.connect(empty_database)
    try:
        assert await taskd.migrate(connection) == []
        assert (await taskd.schema_status(connection)).state == "current"
        # the lock was released: this session's advisory lock would still show here
        held = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert held == 0
    finally:
        await connection.close()
    async with pool.acquire() as acquired:
        assert (await taskd.schema_status(acquired)).state == "current"
    # the schema works: the SQL producer is there
    run_id = await pool.fetchval("SELECT taskd.trigger('some.task', '{}')")
    assert run_id is not None


async def test_a_fresh_database_is_uninitialised(empty_database: str) -> None:
    status = await taskd.schema_status(empty_database)
    assert status.state == "uninitialised"
    assert status.applied == []
    assert status.pending == LABELS
    assert status.database_version == 0
    connection = await asyncpg.connect(empty_database)
    try:
        created = await connection.fetchval("SELECT to_regnamespace('taskd') IS NOT NULL")
    finally:
        await connection.close()
    assert not created, "schema_status changes nothing"


async def test_a_database_without_the_later_migrations_is_behind_and_migrate_catches_up(
    empty_database: str,
) -> None:
    await at_baseline_only(empty_database)
    first, *later = shipped_migrations()
    assert later, "a migration after the baseline exists"

    status = await taskd.schema_status(empty_database)
    assert status.state == "behind"
    assert status.applied == [first.label]
    assert status.pending == [m.label for m in later]
    assert status.database_version == first.version

    assert await taskd.migrate(empty_database) == [m.label for m in later]
    assert (await taskd.schema_status(empty_database)).state == "current"


async def test_a_database_a_newer_taskd_migrated_is_ahead_and_refused(database: str) -> None:
    await record_future_migration(database)

    status = await taskd.schema_status(database)
    assert status.state == "ahead"
    assert status.unknown == ["9999_from_the_future"]
    assert status.pending == []
    assert status.database_version == 9999

    with pytest.raises(taskd.MigrationError) as refused:
        await taskd.migrate(database)
    message = str(refused.value)
    assert len(message.splitlines()) == 1, message
    assert "9999_from_the_future" in message
    assert "upgrade taskd" in message
    assert isinstance(refused.value, taskd.TaskdError)


async def test_ahead_wins_over_behind_and_nothing_is_applied(empty_database: str) -> None:
    await at_baseline_only(empty_database)
    await record_future_migration(empty_database)
    before = await recorded(empty_database)

    status = await taskd.schema_status(empty_database)
    assert status.state == "ahead"
    assert status.pending == LABELS[1:]
    assert status.unknown == ["9999_from_the_future"]
    with pytest.raises(taskd.MigrationError, match="9999_from_the_future"):
        await taskd.migrate(empty_database)
    assert await recorded(empty_database) == before


async def test_a_changed_migration_is_an_error_for_status_too(database: str) -> None:
    baseline = shipped_migrations()[0]
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "UPDATE taskd.migrations SET checksum = 'as-applied-before' WHERE version = $1",
            baseline.version,
        )
    finally:
        await connection.close()
    with pytest.raises(taskd.MigrationError, match=baseline.filename):
        await taskd.schema_status(database)


async def test_migrate_waits_for_the_sql_script_another_tool_is_applying(
    empty_database: str,
) -> None:
    """`taskd migrate --sql` takes taskd's lock for its transaction: a taskd migrating
    meanwhile waits, then finds everything applied."""
    tool = await asyncpg.connect(empty_database)
    watcher = await asyncpg.connect(empty_database)
    try:
        script = plain_sql(await read_plan(tool))
        transaction = tool.transaction()
        await transaction.start()
        await tool.execute(script)
        migrating = asyncio.create_task(taskd.migrate(empty_database))

        async def waits_for_the_lock() -> bool:
            waiting: int = await watcher.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return waiting == 1

        await wait_for(waits_for_the_lock)
        assert not migrating.done()
        await transaction.commit()
        assert await migrating == []
    finally:
        await tool.close()
        await watcher.close()
    assert (await taskd.schema_status(empty_database)).state == "current"


@pytest.fixture
async def app_role_dsn(database: str) -> AsyncIterator[str]:
    """``database`` as a role that may use taskd's schema but not create anything in the
    database (no CREATE on it), as an application's role often is."""
    role = f"taskd_app_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-secret'")
        await admin.execute(f"GRANT USAGE ON SCHEMA taskd TO {role}")
        await admin.execute(f"GRANT SELECT ON taskd.migrations TO {role}")
    finally:
        await admin.close()
    parts = urlsplit(database)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}:app-secret@{host}"))
    finally:
        admin = await asyncpg.connect(database)
        try:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")
        finally:
            await admin.close()


async def test_a_role_without_create_rights_migrates_a_current_schema(
    database: str, app_role_dsn: str
) -> None:
    # nothing pending: no DDL at all (CREATE SCHEMA IF NOT EXISTS would need CREATE rights)
    assert await taskd.migrate(app_role_dsn) == []
    assert (await taskd.schema_status(app_role_dsn)).state == "current"

    # something pending: the migration fails as one line naming it, and nothing is recorded
    last = shipped_migrations()[-1]
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("DELETE FROM taskd.migrations WHERE version = $1", last.version)
    finally:
        await connection.close()
    with pytest.raises(taskd.MigrationError) as failed:
        await taskd.migrate(app_role_dsn)
    message = str(failed.value)
    assert len(message.splitlines()) == 1, message
    assert f"migration {last.filename} failed, nothing of it was applied" in message
    assert "must be owner" in message or "permission denied" in message, message
    assert [v for v, _, _ in await recorded(database)] == [
        m.version for m in shipped_migrations()[:-1]
    ]


async def test_bad_input_is_one_clear_line(empty_database: str) -> None:
    with pytest.raises(TypeError, match="DSN string, an asyncpg Pool or an asyncpg Connection"):
        await taskd.migrate(42)  # type: ignore[arg-type]
    # a port nothing listens on (port 1 is privileged and unused)
    unreachable = "postgresql://taskd@127.0.0.1:1/nowhere"
    for call in (taskd.migrate, taskd.schema_status):
        with pytest.raises(taskd.MigrationError) as failed:
            await call(unreachable)
        message = str(failed.value)
        assert len(message.splitlines()) == 1, message
        assert "127.0.0.1:1/nowhere" in message

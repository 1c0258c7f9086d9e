"""A database migrated by the development migrations 0001_initial..0014 keeps working.

They were squashed into 0001_baseline, which gives the same schema (pg_dump --schema-only of a
database migrated by the old files and of one migrated by the baseline are identical; the
command is in the README's notes). Such a database is therefore made here as the old files
left it: the baseline's schema with the fourteen old rows in taskd.migrations. It is adopted
at start-up: its rows become the baseline's, the later migrations apply, and runs suspended
before keep resuming: a run waiting on a token wakes when the token is completed, a parent
waiting on children wakes when its last child is canceled.

Some old files were edited after databases had applied them: a database migrated at a08cce9
recorded 0011 without a later line of taskd.claim_runs, and 0012 and 0013 with older comments.
It is adopted too, its claim_runs re-created as the baseline has it. Any other state of the old
rows (a partial migration, an old file edited in its schema) is refused with one line that says
what to do, before anything is written.
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
    baseline_function,
    shipped_migrations,
)
from tests.support.runs import insert_run, sql

APPLIED_AT = datetime(2026, 6, 1, tzinfo=UTC)

# What a database migrated at commit a08cce9 recorded for 0011..0013 (git show
# a08cce9:daemon/store/migrations/00NN_*.sql | sha256sum).
AT_A08CCE9 = {
    11: "fd9b2f84ee7042c56f3f11542a50dba45eb84f396fa35402c75de078393f8014",
    12: "39e3439be7b9a7f49753a2612097aaa3e18570d1173f96a31c7191a7dbe9582d",
    13: "aca87d5324ddfcef796d0a00acde6db7f1f87d6902a01b78a217d651421ddd58",
}
# 0011 as first committed (55465fd): without the backfill of awaited tokens added by ac75cca.
FIRST_0011 = "9152536fad3bc6c8217983f5c9d41c68bc0c85aeadf952cc30e04ac73dc953c5"
# The lines dd90cec added to taskd.claim_runs (0011), missing from a database of a08cce9.
CLAIM_START_FIX = """\
            -- the attempts start now, after the counts: a slot they found free was released
            -- by an outcome committed before their snapshots, so no run's end is stamped
            -- after the start of the run that took its slot (stamped at the lock, a start
            -- could precede the end of a run whose outcome committed just after)
            t_start := clock_timestamp();
"""


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
    token_run = await insert_run(
        connection, task_id="t", status="waiting", run_at=sql("now() + interval '1 hour'")
    )
    token_id = await connection.fetchval(
        "INSERT INTO taskd.wait_tokens (id, run_id, expires_at, awaited)"
        " VALUES (taskd.new_run_id(), $1, now() + interval '1 hour', true) RETURNING id",
        token_run,
    )
    parent = await insert_run(
        connection, task_id="parent", status="waiting", run_at=sql("now() + interval '1 hour'")
    )
    child = await insert_run(connection, task_id="child", parent_id=parent)
    # finished before 0012 added runs_queue_name_length (NOT VALID: history is not checked),
    # in a queue whose name it refuses: adoption must neither validate nor touch it
    async with connection.transaction():
        await connection.execute("ALTER TABLE taskd.runs DROP CONSTRAINT runs_queue_name_length")
        old_run = await insert_run(connection, task_id="t", queue="c" * 300, status="completed")
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


async def claim_runs_definition(connection: asyncpg.Connection) -> str:
    # looked up when run, not when planned: the statement is cached, and a migration may have
    # dropped and created the function since
    definition: str = await connection.fetchval(
        "SELECT pg_get_functiondef(to_regproc($1))", "taskd.claim_runs"
    )
    return definition


async def test_a_database_migrated_at_a08cce9_is_adopted_with_the_baselines_claim(
    connection: asyncpg.Connection, db: asyncpg.Connection
) -> None:
    rows = tuple(
        (version, name, AT_A08CCE9.get(version, checksum)) for version, name, checksum in SQUASHED
    )
    await migrated_by_the_old_files(connection, rows)
    baseline = shipped_migrations()[0]
    current_claim = baseline_function(baseline, "claim_runs")
    assert CLAIM_START_FIX in current_claim
    await connection.execute(current_claim.replace(CLAIM_START_FIX, ""))
    fresh_claim = await claim_runs_definition(db)  # db: a database migrated from nothing
    assert await claim_runs_definition(connection) != fresh_claim, "the claim of a08cce9"

    applied = await apply_migrations(connection)

    shipped = shipped_migrations()
    assert [m.filename for m in applied] == [m.filename for m in shipped[1:]]
    assert "0002_cancel_wakes_parent.sql" in [m.filename for m in applied]
    assert await recorded(connection) == [(m.version, m.name, m.checksum) for m in shipped]
    assert await claim_runs_definition(connection) == fresh_claim
    assert await apply_migrations(connection) == [], "adopted once"


async def test_an_old_migration_whose_first_version_is_recorded_is_refused(
    connection: asyncpg.Connection,
) -> None:
    rows = tuple(
        (version, name, FIRST_0011 if version == 11 else AT_A08CCE9.get(version, checksum))
        for version, name, checksum in SQUASHED
    )
    await migrated_by_the_old_files(connection, rows)
    claim_before = await claim_runs_definition(connection)
    with pytest.raises(MigrationError) as refused:
        await apply_migrations(connection)
    message = str(refused.value)
    assert "\n" not in message
    assert "0011_waits_hardening.sql" in message and "DROP SCHEMA taskd" in message, message
    assert await recorded(connection) == list(rows), "nothing recorded"
    assert await claim_runs_definition(connection) == claim_before, "nothing re-created"
    assert not await connection.fetchval(
        "SELECT EXISTS (SELECT FROM pg_proc WHERE proname = 'cancel_without_wake')"
    ), "nothing applied"

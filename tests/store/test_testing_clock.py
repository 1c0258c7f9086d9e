"""The database side of taskd.testing's virtual clock (taskd/testing/clock.sql): a test
database's search_path puts the ``taskd_clock`` schema before an explicit pg_catalog, so its
now() and clock_timestamp() shadow the built-in ones in taskd's SQL and plpgsql functions,
and the columns that default to the time of the insert take the virtual time too."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from taskd.testing.server import create_database, drop_database

SKEW = timedelta(days=3, hours=2)


@pytest.fixture
async def clocked(taskd_server_dsn: str, taskd_template: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh test database whose clock is SKEW ahead."""
    dsn = await create_database(taskd_server_dsn, taskd_template, clock=True)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE taskd_clock.skew SET amount = $1", SKEW)
        yield connection
    finally:
        await connection.close()
        await drop_database(taskd_server_dsn, dsn)


def near(value: timedelta, expected: timedelta) -> bool:
    return abs(value - expected) < timedelta(seconds=5)


async def test_now_and_clock_timestamp_are_shadowed_by_the_search_path(
    clocked: asyncpg.Connection,
) -> None:
    path = await clocked.fetchval("SHOW search_path")
    assert path.startswith("taskd_clock, pg_catalog")
    row = await clocked.fetchrow(
        "SELECT now() - pg_catalog.now() AS now, "
        "clock_timestamp() - pg_catalog.clock_timestamp() AS clock, "
        "statement_timestamp() - pg_catalog.statement_timestamp() AS statement, "
        "transaction_timestamp() - pg_catalog.transaction_timestamp() AS tx"
    )
    assert row["now"] == SKEW and row["statement"] == SKEW and row["tx"] == SKEW
    assert near(row["clock"], SKEW)


async def test_taskd_functions_and_defaults_read_the_virtual_clock(
    clocked: asyncpg.Connection,
) -> None:
    run_id = await clocked.fetchval(
        'SELECT taskd.trigger(\'some-task\', \'{}\', \'{"delay": "1 hour", "ttl": "2 hours"}\')'
    )
    row = await clocked.fetchrow(
        "SELECT run_at - pg_catalog.now() AS run_at, expires_at - pg_catalog.now() AS expires,"
        " created_at - pg_catalog.now() AS created FROM taskd.runs WHERE id = $1",
        run_id,
    )
    assert near(row["run_at"], SKEW + timedelta(hours=1))  # plpgsql: now() + delay
    assert near(row["expires"], SKEW + timedelta(hours=2))
    assert near(row["created"], SKEW)  # a column DEFAULT now()


async def test_a_database_without_the_clock_keeps_real_time(database: str) -> None:
    connection = await asyncpg.connect(database)
    try:
        assert await connection.fetchval("SELECT now() = pg_catalog.now()")
        assert not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'taskd_clock')"
        )
    finally:
        await connection.close()


def test_taskd_sql_has_no_unshadowable_clock_and_no_search_path_of_its_own() -> None:
    """CURRENT_TIMESTAMP and its kin are keywords (the virtual clock cannot reach them), and a
    function's own SET search_path would undo the test database's: taskd's SQL has neither."""
    store = Path(str(resources.files("taskd.store")))
    forbidden = re.compile(
        r"\b(current_timestamp|localtimestamp|current_time|current_date|localtime)\b"
        r"|set\s+search_path|search_path\s*=",
        re.IGNORECASE,
    )
    found = [
        f"{path.name}: {match.group(0)}"
        for path in sorted([*store.glob("*.sql"), *store.glob("migrations/*.sql")])
        for match in forbidden.finditer(path.read_text())
    ]
    assert found == []

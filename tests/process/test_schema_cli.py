"""Schema from the command line: `taskd migrate --dry-run` and `--sql`, `taskd status`, and a
daemon or `taskd migrate` refusing a schema a newer taskd migrated.

`--dry-run` prints what `taskd migrate` would run, a header line per migration, and changes
nothing. `--sql` prints a script a team applies with its own tool (here: asyncpg's plain
`execute`, as psql or a migration tool runs a file); afterwards taskd sees the schema as
current and a daemon starts on it. Applied a second time, the script stops before changing
anything, with a line that says to make it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

import taskd
from taskd.store.migrations import MIGRATIONS_TABLE, shipped_migrations
from tests.support.cli import one_line_failure
from tests.support.cli import taskd as run_taskd
from tests.support.daemon_process import daemons

SHIPPED = shipped_migrations()


async def execute(dsn: str, sql: str) -> None:
    """Run a script as psql or a migration tool does: plain SQL, no parameters, one
    transaction (asyncpg sends it in one simple-protocol message)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def recorded(dsn: str) -> list[tuple[int, str, str]] | None:
    connection = await asyncpg.connect(dsn)
    try:
        if not await connection.fetchval("SELECT to_regclass('taskd.migrations') IS NOT NULL"):
            return None
        rows = await connection.fetch(
            "SELECT version, name, checksum FROM taskd.migrations ORDER BY version"
        )
    finally:
        await connection.close()
    return [(r["version"], r["name"], r["checksum"]) for r in rows]


async def at_baseline_only(dsn: str) -> None:
    baseline = SHIPPED[0]
    await execute(
        dsn,
        MIGRATIONS_TABLE
        + baseline.sql
        + "\nINSERT INTO taskd.migrations (version, name, checksum) "
        + f"VALUES ({baseline.version}, '{baseline.name}', '{baseline.checksum}');",
    )


async def test_dry_run_prints_each_pending_migration_and_changes_nothing(
    empty_database: str, tmp_path: Path
) -> None:
    done = await run_taskd(empty_database, "migrate", "--dry-run", cwd=tmp_path)
    assert done.code == 0, done
    for migration in SHIPPED:
        assert f"-- migration {migration.filename}" in done.out, done
        assert migration.sql.strip().splitlines()[-1] in done.out
    assert "CREATE TABLE IF NOT EXISTS taskd.migrations" in done.out
    assert await recorded(empty_database) is None, "nothing created"
    status = await taskd.schema_status(empty_database)
    assert status.state == "uninitialised"

    await at_baseline_only(empty_database)
    before = await recorded(empty_database)
    done = await run_taskd(empty_database, "migrate", "--dry-run", cwd=tmp_path)
    assert done.code == 0, done
    assert f"-- migration {SHIPPED[0].filename}" not in done.out, "applied already"
    for migration in SHIPPED[1:]:
        assert f"-- migration {migration.filename}" in done.out, done
    assert await recorded(empty_database) == before, "nothing recorded"

    await taskd.migrate(empty_database)
    done = await run_taskd(empty_database, "migrate", "--dry-run", cwd=tmp_path)
    assert (done.code, done.out.strip()) == (0, "schema is up to date: nothing to run"), done


async def test_sql_applied_by_another_tool_leaves_a_current_schema_a_daemon_starts_on(
    empty_database: str, tmp_path: Path
) -> None:
    done = await run_taskd(empty_database, "migrate", "--sql", cwd=tmp_path)
    assert done.code == 0, done
    assert await recorded(empty_database) is None, "--sql changes nothing"
    script = done.out
    assert "pg_advisory_xact_lock" in script

    await execute(empty_database, script)

    assert await recorded(empty_database) == [(m.version, m.name, m.checksum) for m in SHIPPED]
    assert (await taskd.schema_status(empty_database)).state == "current"
    assert await taskd.migrate(empty_database) == [], "taskd sees them as applied"
    async with daemons() as group:
        # as a team that applies migrations with its own tool runs it: the daemon only checks
        daemon = await group.start(empty_database, TASKD_DATABASE__MIGRATE="false")
        await daemon.ready(timeout=60)
        assert await daemon.stop() == 0, daemon.output()

    # the same script again: the database moved on, so it stops before changing anything
    with pytest.raises(asyncpg.RaiseError, match="make it again with taskd migrate --sql"):
        await execute(empty_database, script)


async def test_sql_for_a_database_behind_holds_only_the_pending_migrations(
    empty_database: str, tmp_path: Path
) -> None:
    await at_baseline_only(empty_database)
    done = await run_taskd(empty_database, "migrate", "--sql", cwd=tmp_path)
    assert done.code == 0, done
    assert f"-- migration {SHIPPED[0].filename}" not in done.out
    for migration in SHIPPED[1:]:
        assert f"-- migration {migration.filename}" in done.out

    await execute(empty_database, done.out)
    status = await taskd.schema_status(empty_database)
    assert (status.state, status.applied) == ("current", [m.label for m in SHIPPED])

    done = await run_taskd(empty_database, "migrate", "--sql", cwd=tmp_path)
    assert done.code == 0, done
    assert "no pending migration" in done.out
    await execute(empty_database, done.out)  # a no-op


async def test_a_daemon_that_does_not_migrate_refuses_a_schema_behind(
    empty_database: str, tmp_path: Path
) -> None:
    await at_baseline_only(empty_database)
    before = await recorded(empty_database)
    done = await run_taskd(
        empty_database,
        "run",
        cwd=tmp_path,
        timeout=60,
        TASKD_TASKS__MODULES="[]",
        TASKD_DATABASE__MIGRATE="false",
    )
    problem = one_line_failure(
        done, "behind", SHIPPED[-1].label, "database.migrate is false", "taskd migrate --sql"
    )
    assert problem is None, problem
    assert await recorded(empty_database) == before


async def test_a_schema_a_newer_taskd_migrated_stops_migrate_and_the_daemon(
    database: str, tmp_path: Path
) -> None:
    await execute(
        database,
        "INSERT INTO taskd.migrations (version, name, checksum) "
        "VALUES (9999, 'from_the_future', 'unknown here')",
    )
    before = await recorded(database)
    for command in (["migrate"], ["migrate", "--dry-run"], ["migrate", "--sql"], ["run"]):
        done = await run_taskd(
            database, *command, cwd=tmp_path, timeout=60, TASKD_TASKS__MODULES="[]"
        )
        problem = one_line_failure(done, "9999_from_the_future", "upgrade taskd")
        assert problem is None, problem
    assert await recorded(database) == before

    done = await run_taskd(database, "status", cwd=tmp_path)
    assert done.code == 0, done
    assert done.out.splitlines()[-1].startswith("schema: ahead"), done
    assert "9999_from_the_future" in done.out.splitlines()[-1]


async def test_status_shows_the_schema(empty_database: str, tmp_path: Path) -> None:
    done = await run_taskd(empty_database, "status", cwd=tmp_path)
    assert done.code == 0, done
    assert done.out.strip() == (
        "schema: uninitialised: run taskd migrate (a starting daemon migrates too)"
    )

    await taskd.migrate(empty_database)
    done = await run_taskd(empty_database, "status", cwd=tmp_path)
    assert done.code == 0, done
    assert done.out.splitlines()[0].startswith("workers: 0 live"), done
    assert done.out.splitlines()[-1] == f"schema: current ({SHIPPED[-1].label})", done

    done = await run_taskd(empty_database, "status", "--json", cwd=tmp_path)
    assert done.code == 0, done
    shown = taskd.SchemaStatus.model_validate(json.loads(done.out)["schema"])
    assert shown == await taskd.schema_status(empty_database)

"""An applied migration whose file changed stops start-up with one line (issue 13 item 4).

The database never ran the changed text, so running on would serve a schema that is not the
one the files describe. `taskd migrate` and `taskd run` are real subprocesses here: each must
exit non-zero with one line on stderr that names the file and says what to do, no traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import asyncpg
import pytest

from taskd.store.database import connect
from taskd.store.migrations import MigrationError, apply_migrations, shipped_migrations

TASKD = Path(sys.executable).parent / "taskd"


async def run_taskd(dsn: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKD_")}
    env |= {
        "TASKD_DATABASE__URL": dsn,
        "TASKD_ADMIN__LISTEN": "127.0.0.1:0",
        "TASKD_TASKS__MODULES": "[]",
    }
    with anyio.fail_after(60):
        done = await anyio.run_process([str(TASKD), *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def record_other_checksum(dsn: str, version: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "UPDATE taskd.migrations SET checksum = 'as-applied-before' WHERE version = $1",
            version,
        )
    finally:
        await connection.close()


async def test_migrate_and_run_stop_with_one_line_naming_the_changed_file(database: str) -> None:
    baseline = shipped_migrations()[0]
    await record_other_checksum(database, baseline.version)

    for command in ("migrate", "run"):
        code, out, err = await run_taskd(database, command)
        context = f"taskd {command} -> exit {code}\nstdout: {out!r}\nstderr: {err!r}"
        assert code != 0, context
        assert "Traceback" not in err + out, context
        assert len(err.splitlines()) == 1, context
        assert baseline.filename in err, context
        assert "new numbered migration" in err, context  # what to do


async def test_nothing_is_applied_past_a_changed_migration(empty_database: str) -> None:
    connection = await connect(empty_database)
    try:
        await apply_migrations(connection)
        first, *later = shipped_migrations()
        # as if the later migrations had not been applied yet when the first one changed
        await connection.execute("DELETE FROM taskd.migrations WHERE version > $1", first.version)
        await record_other_checksum(empty_database, first.version)
        with pytest.raises(MigrationError, match=first.filename):
            await apply_migrations(connection)
        versions = await connection.fetch("SELECT version FROM taskd.migrations")
        assert [r["version"] for r in versions] == [first.version]
        assert later, "a later migration exists to be held back"
    finally:
        await connection.close()

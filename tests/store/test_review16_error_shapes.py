"""Error groups when a message holds an apostrophe inside a word (can't, customer's): the
data quoted after it is still data, and failures recorded before the fix are regrouped."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

import taskd
from taskd.store.migrations import MIGRATIONS_TABLE, shipped_migrations
from tests.support.runs import insert_runs

TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/tasks/users.py", line 12, in find
    raise LookupError(message)
LookupError: {message}
"""


def error(message: str) -> str:
    return orjson.dumps(
        {"type": "LookupError", "message": message, "traceback": TRACEBACK.format(message=message)}
    ).decode()


async def fingerprint(db: asyncpg.Connection, value: Any) -> str | None:
    result: str | None = await db.fetchval("SELECT taskd.error_fingerprint($1::text::jsonb)", value)
    return result


@pytest.mark.parametrize(
    ("message", "shape"),
    [
        ("Couldn't find user 'alice'", "Couldn't find user <str>"),
        ("customer's order 'A-1' failed", "customer's order <str> failed"),
        ("can't find 'a' and can't find 'b'", "can't find <str> and can't find <str>"),
        ("no customer 'O'Brien' here", "no customer <str> here"),
        ("it's done", "it's done"),
        ("customer 'cust-1234' not found", "customer <str> not found"),
        ("x='a',y=\"b\"", "x=<str>,y=<str>"),
    ],
)  # fmt: skip
async def test_an_apostrophe_in_a_word_opens_no_quoted_string(
    db: asyncpg.Connection, message: str, shape: str
) -> None:
    assert await db.fetchval("SELECT taskd.error_message_shape($1)", message) == shape


async def test_failures_that_differ_in_what_follows_a_contraction_share_a_group(
    db: asyncpg.Connection,
) -> None:
    alice = await fingerprint(db, error("Couldn't find user 'alice'"))
    assert alice is not None
    assert await fingerprint(db, error("Couldn't find user 'bob'")) == alice


async def test_failures_recorded_before_the_migration_are_grouped_by_the_same_shape(
    empty_database: str,
) -> None:
    migrations = shipped_migrations()
    ours = next(i for i, m in enumerate(migrations) if m.name == "error_groups")
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(MIGRATIONS_TABLE)
        for migration in migrations[:ours]:  # the database as the taskd before it left it
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        [run_id] = await insert_runs(connection, 1, task_id="t", status="failed", attempt=3)
        messages = ["Couldn't find user 'alice'", "Couldn't find user 'bob'", "gateway refused"]
        for attempt, message in enumerate(messages, 1):
            await connection.execute(
                "INSERT INTO taskd.attempts (run_id, attempt, started_at, finished_at, outcome,"
                " error) VALUES ($1, $2, now(), now(), 'failed', $3::text::jsonb)",
                run_id,
                attempt,
                error(message),
            )

        await taskd.migrate(empty_database)
        after = [
            row["fingerprint"]
            for row in await connection.fetch(
                "SELECT fingerprint FROM taskd.attempts ORDER BY attempt"
            )
        ]
        assert after == [await fingerprint(connection, error(m)) for m in messages]
        assert after[0] == after[1] != after[2]
    finally:
        await connection.close()

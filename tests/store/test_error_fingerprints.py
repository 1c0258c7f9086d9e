"""Error fingerprints (migration 0014): a failure's message shape, its top frame of task code,
and the group they make, as the completer writes them with each failed attempt.

The normalisation is SQL (taskd.error_message_shape, taskd.error_frame,
taskd.error_fingerprint): the completer computes it when it records the failure, in the same
statement, so every writer of attempts gets the same groups.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import orjson
import pytest

import taskd
from taskd.store.migrations import MIGRATIONS_TABLE, shipped_migrations
from tests.support.runs import insert_runs

TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/.venv/lib/python3.11/site-packages/taskd/worker/executor.py", line 301, in run
    result = await task.fn(payload, ctx)
  File "/srv/app/tasks/orders.py", line {line}, in charge
    return await gateway.pay(amount)
  File "/srv/app/.venv/lib/python3.11/site-packages/httpx/_client.py", line 1600, in send
    raise
  File "/usr/lib/python3.11/asyncio/tasks.py", line 500, in wait_for
    raise TimeoutError
TimeoutError: {message}
"""


@pytest.mark.parametrize(
    ("message", "shape"),
    [
        ("customer 'cust-1234' not found", "customer <str> not found"),
        ('key "a b" missing', "key <str> missing"),
        ("timed out after 30.5 s (attempt 3)", "timed out after <num> s (attempt <num>)"),
        ("run 0190c2e4-1234-7abc-8def-0123456789ab lost", "run <id> lost"),
        ("object at 0x7f3a2b1c freed, digest ab12cd34ef", "object at <hex> freed, digest <hex>"),
        ("HTTP 503 from https://api.example.com/v2/orders/77", "HTTP <num> from https://api.example.com/v<num>/orders/<num>"),
        ("a  cafe\tbeef\nfeed", "a cafe beef feed"),  # words of hex letters stay words
        ("division by zero", "division by zero"),
        (None, ""),
    ],
)  # fmt: skip
async def test_a_message_shape_replaces_the_data(
    db: asyncpg.Connection, message: str | None, shape: str
) -> None:
    assert await db.fetchval("SELECT taskd.error_message_shape($1)", message) == shape


async def test_the_top_frame_is_the_last_one_of_task_code(db: asyncpg.Connection) -> None:
    frame = await db.fetchval(
        "SELECT taskd.error_frame($1)", TRACEBACK.format(line=42, message="x")
    )
    assert frame == "tasks/orders.py:42 in charge"
    # taskd's own files (installed, or a checkout's daemon/taskd) and the standard library
    # are never the task's code; without any other frame there is none
    only_taskd = (
        'Traceback (most recent call last):\n  File "/w/daemon/taskd/worker/executor.py", '
        'line 3, in run\n  File "/w/daemon/taskd/client.py", line 9, in get\n'
        '  File "<frozen importlib._bootstrap>", line 1, in load\nKeyError: 1\n'
    )
    assert await db.fetchval("SELECT taskd.error_frame($1)", only_taskd) is None
    assert await db.fetchval("SELECT taskd.error_frame(NULL)") is None


def error(message: str, line: int = 42, kind: str = "TimeoutError") -> str:
    return orjson.dumps(
        {
            "type": kind,
            "message": message,
            "traceback": TRACEBACK.format(line=line, message=message),
        }
    ).decode()


async def fingerprint(db: asyncpg.Connection, value: Any) -> str | None:
    result: str | None = await db.fetchval("SELECT taskd.error_fingerprint($1::text::jsonb)", value)
    return result


async def test_failures_that_differ_in_their_data_or_line_share_a_fingerprint(
    db: asyncpg.Connection,
) -> None:
    first = await fingerprint(db, error("gateway timed out after 30 s"))
    assert first is not None and len(first) == 16
    assert await fingerprint(db, error("gateway timed out after 31 s")) == first
    assert await fingerprint(db, error("gateway timed out after 30 s", line=43)) == first
    assert await fingerprint(db, error("gateway refused")) != first
    assert await fingerprint(db, error("gateway timed out after 30 s", kind="OSError")) != first
    # the documented recipe: sha256 of type, shape and frame (without its line)
    expected = hashlib.sha256(
        b"TimeoutError\ngateway timed out after <num> s\ntasks/orders.py in charge"
    ).hexdigest()[:16]
    assert first == expected
    assert await fingerprint(db, "null") is None
    assert await fingerprint(db, '{"type": "Canceled", "message": "x"}') is not None


async def test_the_migration_gives_the_failures_recorded_before_it_their_group(
    empty_database: str,
) -> None:
    migrations = shipped_migrations()
    ours = next(i for i, m in enumerate(migrations) if m.name == "error_groups")
    connection = await asyncpg.connect(empty_database)
    try:
        await connection.execute(MIGRATIONS_TABLE)
        for migration in migrations[:ours]:  # the database as the taskd before this one left it
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        [run_id] = await insert_runs(connection, 1, task_id="t", status="completed", attempt=2)
        await connection.execute(
            "INSERT INTO taskd.attempts (run_id, attempt, started_at, finished_at, outcome, error)"
            " VALUES ($1, 1, now(), now(), 'failed', $2::text::jsonb),"
            "        ($1, 2, now(), now(), 'completed', NULL)",
            run_id,
            error("gateway timed out after 30 s"),
        )
        await taskd.migrate(empty_database)
        rows = await connection.fetch(
            "SELECT attempt, fingerprint FROM taskd.attempts ORDER BY attempt"
        )
        assert [row["fingerprint"] for row in rows] == [
            await fingerprint(connection, error("gateway timed out after 30 s")),
            None,
        ]
        assert rows[0]["fingerprint"] is not None
    finally:
        await connection.close()

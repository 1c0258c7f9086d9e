"""Rows of ``taskd.runs`` written straight into the table, in whatever state a test starts from.

``await insert_run(db, task_id="t", status="executing", attempt=1)`` gives one run's id;
``await insert_runs(db, 1000, task_id="t", queue=each(names))`` gives many in one statement. A
column left out keeps the table's default. A value is bound as a parameter of the column's own
type and goes to every row; ``each(values)`` gives one value per row; ``sql("now() + interval
'1 hour'")`` is written into the statement as it is, and may use ``n``, the row's number from 1.
A jsonb value is its JSON text (``payload='"seeded"'``) on a bare asyncpg connection.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

COLUMN_TYPES = """
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'taskd.runs'::regclass AND attnum > 0 AND NOT attisdropped
"""


class Sql(str):
    """An SQL expression, written into the INSERT instead of bound as a value."""


def sql(expression: str) -> Sql:
    return Sql(expression)


class Each(list[Any]):
    """One value per row, in row order."""


def each(values: Any) -> Each:
    return Each(values)


async def insert_runs(db: asyncpg.Connection, count: int, **columns: Any) -> list[uuid.UUID]:
    """``count`` runs in one INSERT; their ids in row order."""
    # Bound values take the column's type explicitly: in INSERT ... SELECT a bare parameter
    # would have no type to take.
    types = dict(await db.fetch(COLUMN_TYPES))
    names: list[str] = []
    values: list[str] = []
    arguments: list[Any] = [count]
    for name, value in columns.items():
        names.append(name)
        if isinstance(value, Sql):
            values.append(value)
            continue
        if isinstance(value, Each):
            assert len(value) == count, f"{name}: {len(value)} values for {count} rows"
            arguments.append(value)
            values.append(f"(${len(arguments)}::{types[name]}[])[n]")
        else:
            arguments.append(value)
            values.append(f"${len(arguments)}::{types[name]}")
    rows = await db.fetch(
        f"INSERT INTO taskd.runs ({', '.join(names)})"
        f" SELECT {', '.join(values)} FROM generate_series(1, $1::int) AS n"
        " ORDER BY n RETURNING id",
        *arguments,
    )
    return [row["id"] for row in rows]


async def insert_run(db: asyncpg.Connection, *, task_id: str, **columns: Any) -> uuid.UUID:
    """One run; its id."""
    [run_id] = await insert_runs(db, 1, task_id=task_id, **columns)
    return run_id

"""The fleet's change feed in the database: who streams, what changed (``change_feed.sql``)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("change_feed")


async def streamers(connection: asyncpg.Connection, own_pid: int) -> int:
    """How many other daemons have an ``/api/stream`` client right now."""
    count: int = await connection.fetchval(SQL["streamers"], own_pid)
    return count


async def set_streaming(connection: asyncpg.Connection, streaming: bool) -> None:
    await connection.execute(SQL["set_streaming"], streaming)


async def announce(connection: asyncpg.Connection) -> None:
    await connection.execute(SQL["announce"])


async def publish(connection: asyncpg.Connection, payloads: list[str]) -> None:
    await connection.execute(SQL["publish"], payloads)


async def metadata(
    connection: asyncpg.Connection, run_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    rows = await connection.fetch(SQL["metadata"], run_ids)
    return {row["id"]: row["metadata"] for row in rows}


async def finished_since(
    connection: asyncpg.Connection, since: float, worker_id: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        SQL["finished_since"], since, worker_id, limit
    )
    return rows

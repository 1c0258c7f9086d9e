"""Events (``taskd.send_event``) and the subscriptions that turn one into runs."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from taskd.models import Event
from taskd.store.queries import load

SQL = load("events")

RUN_LINKS = 20
"""Most runs an event's entry of ``page`` links to."""


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def send(
        self, name: str, payload: str, *, connection: asyncpg.Connection | None = None
    ) -> uuid.UUID:
        """taskd.send_event: record the event, create its subscribers' runs; its id."""
        on = connection if connection is not None else self.pool
        event_id: uuid.UUID = await on.fetchval(SQL["send"], name, payload)
        return event_id

    async def list(self, name: str | None, limit: int) -> list[Event]:
        rows = await self.pool.fetch(SQL["list"], name, limit)
        return [Event(**dict(row)) for row in rows]

    async def page(
        self, name: str | None, before: uuid.UUID | None, limit: int
    ) -> builtins.list[dict[str, Any]]:
        """Events newest first (keyset: ids below ``before``), each with ``run_links``: the
        first ``RUN_LINKS`` runs it created, oldest first (runs_event_idx)."""
        conditions: builtins.list[str] = []
        args: builtins.list[Any] = []
        # one statement per combination: each gets its own plan (pkey or events_name_idx)
        if name is not None:
            args.append(name)
            conditions.append(f"name = ${len(args)}")
        if before is not None:
            args.append(before)
            conditions.append(f"id < ${len(args)}")
        where = " AND ".join(conditions) or "true"
        args.append(limit)
        statement = (
            SQL["page"].replace("WHERE_CONDITIONS", where).replace("$LIMIT", f"${len(args)}")
        )
        async with self.pool.acquire() as connection:
            rows = [dict(row) for row in await connection.fetch(statement, *args)]
            links = await connection.fetch(SQL["run_links"], [row["id"] for row in rows], RUN_LINKS)
        by_event: dict[uuid.UUID, builtins.list[dict[str, Any]]] = {}
        for link in links:
            by_event.setdefault(link["event_id"], []).append(
                {"id": link["id"], "task_id": link["task_id"], "status": link["status"]}
            )
        for row in rows:
            row["run_links"] = by_event.get(row["id"], [])
        return rows

    async def subscriptions(self) -> dict[str, builtins.list[str]]:
        """Event names per subscribed task."""
        rows = await self.pool.fetch(SQL["subscription_list"])
        return {row["task_id"]: list(row["events"]) for row in rows}

    async def sync_subscriptions(
        self, task_ids: Sequence[str], pairs: Sequence[tuple[str, str]]
    ) -> None:
        """These tasks' subscriptions become exactly ``pairs`` of (event name, task id)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(SQL["subscription_clear"], list(task_ids))
            await connection.execute(
                SQL["subscription_add"], [p[0] for p in pairs], [p[1] for p in pairs]
            )

    async def retire_subscriptions(self, unserved_for: float) -> builtins.list[tuple[str, str]]:
        """Delete subscriptions of tasks no live worker has served for ``unserved_for``
        seconds: (event name, task id)."""
        rows = await self.pool.fetch(SQL["subscription_retire_unserved"], unserved_for)
        return [(row[0], row[1]) for row in rows]

"""Events (``taskd.send_event``) and the subscriptions that turn one into runs."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence

import asyncpg

from taskd.models import Event
from taskd.store.queries import load

SQL = load("events")


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

"""Outbound status webhooks: subscriptions (config or API) and their deliveries.

Events are captured by triggers of migration 0018 (every path that changes a run's status goes
through the database); this module holds the verbs of the client, the CLI, the admin API and
the delivery task (``taskd.webhook_delivery``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from taskd.ids import uuid_at
from taskd.store.queries import load

SQL = load("webhooks")

DELIVERY_STATUSES = ("pending", "sending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription as created or synced: filters None mean every task, queue or tag."""

    name: str
    url: str
    events: Sequence[str]
    tasks: Sequence[str] | None = None
    queues: Sequence[str] | None = None
    tags: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What one attempt of a delivery sends, and whether the subscription takes it."""

    id: uuid.UUID
    body: bytes
    subscription: str
    url: str
    secrets: tuple[str, ...]
    refused: str | None
    """Why it is not sent (the subscription paused or disabled); None: send it."""


def _json_bytes(value: Any) -> bytes:
    """A jsonb value as JSON bytes (text on a bare connection, decoded with taskd's codecs)."""
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _list(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values is not None else None


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def sync_config(
        self,
        specs: Sequence[tuple[SubscriptionSpec, str, bool]],
        rotation_overlap: float,
    ) -> list[str]:
        """Upsert each ``(spec, secret, enabled)`` of the config by name, in one transaction;
        config-sourced subscriptions no longer listed are disabled. Returns those disabled."""
        async with self.pool.acquire() as connection, connection.transaction():
            for spec, secret, enabled in specs:
                await connection.fetchval(
                    SQL["upsert_config"],
                    spec.name,
                    spec.url,
                    list(spec.events),
                    _list(spec.tasks),
                    _list(spec.queues),
                    _list(spec.tags),
                    secret,
                    enabled,
                    rotation_overlap,
                )
            rows = await connection.fetch(
                SQL["disable_unlisted"], [spec.name for spec, _, _ in specs]
            )
        return [row["name"] for row in rows]

    async def create(self, spec: SubscriptionSpec, secret: str) -> uuid.UUID | None:
        """The new subscription's id; None when the name is taken."""
        result: uuid.UUID | None = await self.pool.fetchval(
            SQL["create"],
            spec.name,
            spec.url,
            list(spec.events),
            _list(spec.tasks),
            _list(spec.queues),
            _list(spec.tags),
            secret,
        )
        return result

    async def subscriptions(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(SQL["list"])]

    async def get(self, name: str) -> dict[str, Any] | None:
        return next((s for s in await self.subscriptions() if s["name"] == name), None)

    async def pause(self, name: str) -> bool:
        return await self.pool.fetchval(SQL["set_paused"], name, True) is not None

    async def resume(self, name: str) -> bool:
        return await self.pool.fetchval(SQL["resume"], name) is not None

    async def delete(self, name: str) -> bool:
        return await self.pool.fetchval(SQL["delete"], name) is not None

    async def rotate(self, name: str, secret: str, overlap: float) -> bool:
        return await self.pool.fetchval(SQL["rotate"], name, secret, overlap) is not None

    async def deliveries(
        self,
        *,
        subscription: str | None = None,
        status: str | None = None,
        run_id: uuid.UUID | None = None,
        before: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before``: the page after the delivery with that id."""
        conditions: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("s.name", subscription),
            ("d.status", status),
            ("d.run_id", run_id),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f" AND {column} = ${len(args)}")
        if before is not None:
            args.append(before)
            conditions.append(f" AND d.id < ${len(args)}")
        args.append(limit)
        query = SQL["deliveries"] + "".join(conditions) + f" ORDER BY d.id DESC LIMIT ${len(args)}"
        return [dict(row) for row in await self.pool.fetch(query, *args)]

    async def delivery(self, delivery_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(SQL["delivery"], delivery_id)
        if row is None:
            return None
        found = dict(row)
        found["payload"] = orjson.loads(_json_bytes(found["payload"]))
        return found

    async def redeliver(self, delivery_id: uuid.UUID) -> tuple[str | None, uuid.UUID | None]:
        """(its status before, the new delivery run): (None, None) when there is no such
        delivery; (status, None) when it is still pending or being sent."""
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(SQL["redeliver"], delivery_id)
        if row is None:
            return None, None
        return row["was"], row["delivery_run_id"]

    async def redeliver_dead(self, subscription: str) -> list[uuid.UUID]:
        """The new delivery runs of every dead delivery of ``subscription``."""
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(SQL["redeliver_dead"], subscription)
        return [row["delivery_run_id"] for row in rows]

    async def to_send(self, delivery_id: uuid.UUID, sender: uuid.UUID) -> Outgoing | None:
        """The delivery as run ``sender`` sends it; None when it is gone or no longer that
        run's (its subscription deleted, or redelivered by another run)."""
        row = await self.pool.fetchrow(SQL["to_send"], delivery_id, sender)
        if row is None:
            return None
        refused = None
        if not row["enabled"]:
            refused = f"webhook {row['name']!r} is disabled: {row['disabled_reason']}"
        elif row["paused"]:
            refused = f"webhook {row['name']!r} is paused"
        secrets = (row["secret"],) + ((row["previous_secret"],) if row["previous_secret"] else ())
        return Outgoing(
            id=row["id"],
            body=_json_bytes(row["payload"]),
            subscription=row["name"],
            url=row["url"],
            secrets=secrets,
            refused=refused,
        )

    async def prune(self, created_before: datetime, batch: int) -> int:
        """Delete up to ``batch`` finished deliveries made before ``created_before``."""
        status = await self.pool.execute(
            SQL["prune"], uuid_at(created_before), batch, created_before
        )
        return int(status.rsplit(" ", 1)[-1])

    async def record_attempt(
        self,
        delivery_id: uuid.UUID,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        disable_after: float,
        disable: str | None = None,
    ) -> str | None:
        """Count one HTTP attempt; the reason when it disabled the subscription now (failing
        for ``disable_after`` seconds, or ``disable`` given: a 410 Gone)."""
        row = await self.pool.fetchrow(
            SQL["record_attempt"], delivery_id, ok, status, error, disable_after, disable
        )
        if row is None or row["enabled"] or not row["was_enabled"]:
            return None
        reason: str | None = row["disabled_reason"]
        return reason

"""Inbound webhooks' store: a delivery's event, sent once per idempotency key."""

from __future__ import annotations

import uuid

import asyncpg

from taskd.ids import new_run_id
from taskd.store.queries import load

SQL = load("hooks")

KEY_OWNER = "taskd:hooks"
"""The ``task_id`` under which deliveries' keys are held in ``taskd.idempotency_keys``."""


class HookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def send_once(
        self, key: str, event: str, payload: str, key_ttl: float, *, acquire_timeout: float
    ) -> tuple[uuid.UUID, bool]:
        """In one transaction: hold ``key`` for ``key_ttl`` seconds and send the event
        (``taskd.send_event``); (its id, True). When an earlier delivery holds the key:
        (that delivery's event id, False) and nothing is sent. Returns once committed;
        TimeoutError when no connection is free within ``acquire_timeout`` seconds."""
        acquiring = self.pool.acquire(timeout=acquire_timeout)
        async with acquiring as connection, connection.transaction():
            while True:
                held = await connection.fetchval(
                    SQL["hold_key"], KEY_OWNER, key, new_run_id(), key_ttl
                )
                if held:
                    break
                earlier: uuid.UUID | None = await connection.fetchval(
                    SQL["held_by"], KEY_OWNER, key
                )
                if earlier is not None:
                    return earlier, False
                # the key expired and was pruned between the two statements: take it now
            event_id: uuid.UUID = await connection.fetchval(
                SQL["send_keyed"], KEY_OWNER, key, event, payload
            )
        return event_id, True

"""Wait tokens: created by ``wait.create_token``, read by ``wait.for_token`` (which marks
them awaited), completed by an application (``taskd.complete_token``), or timed out."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("tokens")


class TokenStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, token_id: uuid.UUID, run_id: uuid.UUID, lifetime: float) -> datetime:
        """The token's expiry. A retry with the same id, after a first try whose commit went
        unknown (the connection lost), finds the first try's token."""
        expires_at: datetime | None = await self.pool.fetchval(
            SQL["create"], token_id, run_id, lifetime
        )
        if expires_at is None:
            expires_at = await self.pool.fetchval(SQL["expiry"], token_id, run_id)
            if expires_at is None:
                raise RuntimeError(f"wait token {token_id} exists for another run")
        return expires_at

    async def mark_awaited(self, token_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, Any] | None:
        """The token as ``run_id`` waits on it (marked awaited by its own run): status, data,
        expires_at, held (another transaction is completing it), now (the database's)."""
        row = await self.pool.fetchrow(SQL["mark_awaited"], token_id, run_id)
        return dict(row) if row is not None else None

    async def time_out(self, token_id: uuid.UUID) -> bool:
        return await self.pool.fetchval(SQL["time_out"], token_id) is not None

    async def complete(
        self, token_id: uuid.UUID, data: str, *, connection: asyncpg.Connection | None = None
    ) -> None:
        """taskd.complete_token (raises its TD404 / TD409); it queues the awaiting run."""
        on = connection if connection is not None else self.pool
        await on.fetchval(SQL["complete"], token_id, data)

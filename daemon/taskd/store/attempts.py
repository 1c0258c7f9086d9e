"""Attempts: one row per attempt a run spent (written by the completer and the rescuer in
runs.sql, read here)."""

from __future__ import annotations

import uuid

import asyncpg

from taskd.models import Attempt
from taskd.store.queries import load

SQL = load("attempts")


class AttemptStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(
        self, run_id: uuid.UUID, *, connection: asyncpg.Connection | None = None
    ) -> list[Attempt]:
        on = connection if connection is not None else self.pool
        return [Attempt(**dict(row)) for row in await on.fetch(SQL["list"], run_id)]

"""Owed on_failure hooks (``taskd.failure_hooks``): written by the verbs that fail a run
outside an attempt's own decision, claimed and run by a daemon that serves the task."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("failure_hooks")


class FailureHookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(
        self, worker_id: uuid.UUID, task_ids: Sequence[str], limit: int
    ) -> list[dict[str, Any]]:
        """Claim owed on_failure hooks of these tasks (with their runs' data; None fields
        when the run was pruned)."""
        rows = await self.pool.fetch(SQL["claim"], worker_id, list(task_ids), limit)
        return [dict(row) for row in rows]

    async def done(self, run_ids: Sequence[uuid.UUID], worker_id: uuid.UUID) -> None:
        await self.pool.execute(SQL["done"], list(run_ids), worker_id)

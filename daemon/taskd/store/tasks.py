"""Tasks: what the daemons register (``taskd.tasks``), and which tasks a live worker serves."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("tasks")


@dataclass(frozen=True, slots=True)
class TaskRegistration:
    """A task as this daemon registers it; ``settings``: its description (shown by the
    admin API and ``taskd tasks``)."""

    task_id: str
    queue: str
    max_attempts: int
    settings: dict[str, Any]


class TaskStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def sync(self, tasks: Sequence[TaskRegistration]) -> None:
        """Upsert the tasks this daemon registers."""
        if not tasks:
            return
        await self.pool.execute(
            SQL["sync"],
            [t.task_id for t in tasks],
            [t.queue for t in tasks],
            [t.max_attempts for t in tasks],
            [t.settings for t in tasks],
        )

    async def list(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(SQL["list"])]

    async def list_served(self) -> builtins.list[str]:
        """Task ids that some live worker serves."""
        return [row[0] for row in await self.pool.fetch(SQL["list_served"])]

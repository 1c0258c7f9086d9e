"""Run logs: the lines runs write with ``ctx.log`` (``taskd.run_logs``), and their readers."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from taskd.models import LogLine
from taskd.store.queries import load

SQL = load("logs")


class LogStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert_many(self, lines: Sequence[LogLine]) -> None:
        await self.pool.execute(
            SQL["insert_many"],
            [line.run_id for line in lines],
            [line.task_id for line in lines],
            [line.attempt for line in lines],
            [line.at for line in lines],
            [line.level for line in lines],
            [line.message for line in lines],
            [line.fields.decode() if line.fields is not None else None for line in lines],
        )

    async def list(
        self,
        *,
        after: int = 0,
        run_id: uuid.UUID | None = None,
        task_id: str | None = None,
        levels: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Stored log lines with an id above ``after``, oldest first."""
        if run_id is not None and task_id is None and levels is None:
            rows = await self.pool.fetch(SQL["of_run"], run_id, after, limit)
        else:
            rows = await self.pool.fetch(SQL["list"], after, run_id, task_id, levels, limit)
        return [dict(row) for row in rows]

    async def recent(
        self,
        *,
        run_id: uuid.UUID | None = None,
        task_id: str | None = None,
        levels: Sequence[str] | None = None,
        limit: int = 100,
    ) -> builtins.list[dict[str, Any]]:
        """The newest ``limit`` stored lines, oldest first."""
        rows = await self.pool.fetch(SQL["recent"], run_id, task_id, levels, limit)
        return [dict(row) for row in reversed(rows)]

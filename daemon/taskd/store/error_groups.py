"""Error groups: failed attempts grouped by fingerprint (taskd.error_fingerprint, written
with each failed attempt by the completer), counted over a time range in 24 buckets."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("error_groups")

BUCKETS = 24
TASK_SAMPLE = 100
"""A group's tasks are those of its latest 100 failing runs (each a heap page of its own)."""


class ErrorGroupStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def groups(
        self, since: datetime, until: datetime, *, task_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The groups of the failures finished in [since, until), most recently seen first:
        fingerprint, type, message (its shape), frame, count, runs, first_seen, last_seen,
        tasks, series (BUCKETS of {at, count})."""
        width = (until - since).total_seconds() / BUCKETS
        async with self.pool.acquire() as connection, connection.transaction(readonly=True):
            await connection.execute(SQL["work_mem"])
            if task_id is None:
                rows = await connection.fetch(SQL["groups"], since, until, limit, width)
            else:
                rows = await connection.fetch(
                    SQL["groups_of_task"], since, until, limit, width, task_id
                )
            described = {
                row["fingerprint"]: row
                for row in await connection.fetch(
                    SQL["describe"], [row["fingerprint"] for row in rows], TASK_SAMPLE
                )
            }
        groups = []
        for row in rows:
            counts: dict[int, int] = {}
            for at, count in zip(row["ats"], row["counts"], strict=True):
                index = min(BUCKETS - 1, round((at - since).total_seconds() / width))
                counts[index] = counts.get(index, 0) + count
            about = described.get(row["fingerprint"])
            groups.append(
                {
                    "fingerprint": row["fingerprint"],
                    "type": about["type"] if about is not None else "",
                    "message": about["message"] if about is not None else "",
                    "frame": about["frame"] if about is not None else None,
                    "count": row["count"],
                    "runs": row["runs"],
                    "first_seen": row["first_seen"],
                    "last_seen": row["last_seen"],
                    "tasks": list(about["tasks"] or []) if about is not None else [],
                    "series": [
                        {"at": since + timedelta(seconds=width * i), "count": counts.get(i, 0)}
                        for i in range(BUCKETS)
                    ],
                }
            )
        return groups

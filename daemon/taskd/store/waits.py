"""Waits: the waker's verbs that move a waiting run back to the queue (its timer due, its
token completed, its last child finished), and the children a parent's trigger_and_wait
creates and later reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from taskd.store.idempotency import hold_keys
from taskd.store.queries import load

SQL = load("waits")


class _NotRecorded(Exception):
    """Rolls back a transaction whose compare-and-set found the run no longer ours."""


@dataclass(frozen=True, slots=True)
class ChildRuns:
    """Children of a parent's attempt (``parent_id``, ``worker_id``, ``attempt``: the
    compare-and-set), recorded as its step ``step_name``; ``payloads`` are JSON already
    encoded, ``keys`` their idempotency keys (None: none), held for ``key_ttl`` seconds."""

    parent_id: uuid.UUID
    worker_id: uuid.UUID
    attempt: int
    step_name: str
    task_id: str
    queue: str | None
    ids: Sequence[uuid.UUID]
    payloads: Sequence[bytes]
    tags: Sequence[str]
    max_attempts: int | None
    concurrency_key: str | None = None
    keys: Sequence[str | None] | None = None
    key_ttl: float = 0.0
    retry: dict[str, Any] | None = None  # the trigger's backoff fields (max_attempts apart)
    max_duration: float | None = None
    # the version the children are pinned to (the creating daemon's of their task); None: the
    # parent's
    version: str | None = None


class WaitStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def wake_due(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        """Waiting runs whose time has come go back to the queue: (run id, task id)."""
        rows = await self.pool.fetch(SQL["wake_due"], limit)
        return [(row[0], row[1]) for row in rows]

    async def wake_completed_tokens(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        rows = await self.pool.fetch(SQL["wake_completed_tokens"], limit)
        return [(row[0], row[1]) for row in rows]

    async def wake_parents(self, child_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
        """Waiting parents whose last child is among these finished runs go back to the
        queue: (parent id, task id). Called by the verbs that finish a run (runs.py), after
        their commit: a statement of its own sees children other daemons finished at once."""
        rows = await self.pool.fetch(SQL["wake_parents"], list(child_ids))
        return [(row[0], row[1]) for row in rows]

    async def wake_missed_parents(
        self, task_ids: Sequence[str], queues: Sequence[str] | None
    ) -> list[tuple[uuid.UUID, str]]:
        """Waiting parents of these tasks (in these queues; None: all) whose children all
        finished after the parent's latest attempt began, a wake-up ``wake_parents`` missed
        (burst mode): back to the queue now, not at their recheck. (parent id, task id)."""
        rows = await self.pool.fetch(
            SQL["wake_missed_parents"],
            list(task_ids),
            list(queues) if queues is not None else None,
        )
        return [(row[0], row[1]) for row in rows]

    async def create_children(self, children: ChildRuns) -> list[uuid.UUID] | None:
        """Create child runs and record them as the parent's step, atomically: the ids the
        step records (a child whose idempotency key another run holds is that run), or None
        when the parent is no longer this attempt's (nothing was created).

        A retry with the same ids, after a first try whose commit went unknown (the
        connection lost), returns them: this attempt's step already records them."""
        c = children
        ids, payloads = c.ids, c.payloads
        keys = list(c.keys) if c.keys is not None else [None] * len(ids)
        mine = False
        try:
            async with self.pool.acquire() as pooled, pooled.transaction():
                final, new = await hold_keys(pooled, c.task_id, ids, keys, c.key_ttl)
                row = await pooled.fetchrow(
                    SQL["create_children"],
                    c.parent_id,
                    c.worker_id,
                    c.attempt,
                    c.step_name,
                    c.task_id,
                    c.queue,
                    [ids[i] for i in new],
                    [payloads[i].decode() for i in new],
                    list(c.tags),
                    c.max_attempts,
                    c.concurrency_key or "",
                    final,
                    [keys[i] for i in new],
                    orjson.dumps(c.retry).decode() if c.retry else None,
                    c.max_duration,
                    c.version,
                )
                if row is None or not row["recorded"]:
                    # A statement of its own: it sees a first try that committed while this
                    # one waited on the step's row (the statement above does not).
                    earlier = await pooled.fetchval(
                        SQL["children_recorded"], c.parent_id, c.step_name, c.attempt
                    )
                    mine = earlier == [str(i) for i in final]
                    raise _NotRecorded  # roll the keys back with the rest
        except _NotRecorded:
            return final if mine else None
        return final

    async def children_results(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        rows = await self.pool.fetch(SQL["children_results"], list(ids))
        return {row["id"]: dict(row) for row in rows}

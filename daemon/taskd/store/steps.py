"""Steps: the recorded results of ``ctx.step`` (and the ids of a run's children)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from taskd.models import Step
from taskd.store.queries import load

SQL = load("steps")


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """A step's outcome, written under the run's compare-and-set (``worker_id``,
    ``attempt``); ``result`` and ``error`` as JSON text."""

    run_id: uuid.UUID
    name: str
    worker_id: uuid.UUID
    attempt: int
    status: str
    result: str | None
    error: str | None
    tries: int
    started_at: datetime


class StepStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(
        self,
        run_id: uuid.UUID,
        *,
        limit: int | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> list[Step]:
        """The run's steps; with ``limit``, its first ``limit``."""
        on = connection if connection is not None else self.pool
        if limit is None and connection is None:
            rows = await on.fetch(SQL["list"], run_id)
        else:
            rows = await on.fetch(SQL["list_first"], run_id, limit)
        return [Step(**dict(row)) for row in rows]

    async def record(self, step: StepOutcome) -> bool:
        """Record a step's outcome; False when the run is no longer this worker's attempt."""
        written = await self.pool.fetchval(
            SQL["record"],
            step.run_id,
            step.name,
            step.worker_id,
            step.attempt,
            step.status,
            step.result,
            step.error,
            step.tries,
            step.started_at,
        )
        return bool(written)

"""Figures over time for the console's charts: queue depth samples (written once a minute by
one daemon of the fleet, kept two days) and runs started, completed and failed per bucket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from taskd.ids import uuid_at
from taskd.store.queries import load

SQL = load("stats")

SAMPLES_KEPT = timedelta(days=2)
"""How long queue depth samples are kept (the sampler deletes older ones as it writes)."""
MAX_DEPTH_QUEUES = 50
"""Most queues one answer carries depth samples for (those with the highest peak)."""


@dataclass(frozen=True)
class RunBucket:
    index: int
    started: int
    completed: int
    failed: int
    wait_p50: float | None
    wait_p95: float | None


@dataclass(frozen=True)
class DepthSample:
    at: datetime
    queue: str
    due: int
    delayed: int
    executing: int
    oldest_due_age: float | None


class StatsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def sample_queues(self, minute: datetime) -> int:
        """Write the depth of every queue for ``minute`` unless it is written already (or
        another daemon is writing it): how many samples this call wrote. One statement; it
        also deletes the samples older than SAMPLES_KEPT."""
        status = await self.pool.execute(SQL["sample_queues"], minute, SAMPLES_KEPT.total_seconds())
        return int(status.split()[-1])

    async def run_buckets(
        self,
        start: datetime,
        end: datetime,
        bucket_seconds: int,
        *,
        created_after: datetime,
        task: str | None = None,
        queue: str | None = None,
    ) -> list[RunBucket]:
        """Runs started, completed and failed per bucket from ``start`` to ``end`` (only
        buckets with something in them, by index from ``start``), among the runs created
        after ``created_after``: a range of the primary key."""
        rows = await self.pool.fetch(
            SQL["run_buckets"],
            uuid_at(created_after),
            start,
            end,
            float(bucket_seconds),
            task,
            queue,
        )
        return [
            RunBucket(
                index=row["bucket"],
                started=row["started"],
                completed=row["completed"],
                failed=row["failed"],
                wait_p50=row["wait_p50"],
                wait_p95=row["wait_p95"],
            )
            for row in rows
        ]

    async def depth_buckets(
        self,
        start: datetime,
        end: datetime,
        bucket_seconds: int,
        *,
        queue: str | None = None,
        max_queues: int = MAX_DEPTH_QUEUES,
    ) -> tuple[list[DepthSample], int]:
        """The queue samples from ``start`` to ``end``, the peak of each figure per bucket,
        for the ``max_queues`` queues with the highest peak; and how many queues had samples
        in the range."""
        rows = await self.pool.fetch(
            SQL["depth_buckets"], start, end, float(bucket_seconds), max_queues, queue
        )
        samples = [
            DepthSample(
                at=row["at"],
                queue=row["queue"],
                due=row["due"],
                delayed=row["delayed"],
                executing=row["executing"],
                oldest_due_age=row["oldest_due_age"],
            )
            for row in rows
        ]
        return samples, (rows[0]["queues"] if rows else 0)

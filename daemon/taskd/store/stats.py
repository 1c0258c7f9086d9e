"""Figures over time for the console's charts: one statement a minute (by one daemon of the
fleet) records the queue depths and rolls up the runs of the minutes before; reads of the
roll-ups, the samples, and of recent runs straight from ``taskd.runs``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from taskd.ids import uuid_at
from taskd.store.queries import load

SQL = load("stats")

SAMPLES_KEPT = timedelta(days=2)
"""How long the samples and roll-ups are kept (the writer of a minute deletes older ones)."""
MAX_ROLL_UP = timedelta(days=1)
"""How far back a minute's roll-up reaches (after a fleet stopped for longer: a day)."""
LOOKBACK = timedelta(hours=1)
"""Runs created this long before a range are read too (a run that waited or ran that long
before it started or ended in the range); older ones are not."""
WAIT_BOUNDS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 21600.0, 86400.0,
)  # fmt: skip
"""Bounds (seconds) of the wait histogram the roll-ups keep: bin i holds waits from
WAIT_BOUNDS[i - 1] to WAIT_BOUNDS[i] (bin 0 below the first, the last bin above the last)."""
MAX_DEPTH_QUEUES = 50
"""Most queues one answer carries depth samples for (those with the highest peak)."""


@dataclass
class RunBucket:
    at: datetime
    started: int = 0
    completed: int = 0
    failed: int = 0
    wait_p50: float | None = None
    """Exact, when the bucket was read from the runs alone; else from the histogram."""
    wait_p95: float | None = None
    waits: dict[int, int] = field(default_factory=dict)
    """The wait histogram: bin (of WAIT_BOUNDS) -> runs."""

    def add(self, other: RunBucket) -> None:
        """Sum another part of the same bucket in; percentiles then come from the histogram."""
        self.started += other.started
        self.completed += other.completed
        self.failed += other.failed
        for i, n in other.waits.items():
            self.waits[i] = self.waits.get(i, 0) + n
        self.wait_p50 = wait_percentile(self.waits, 0.5)
        self.wait_p95 = wait_percentile(self.waits, 0.95)


def wait_percentile(waits: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of a wait histogram, interpolated within its bin (None: empty)."""
    total = sum(waits.values())
    if total == 0:
        return None
    target = q * total
    seen = 0
    for i in sorted(waits):
        n = waits[i]
        if seen + n >= target and n > 0:
            low = WAIT_BOUNDS[i - 1] if i > 0 else 0.0
            if i >= len(WAIT_BOUNDS):
                return low
            return low + (WAIT_BOUNDS[i] - low) * (target - seen) / n
        seen += n
    return WAIT_BOUNDS[-1]


@dataclass(frozen=True)
class DepthSample:
    at: datetime
    queue: str
    due: int
    delayed: int
    executing: int
    oldest_due_age: float | None


def _buckets(rows: list[asyncpg.Record]) -> list[RunBucket]:
    return [
        RunBucket(
            at=row["at"],
            started=row["started"],
            completed=row["completed"],
            failed=row["failed"],
            wait_p50=row["wait_p50"],
            wait_p95=row["wait_p95"],
            waits=dict(zip(row["wait_bins"] or (), row["wait_counts"] or (), strict=True)),
        )
        for row in rows
    ]


class StatsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def sample_minute(self, minute: datetime) -> int:
        """Write ``minute`` unless a daemon did (queue depths, the roll-up of the minutes
        before, old rows deleted): how many queue samples this call wrote (0: the minute was
        written already, or there is no queue). One statement."""
        try:
            status = await self.pool.execute(
                SQL["sample_minute"],
                minute,
                SAMPLES_KEPT.total_seconds(),
                LOOKBACK.total_seconds(),
                list(WAIT_BOUNDS),
                MAX_ROLL_UP.total_seconds(),
                uuid_at(minute - MAX_ROLL_UP - LOOKBACK),
            )
        except asyncpg.LockNotAvailableError:
            # another daemon's statement is writing this minute and took longer than the
            # lock_timeout (a first roll-up of a busy day): the minute is its
            return 0
        return int(status.split()[-1])

    async def database_now(self) -> datetime:
        """The database's clock (the one clock every daemon of the fleet shares)."""
        moment: datetime = await self.pool.fetchval(SQL["database_now"])
        return moment

    async def rolled_up_to(self) -> datetime | None:
        """run_minutes holds every minute before this one (None: nothing rolled up yet)."""
        moment: datetime | None = await self.pool.fetchval(SQL["rolled_up_to"])
        return moment

    async def run_buckets(
        self,
        start: datetime,
        end: datetime,
        bucket_seconds: int,
        *,
        origin: datetime,
        task: str | None = None,
        queue: str | None = None,
    ) -> list[RunBucket]:
        """From the runs themselves: per bucket (aligned on ``origin``) of the range, runs
        started (with exact wait percentiles), completed and failed; a range of the primary
        key from LOOKBACK before ``start``. Buckets with nothing are left out."""
        rows = await self.pool.fetch(
            SQL["run_buckets"],
            uuid_at(start - LOOKBACK),
            start,
            end,
            float(bucket_seconds),
            origin,
            task,
            queue,
            list(WAIT_BOUNDS),
        )
        return _buckets(rows)

    async def rolled_buckets(
        self,
        start: datetime,
        end: datetime,
        bucket_seconds: int,
        *,
        task: str | None = None,
        queue: str | None = None,
    ) -> list[RunBucket]:
        """From the roll-ups: the same per bucket (aligned on ``start``), wait percentiles
        left to the histogram. Buckets with nothing are left out."""
        rows = await self.pool.fetch(
            SQL["rolled_buckets"], start, end, float(bucket_seconds), task or "", queue or ""
        )
        buckets = _buckets(rows)
        for bucket in buckets:
            bucket.wait_p50 = wait_percentile(bucket.waits, 0.5)
            bucket.wait_p95 = wait_percentile(bucket.waits, 0.95)
        return buckets

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

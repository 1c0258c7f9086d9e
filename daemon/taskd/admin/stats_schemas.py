"""The models of GET /api/stats (the console's charts): its query and its answer."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from taskd.admin.schemas import Text, _Model, _Strict

StatsWindow = Literal["1h", "24h"]


class StatsQuery(_Strict):
    window: StatsWindow = "1h"
    """The last hour (buckets of 60 s) or the last day (buckets of 900 s), up to now."""
    task: Text | None = None
    """Only this task's runs (the queue depths are per queue: not filtered by task)."""
    queue: Text | None = None
    """Only this queue's runs and depth."""


class StatsBucket(_Model):
    at: datetime
    """The bucket's start."""
    started: int
    """Runs whose latest attempt started in the bucket (a retried run counts at its last
    start)."""
    completed: int
    """Runs that completed in the bucket."""
    failed: int
    """Runs that failed in the bucket (their last attempt failed)."""
    wait_p50: float | None
    """Median seconds from run_at (due) to the start, of the runs started in the bucket
    (None: none started). Exact over 1h; over 24h read from a histogram of the waits
    (interpolated within bins bounded at 10 ms, 25 ms, 50 ms, 0.1 s, ... 1 h, 6 h, 1 d)."""
    wait_p95: float | None
    """95th percentile of the same."""


class StatsDepth(_Model):
    at: datetime
    """The bucket's start."""
    queue: str
    due: int
    """Queued runs due, at the bucket's peak (the most of its minute samples)."""
    delayed: int
    """Queued runs not due yet, at the peak."""
    executing: int
    """Runs executing, at the peak."""
    oldest_due_age: float | None
    """Seconds the oldest due run had waited, at the peak (None: none was due)."""


class Stats(_Model):
    window: StatsWindow
    bucket_seconds: int
    """60 for 1h, 900 for 24h."""
    buckets: list[StatsBucket]
    """Every bucket of the window, oldest first (60 or 96), the last one still filling."""
    depth: list[StatsDepth]
    """Queue depth per bucket and queue, from the samples one daemon writes each minute
    (buckets without a sample are absent: no daemon ran), oldest first."""
    depth_truncated: bool = False
    """More queues had samples than the 50 listed (those with the highest peak)."""

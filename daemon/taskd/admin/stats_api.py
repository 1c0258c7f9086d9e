"""GET /api/stats: the console's charts, from the database (every daemon's runs, not one
daemon's memory).

Runs started, completed and failed per bucket (a minute over the last hour, 15 minutes over
the last day) and their wait, read from ``taskd.runs`` along its primary key (run ids are
UUIDv7, by creation time): the runs created in the window and a LOOKBACK before it, no index
of its own on the hot path. Queue depth from the samples the queue sampler
(worker/queue_sampler.py) writes once a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from taskd.admin.routes import Route
from taskd.admin.state import AdminState
from taskd.admin.stats_schemas import Stats, StatsBucket, StatsDepth, StatsQuery
from taskd.store.stats import MAX_DEPTH_QUEUES

WINDOWS = {"1h": (timedelta(hours=1), 60), "24h": (timedelta(days=1), 900)}
"""Each window: its length and its bucket's seconds."""
LOOKBACK = timedelta(hours=1)
"""Runs created this long before the window are counted too (a run queued, delayed or
executing that long before it started or ended in the window); older ones are not read."""


def window_of(window: str, now: datetime) -> tuple[datetime, datetime, int]:
    """The window's start and end (the end of the bucket holding ``now``) and bucket size."""
    length, bucket = WINDOWS[window]
    end_epoch = (int(now.timestamp()) // bucket + 1) * bucket
    end = datetime.fromtimestamp(end_epoch, UTC)
    return end - length, end, bucket


async def stats(state: AdminState, request: web.Request, query: StatsQuery, body: Any) -> Stats:
    start, end, bucket = window_of(query.window, datetime.now(UTC))
    store = state.store.stats
    counted = {
        b.index: b
        for b in await store.run_buckets(
            start,
            end,
            bucket,
            created_after=start - LOOKBACK,
            task=query.task,
            queue=query.queue,
        )
    }
    buckets = []
    for index in range(int((end - start).total_seconds()) // bucket):
        found = counted.get(index)
        buckets.append(
            StatsBucket(
                at=start + timedelta(seconds=index * bucket),
                started=found.started if found else 0,
                completed=found.completed if found else 0,
                failed=found.failed if found else 0,
                wait_p50=found.wait_p50 if found else None,
                wait_p95=found.wait_p95 if found else None,
            )
        )
    samples, queues = await store.depth_buckets(start, end, bucket, queue=query.queue)
    return Stats(
        window=query.window,
        bucket_seconds=bucket,
        buckets=buckets,
        depth=[
            StatsDepth(
                at=s.at,
                queue=s.queue,
                due=s.due,
                delayed=s.delayed,
                executing=s.executing,
                oldest_due_age=s.oldest_due_age,
            )
            for s in samples
        ],
        depth_truncated=queues > MAX_DEPTH_QUEUES,
    )


STATS_ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/stats",
        stats,
        "Runs started, completed and failed per minute (1h) or 15 minutes (24h), their wait "
        "from due to start, and queue depth per bucket, over the fleet",
        query=StatsQuery,
        response=Stats,
        errors={400: "A parameter is not valid"},
    ),
]

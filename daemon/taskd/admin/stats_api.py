"""GET /api/stats: the console's charts, from the database (every daemon's runs, not one
daemon's memory).

Runs started, completed and failed per bucket (a minute over the last hour, 15 minutes over
the last day) and their wait from due to start. The hour is read from ``taskd.runs`` along its
primary key (run ids are UUIDv7, by creation time: the hour's runs and those created an hour
before it), exact. The day is read from the roll-ups the queue sampler
(worker/queue_sampler.py) writes each minute (``taskd.run_minutes``: a few rows per minute),
and the minutes not rolled up yet (the last one or two) from ``taskd.runs`` as the hour is; its
wait percentiles come from a histogram (interpolated within bins of 10 ms, 25 ms, ... 1 day).
Queue depth from the samples the same chore writes once a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from taskd.admin.routing import Route
from taskd.admin.state import AdminState
from taskd.admin.stats_schemas import Stats, StatsBucket, StatsDepth, StatsQuery
from taskd.store.stats import MAX_DEPTH_QUEUES, RunBucket

WINDOWS = {"1h": (timedelta(hours=1), 60), "24h": (timedelta(days=1), 900)}
"""Each window: its length and its bucket's seconds."""


def window_of(window: str, now: datetime) -> tuple[datetime, datetime, int]:
    """The window's start and end (the end of the bucket holding ``now``) and bucket size."""
    length, bucket = WINDOWS[window]
    end_epoch = (int(now.timestamp()) // bucket + 1) * bucket
    end = datetime.fromtimestamp(end_epoch, UTC)
    return end - length, end, bucket


async def run_buckets(
    state: AdminState, query: StatsQuery, start: datetime, end: datetime, bucket: int
) -> dict[datetime, RunBucket]:
    """The window's buckets with something in them, by start."""
    store = state.store.stats
    filters = {"task": query.task, "queue": query.queue}
    if query.window == "1h":
        rolled_to = start  # an hour of runs: read them all, exact
    else:
        rolled_to = min(max(await store.rolled_up_to() or start, start), end)
    found: dict[datetime, RunBucket] = {}
    if rolled_to > start:
        for part in await store.rolled_buckets(start, rolled_to, bucket, **filters):
            found[part.at] = part
    for part in await store.run_buckets(rolled_to, end, bucket, origin=start, **filters):
        if part.at in found:
            found[part.at].add(part)
        else:
            found[part.at] = part
    return found


async def stats(state: AdminState, request: web.Request, query: StatsQuery, body: Any) -> Stats:
    start, end, bucket = window_of(query.window, datetime.now(UTC))
    found = await run_buckets(state, query, start, end, bucket)
    buckets = []
    for index in range(int((end - start).total_seconds()) // bucket):
        at = start + timedelta(seconds=index * bucket)
        part = found.get(at) or RunBucket(at=at)
        buckets.append(
            StatsBucket(
                at=at,
                started=part.started,
                completed=part.completed,
                failed=part.failed,
                wait_p50=part.wait_p50,
                wait_p95=part.wait_p95,
            )
        )
    samples, queues = await state.store.stats.depth_buckets(start, end, bucket, queue=query.queue)
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

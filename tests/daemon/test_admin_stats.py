"""GET /api/stats over real HTTP: runs started, completed and failed per bucket with their wait,
the task and queue filters, the window's buckets, bad parameters; and queue depth from the
samples two daemons write between them, one per queue per minute."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest

from taskd.ids import uuid_at
from taskd.worker.queue_sampler import minute_of
from tests.support.admin import admin_daemon
from tests.support.in_process import admin_url
from tests.support.runs import each, insert_runs, sql


def run_id_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 of ``moment``, as a run created then has."""
    return uuid.UUID(int=uuid_at(moment).int | random.getrandbits(62))


async def get(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + path) as response:
        return response.status, await response.json()


async def finished(
    db: asyncpg.Connection,
    started: datetime,
    *,
    waits: list[float],
    status: str = "completed",
    created: datetime | None = None,
    task_id: str = "stats.work",
    queue: str = "default",
) -> None:
    """Runs that started at ``started`` (each after its wait) and ended 5 s later."""
    created = created or started - timedelta(seconds=30)
    await insert_runs(
        db,
        len(waits),
        id=each([run_id_at(created) for _ in waits]),
        task_id=task_id,
        queue=queue,
        status=status,
        attempt=1,
        created_at=created,
        run_at=each([started - timedelta(seconds=wait) for wait in waits]),
        started_at=started,
        attempt_started_at=started,
        finished_at=started + timedelta(seconds=5),
    )


def bucket_at(body: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """The bucket holding ``moment``."""
    size = timedelta(seconds=body["bucket_seconds"])
    for bucket in body["buckets"]:
        start = datetime.fromisoformat(bucket["at"])
        if start <= moment < start + size:
            return dict(bucket)
    raise AssertionError(f"no bucket holds {moment}")


def totals(body: dict[str, Any]) -> tuple[int, int, int]:
    buckets = body["buckets"]
    return (
        sum(b["started"] for b in buckets),
        sum(b["completed"] for b in buckets),
        sum(b["failed"] for b in buckets),
    )


async def test_runs_per_bucket_with_their_wait(database: str, db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    ten_ago = minute_of(now) - timedelta(minutes=10) + timedelta(seconds=20)
    await finished(db, ten_ago, waits=[2, 2, 2])
    await finished(db, ten_ago, waits=[10], status="failed")
    await finished(db, ten_ago - timedelta(minutes=5), waits=[1], task_id="stats.other", queue="q2")
    # started two hours ago: in the day, not in the hour
    await finished(db, now - timedelta(hours=2), waits=[0])
    # created three hours ago, started ten minutes ago: more than the lookback (1 h) before
    # the hour's window, so the hour does not read it; the day does
    await finished(db, ten_ago, waits=[7], created=now - timedelta(hours=3))
    # started at :57 after a wait of 4 s, failed 5 s later: in the next minute
    await finished(db, ten_ago + timedelta(seconds=37), waits=[4], status="failed")

    async with admin_daemon(database) as daemon:
        url = admin_url(daemon)
        status, hour = await get(url, "/api/stats?window=1h")
        assert status == 200, hour
        assert hour["window"] == "1h" and hour["bucket_seconds"] == 60
        assert len(hour["buckets"]) == 60
        starts = [datetime.fromisoformat(b["at"]) for b in hour["buckets"]]
        # the last bucket is the minute of the request, which may be a minute after the
        # test's `now` on a slow machine
        asked = datetime.now(UTC)
        assert starts == sorted(starts) and now < starts[-1] + timedelta(minutes=1)
        assert starts[-1] <= asked
        assert all(s.second == 0 and s.microsecond == 0 for s in starts)
        ten = bucket_at(hour, ten_ago)
        assert ten == {
            "at": ten["at"],
            "started": 5,
            "completed": 3,
            "failed": 1,
            "wait_p50": 2.0,  # waits 2, 2, 2, 4, 10
            "wait_p95": pytest.approx(8.8),  # percentile_cont: 4 + 0.8 * (10 - 4)
        }
        # the run that started at :57 failed in the next minute
        after = bucket_at(hour, ten_ago + timedelta(seconds=42))
        assert (after["started"], after["failed"], after["wait_p50"]) == (0, 1, None)
        assert bucket_at(hour, ten_ago - timedelta(minutes=5))["completed"] == 1
        assert totals(hour) == (6, 4, 2)
        empty = bucket_at(hour, ten_ago - timedelta(minutes=20))
        assert (empty["started"], empty["wait_p50"], empty["wait_p95"]) == (0, None, None)

        # the day: read from the runs while no minute is rolled up, from the roll-ups (and the
        # runs of the last minute or two) once the daemon's sampler wrote the current minute
        await db.execute("TRUNCATE taskd.stats_minutes, taskd.run_minutes")
        status, live = await get(url, "/api/stats?window=24h")
        assert status == 200
        # (unless the daemon's own loop wrote a minute meanwhile: a new minute began)
        read_live = await db.fetchval("SELECT count(*) FROM taskd.stats_minutes") == 0
        assert daemon.queue_sampler is not None
        await daemon.queue_sampler.run_once()
        rolled = "SELECT sum(started) FROM taskd.run_minutes WHERE task_id = '' AND queue = ''"
        assert await db.fetchval(rolled) == 8
        status, day = await get(url, "/api/stats?window=24h")
        assert status == 200
        for answer in (live, day):
            assert answer["bucket_seconds"] == 900 and len(answer["buckets"]) == 96
            # + the run of two hours ago, + the one created early
            assert totals(answer) == (8, 6, 2)
            assert bucket_at(answer, now - timedelta(hours=2))["completed"] == 1
        assert [b["at"] for b in live["buckets"]] == [b["at"] for b in day["buckets"]]
        if read_live:
            quarter = bucket_at(live, ten_ago)
            shared = bucket_at(live, ten_ago - timedelta(minutes=5))["at"] == quarter["at"]
            # the median of 7 waits (1, 2, 2, 2, 4, 7, 10), or of 6 without the run of five
            # minutes before when that fell in the quarter before
            assert quarter["wait_p50"] == (2.0 if shared else 3.0)
        # from the roll-ups: within the histogram's bin of that median, 1 s to 2.5 s
        assert 1.0 <= bucket_at(day, ten_ago)["wait_p50"] <= 2.5
        assert bucket_at(day, ten_ago)["started"] == bucket_at(live, ten_ago)["started"]

        status, other = await get(url, "/api/stats?window=1h&task=stats.other")
        assert status == 200 and totals(other) == (1, 1, 0)
        status, q2 = await get(url, "/api/stats?window=24h&queue=q2")
        assert status == 200 and totals(q2) == (1, 1, 0)
        status, nothing = await get(url, "/api/stats?task=nobody")
        assert status == 200 and totals(nothing) == (0, 0, 0)

        for bad in ("window=2h", "window=", "since=1h", "task=a%00b"):
            status, body = await get(url, f"/api/stats?{bad}")
            assert status == 400, (bad, body)
            assert set(body) == {"error", "detail"} and body["error"]


async def test_two_daemons_write_one_depth_sample_per_minute_between_them(
    database: str, db: asyncpg.Connection
) -> None:
    # queued runs of a task nobody serves, due tomorrow: neither daemon touches them
    await insert_runs(db, 3, task_id="nobody", queue="mail", run_at=sql("now() + interval '1 day'"))
    await insert_runs(db, 2, task_id="nobody", queue="sms", run_at=sql("now() + interval '1 day'"))
    half_hour_ago = minute_of(datetime.now(UTC)) - timedelta(minutes=30)
    minutes = [half_hour_ago + timedelta(minutes=m) for m in range(6)]
    async with admin_daemon(database) as first, admin_daemon(database) as second:
        samplers = [first.queue_sampler, second.queue_sampler]
        assert all(samplers)
        writers = []
        for minute in minutes:
            written: dict[int, int] = {}

            async def look(index: int, at: datetime, into: dict[int, int] = written) -> None:
                sampler = samplers[index]
                assert sampler is not None
                into[index] = await sampler.run_once(at)

            # both daemons look at the same minute at once, a few seconds into it
            async with anyio.create_task_group() as group:
                for index in (0, 1):
                    group.start_soon(look, index, minute + timedelta(seconds=2 + index))
            # one writes mail, sms and taskd.webhooks (the status webhooks' queue: every daemon
            # declares it, with its concurrency limit)
            assert sorted(written.values()) == [0, 3], written
            writers.append(next(i for i, count in written.items() if count))
            # the minute goes by (a later look in it writes nothing either)
            for sampler in samplers:
                assert sampler is not None
                assert await sampler.run_once(minute + timedelta(seconds=50)) == 0

        rows = await db.fetch(
            "SELECT at, count(*) AS n, array_agg(queue ORDER BY queue) AS queues"
            "  FROM taskd.queue_samples WHERE at >= $1 AND at <= $2 GROUP BY at ORDER BY at",
            minutes[0],
            minutes[-1],
        )
        assert [(r["at"], r["n"], r["queues"]) for r in rows] == [
            (m, 3, ["mail", "sms", "taskd.webhooks"]) for m in minutes
        ]

        # either daemon's API shows the samples, whichever daemon wrote them
        for daemon in (first, second):
            status, hour = await get(admin_url(daemon), "/api/stats?window=1h")
            assert status == 200
            seen = {
                (datetime.fromisoformat(d["at"]), d["queue"]): (d["due"], d["delayed"])
                for d in hour["depth"]
            }
            for minute in minutes:
                assert seen[(minute, "mail")] == (0, 3)
                assert seen[(minute, "sms")] == (0, 2)
            assert hour["depth_truncated"] is False
        status, day = await get(admin_url(first), "/api/stats?window=24h&queue=sms")
        assert status == 200
        assert {d["queue"] for d in day["depth"]} == {"sms"}
        assert all(d["delayed"] == 2 and d["executing"] == 0 for d in day["depth"])

"""The queue sampler's one statement against the database (no daemon): the depths it writes
for a minute, one writer per minute however many samplers look at once, the roll-up of the
runs of the minutes before (each minute once, gaps included), and rows older than two days
deleted by the writer."""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from taskd.store.database import create_pool
from taskd.store.stats import WAIT_BOUNDS
from taskd.store.store import Store
from taskd.worker.queue_sampler import QueueSampler, minute_of
from tests.support.runs import each, insert_runs, sql


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database, size=12)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def samples(db: asyncpg.Connection) -> list[tuple[datetime, str, int, int, int]]:
    rows = await db.fetch(
        "SELECT at, queue, due, delayed, executing FROM taskd.queue_samples ORDER BY at, queue"
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_a_sample_holds_each_queues_depth(store: Store, db: asyncpg.Connection) -> None:
    await insert_runs(db, 3, task_id="t", queue="mail", run_at=sql("now() - interval '90 s'"))
    await insert_runs(db, 2, task_id="t", queue="mail", run_at=sql("now() + interval '1 hour'"))
    await insert_runs(
        db,
        4,
        task_id="t",
        queue="reports",
        status="executing",
        attempt=1,
        lease_expires_at=sql("now() + interval '1 minute'"),
    )
    await insert_runs(db, 5, task_id="t", queue="reports", status="completed")
    await db.execute("INSERT INTO taskd.queues (name) VALUES ('idle')")
    at = datetime(2026, 12, 1, 10, 30, 42, tzinfo=UTC)

    written = await QueueSampler(store).run_once(at)

    assert written == 3
    minute = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert await samples(db) == [
        (minute, "idle", 0, 0, 0),
        (minute, "mail", 3, 2, 0),
        (minute, "reports", 0, 0, 4),
    ]
    ages = dict(await db.fetch("SELECT queue, oldest_due_age FROM taskd.queue_samples"))
    assert 89 < ages["mail"] < 200 and ages["idle"] is None and ages["reports"] is None
    # the same minute again, later in it: already written, nothing more
    assert await QueueSampler(store).run_once(at + timedelta(seconds=10)) == 0
    assert len(await samples(db)) == 3


async def test_many_samplers_at_once_write_each_minute_once(
    store: Store, db: asyncpg.Connection
) -> None:
    await insert_runs(db, 2, task_id="t", queue="a")
    await insert_runs(db, 1, task_id="t", queue="b", run_at=sql("now() + interval '1 day'"))
    samplers = [QueueSampler(store) for _ in range(8)]
    start = minute_of(datetime.now(UTC)) - timedelta(hours=1)
    writers_per_minute = []
    for minute in range(5):
        at = start + timedelta(minutes=minute, seconds=3)
        written: list[int] = []

        async def look(sampler: QueueSampler, at: datetime = at, into: list[int] = written) -> None:
            into.append(await sampler.run_once(at))

        async with anyio.create_task_group() as group:
            for sampler in samplers:
                group.start_soon(look, sampler)
        writers_per_minute.append(sum(1 for count in written if count))
        assert sum(written) == 2  # queues a and b, once
    assert writers_per_minute == [1, 1, 1, 1, 1]
    per_minute = await db.fetch(
        "SELECT at, count(*) AS n FROM taskd.queue_samples GROUP BY at ORDER BY at"
    )
    assert [(row["at"], row["n"]) for row in per_minute] == [
        (start + timedelta(minutes=m), 2) for m in range(5)
    ]


async def test_samples_older_than_two_days_go_when_a_minute_is_written(
    store: Store, db: asyncpg.Connection
) -> None:
    await insert_runs(db, 1, task_id="t", queue="a")
    sampler = QueueSampler(store)
    now = minute_of(datetime.now(UTC))
    for age in (timedelta(days=3), timedelta(days=2, minutes=1), timedelta(days=1)):
        assert await sampler.run_once(now - age) == 1
    assert await sampler.run_once(now) == 1
    kept = [row[0] for row in await samples(db)]
    assert kept == [now - timedelta(days=1), now]


async def finished_runs(
    db: asyncpg.Connection,
    started: datetime,
    waits: list[float],
    *,
    status: str = "completed",
    took: float = 10.0,
    task_id: str = "t",
    queue: str = "default",
) -> None:
    await insert_runs(
        db,
        len(waits),
        task_id=task_id,
        queue=queue,
        status=status,
        attempt=1,
        run_at=each([started - timedelta(seconds=wait) for wait in waits]),
        started_at=started,
        attempt_started_at=started,
        finished_at=started + timedelta(seconds=took),
    )


async def run_minutes(
    db: asyncpg.Connection, *, detail: bool = True
) -> dict[tuple[datetime, str, str], Any]:
    """The roll-ups: per task and queue (``detail``), else the sums ('': every task/queue)."""
    rows = await db.fetch(
        "SELECT * FROM taskd.run_minutes WHERE (task_id <> '' AND queue <> '') = $1", detail
    )
    return {
        (row["at"], row["task_id"], row["queue"]): (
            row["started"],
            row["completed"],
            row["failed"],
            {int(i): n for i, n in orjson.loads(row["waits"]).items()},
        )
        for row in rows
    }


def bins(*waits: float) -> dict[int, int]:
    counted: dict[int, int] = {}
    for wait in waits:
        i = bisect.bisect_right(WAIT_BOUNDS, wait)
        counted[i] = counted.get(i, 0) + 1
    return counted


async def test_each_minute_rolls_up_the_runs_of_the_minutes_before_once(
    store: Store, db: asyncpg.Connection
) -> None:
    x = minute_of(datetime.now(UTC)) - timedelta(minutes=10)
    await finished_runs(db, x + timedelta(seconds=10), [0.02, 0.3, 4.0])
    # started in minute x, failed in the next one
    await finished_runs(db, x + timedelta(seconds=30), [100.0], status="failed", took=40)
    await finished_runs(db, x + timedelta(seconds=5), [0.0], task_id="b", queue="q2")
    await finished_runs(db, x - timedelta(hours=3), [1.0])  # long before: rolled up too
    sampler = QueueSampler(store)

    # minute x + 2 rolls up every minute before x + 1 (a minute's grace): x, not x + 1
    await sampler.run_once(x + timedelta(minutes=2, seconds=3))
    rolled = await run_minutes(db)
    assert rolled[(x, "t", "default")] == (4, 3, 0, bins(0.02, 0.3, 4.0, 100.0))
    assert rolled[(x, "b", "q2")] == (1, 1, 0, bins(0.0))
    assert rolled[(x - timedelta(hours=3), "t", "default")] == (1, 1, 0, bins(1.0))
    assert (x + timedelta(minutes=1), "t", "default") not in rolled
    assert len(rolled) == 3
    # and the sums a filter reads: per task, per queue, in all
    summed = await run_minutes(db, detail=False)
    every = bins(0.02, 0.3, 4.0, 100.0, 0.0)
    assert summed[(x, "", "")] == (5, 4, 0, every)
    assert summed[(x, "t", "")] == summed[(x, "", "default")] == rolled[(x, "t", "default")]
    assert summed[(x, "b", "")] == summed[(x, "", "q2")] == rolled[(x, "b", "q2")]
    assert summed[(x - timedelta(hours=3), "", "")] == (1, 1, 0, bins(1.0))
    assert len(summed) == 8

    # the same minute again writes nothing; the next one rolls up x + 1 only
    assert await QueueSampler(store).run_once(x + timedelta(minutes=2, seconds=40)) == 0
    await sampler.run_once(x + timedelta(minutes=3, seconds=1))
    rolled = await run_minutes(db)
    assert rolled[(x + timedelta(minutes=1), "t", "default")] == (0, 0, 1, {})
    assert (await run_minutes(db, detail=False))[(x + timedelta(minutes=1), "", "")] == (
        0,
        0,
        1,
        {},
    )
    assert len(rolled) == 4
    # no daemon for five minutes, then one: the minutes between are rolled up (none had runs)
    await finished_runs(db, x + timedelta(minutes=5, seconds=1), [0.5])
    await sampler.run_once(x + timedelta(minutes=9))
    rolled = await run_minutes(db)
    assert rolled[(x + timedelta(minutes=5), "t", "default")] == (1, 1, 0, bins(0.5))
    assert len(rolled) == 5
    marks = await db.fetch("SELECT at, rolled_up_to FROM taskd.stats_minutes ORDER BY at")
    assert [(m["at"] - x, m["rolled_up_to"] - x) for m in marks] == [
        (timedelta(minutes=2), timedelta(minutes=1)),
        (timedelta(minutes=3), timedelta(minutes=2)),
        (timedelta(minutes=9), timedelta(minutes=8)),
    ]


async def test_a_minute_another_daemon_is_still_writing_is_left_to_it(
    database: str, db: asyncpg.Connection
) -> None:
    await insert_runs(db, 1, task_id="t", queue="a")
    minute = minute_of(datetime.now(UTC)) - timedelta(minutes=5)
    pool = await create_pool(database, lock_timeout=0.2, statement_timeout=10)
    try:
        sampler = QueueSampler(Store(pool))
        # a statement of another daemon writing the minute, slow (its transaction open)
        writing = db.transaction()
        await writing.start()
        await db.execute(
            "INSERT INTO taskd.stats_minutes (at, rolled_up_to) VALUES ($1, $1)", minute
        )
        # past the lock_timeout: not an error, the minute is the other daemon's
        assert await sampler.run_once(minute + timedelta(seconds=4)) == 0
        await writing.rollback()  # it failed: the minute is free again
        assert await sampler.run_once(minute + timedelta(seconds=8)) == 1
    finally:
        await pool.close()

"""The queue sampler of a daemon whose clock runs ahead of the database's: it samples the
database's current minute, and rolls up only minutes that are over (a minute rolled up early
would keep its partial counts for good: a roll-up is written once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo

import asyncpg
import pytest

from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker import queue_sampler
from taskd.worker.queue_sampler import QueueSampler, minute_of
from tests.support.runs import insert_runs, sql


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database, size=2)
    try:
        yield Store(pool)
    finally:
        await pool.close()


class ClockAhead(datetime):
    """The daemon's clock, three minutes ahead of the database's."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> ClockAhead:
        moment = datetime.now(tz) + timedelta(minutes=3)
        return cls.fromtimestamp(moment.timestamp(), tz)


async def test_a_daemon_clock_ahead_writes_the_database_minute_and_no_unfinished_one(
    store: Store, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run that completed a moment ago, in the database's current minute (not over yet)
    await insert_runs(
        db,
        1,
        task_id="t",
        queue="q",
        status="completed",
        attempt=1,
        run_at=sql("now() - interval '2 s'"),
        started_at=sql("now() - interval '1 s'"),
        attempt_started_at=sql("now() - interval '1 s'"),
        finished_at=sql("now()"),
    )
    await insert_runs(db, 1, task_id="t", queue="q")  # queued: q has a depth to sample
    monkeypatch.setattr(queue_sampler, "datetime", ClockAhead)
    assert queue_sampler.datetime.now(UTC) > datetime.now(UTC) + timedelta(minutes=2)

    before = minute_of(await db.fetchval("SELECT now()"))
    assert await QueueSampler(store).run_once() == 1
    after = minute_of(await db.fetchval("SELECT now()"))

    written = [row["at"] for row in await db.fetch("SELECT at FROM taskd.stats_minutes")]
    assert len(written) == 1 and before <= written[0] <= after, (written, before)
    assert await db.fetchval("SELECT count(*) FROM taskd.queue_samples WHERE at > $1", after) == 0
    rolled = [row["at"] for row in await db.fetch("SELECT DISTINCT at FROM taskd.run_minutes")]
    assert all(at < before for at in rolled), f"minutes not over rolled up: {rolled}"

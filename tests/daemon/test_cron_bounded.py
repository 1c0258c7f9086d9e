"""Cron math is bounded (review M8, L7): catch-up computes only what its policy fires, a cron
that can never fire is refused where it is written, fire times less than 60 s late always
fire, and a per-second cron resumed after 30 days does not block a running daemon's loop.

The figures (tick time for N schedules, catch-up time) are in bench/cron.py, not here: a
timing bound on wall-clock time fails on a loaded machine. What these tests bound instead is
the number of fire-time computations, and the CPU time the loop's own thread spends between
two wake-ups of a 5 ms sleeper (what blocking is; a descheduled process is not a block).
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest
from apscheduler.triggers.cron import CronTrigger

from taskd import Client, Context, ScheduledRun, schedules, task
from taskd.logs import FIELDS_ATTR
from taskd.sdk.cron import cron_trigger
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.scheduler import Scheduler
from tests.support.waiting import wait_for


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@task(id="beat")
async def beat(payload: ScheduledRun, ctx: Context) -> None:
    return None


class CountedCronMath:
    """Counts APScheduler's fire-time computations and stops a runaway walk early (the code
    before the fix walked 2.6 M fire times for a per-second cron paused 30 days)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ceiling: int = 20_000) -> None:
        self.calls = 0
        original = CronTrigger.get_next_fire_time

        def counted(trigger: CronTrigger, previous: Any, now: datetime) -> Any:
            self.calls += 1
            if self.calls > ceiling:
                raise RuntimeError(f"more than {ceiling} fire-time computations")
            return original(trigger, previous, now)

        monkeypatch.setattr(CronTrigger, "get_next_fire_time", counted)


async def _tick(database: str, now: datetime) -> datetime | None:
    pool = await create_pool(database)
    try:
        return await Scheduler(Store(pool)).tick(now=now)
    finally:
        await pool.close()


async def _fired(db: asyncpg.Connection, schedule_id: str) -> list[datetime]:
    rows = await db.fetch(
        "SELECT scheduled_for FROM taskd.runs WHERE schedule_id = $1 ORDER BY 1", schedule_id
    )
    return [row[0] for row in rows]


# catch-up computes what its policy fires ------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "missed_fired"),
    [("latest", 1), ("all", 100), ("none", 0)],
)
async def test_a_per_second_cron_paused_30_days_computes_only_what_it_fires(
    database: str,
    client: Client,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    missed_fired: int,
) -> None:
    schedule = await client.create_schedule("beat", "* * * * * *", catch_up=policy)
    now = utc(2026, 1, 31, 12)
    paused_at = now - timedelta(days=30)
    await db.execute(
        "UPDATE taskd.schedules SET last_fired_at = $2, created_at = $2 WHERE id = $1",
        schedule.id,
        paused_at,
    )
    math = CountedCronMath(monkeypatch)
    next_at = await _tick(database, now)
    assert next_at == now + timedelta(seconds=1)
    # 30 days hold 2.6 M fire times; the policy fires at most 100 + 61 of them
    assert math.calls < 1_000, math.calls
    fired = await _fired(db, schedule.id)
    on_time = [now - timedelta(seconds=s) for s in range(60, -1, -1)]  # 60 s late at most
    missed = [now - timedelta(seconds=s) for s in range(60 + missed_fired, 60, -1)]
    assert fired == missed + on_time, f"{len(fired)} runs: {fired[:3]}..."
    assert (await client.get_schedule(schedule.id)).last_fired_at == now


async def test_fire_times_less_than_60_s_late_are_never_dropped(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    """L7: the loop comes 25 s late to a */10 schedule: T+10 and T+20 both fire."""
    t = utc(2026, 1, 1, 12)
    ids = {}
    for policy in ("latest", "none", "all"):
        schedule = await client.create_schedule("beat", "*/10 * * * * *", catch_up=policy)
        await db.execute(
            "UPDATE taskd.schedules SET last_fired_at = $2 WHERE id = $1", schedule.id, t
        )
        ids[policy] = schedule.id
    await _tick(database, t + timedelta(seconds=25))
    for policy, schedule_id in ids.items():
        assert await _fired(db, schedule_id) == [
            t + timedelta(seconds=10),
            t + timedelta(seconds=20),
        ], policy


@pytest.mark.parametrize(
    ("late", "fired"),
    [(timedelta(seconds=60), True), (timedelta(seconds=60, microseconds=1), False)],
)
async def test_60_s_late_fires_and_later_is_missed(
    database: str, client: Client, db: asyncpg.Connection, late: timedelta, fired: bool
) -> None:
    schedule = await client.create_schedule("beat", "0 * * * *", catch_up="none")
    await db.execute(
        "UPDATE taskd.schedules SET last_fired_at = $2 WHERE id = $1",
        schedule.id,
        utc(2026, 1, 1, 11),
    )
    await _tick(database, utc(2026, 1, 1, 12) + late)
    assert await _fired(db, schedule.id) == ([utc(2026, 1, 1, 12)] if fired else [])
    assert (await client.get_schedule(schedule.id)).last_fired_at == utc(2026, 1, 1, 12)


# a cron that can never fire ------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"])
async def test_a_cron_that_never_fires_is_refused_where_it_is_written(
    client: Client, cron: str
) -> None:
    with pytest.raises(ValueError, match="never fires"):
        schedules.task(id="never", cron=cron)
    with pytest.raises(ValueError, match="never fires"):
        await client.create_schedule("beat", cron)
    schedule = await client.create_schedule("beat", "0 0 29 2 *")  # leap days do come
    with pytest.raises(ValueError, match="never fires"):
        await client.update_schedule(schedule.id, cron=cron)
    assert (await client.get_schedule(schedule.id)).cron == "0 0 29 2 *"


async def test_a_stored_cron_that_never_fires_is_skipped_cheaply(
    database: str,
    client: Client,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A row written before taskd refused such crons (or by hand): the scheduler and the
    listing skip it, say so once, and evaluating it costs far less than APScheduler's walk
    to the year 9999 (0.1-0.3 s of CPU each time before the fix)."""
    started = time.thread_time()
    with pytest.raises(ValueError, match="never fires"):
        cron_trigger("0 0 30 2 *")
    assert time.thread_time() - started < 0.05, "bounded to one Gregorian cycle"

    schedule = await client.create_schedule("beat", "0 0 1 2 *")
    await db.execute("UPDATE taskd.schedules SET cron = '0 0 30 2 *' WHERE id = $1", schedule.id)
    caplog.set_level(logging.ERROR, logger="taskd.scheduler")
    pool = await create_pool(database)
    try:
        scheduler = Scheduler(Store(pool))
        assert await scheduler.tick() is None
        assert await scheduler.tick() is None
    finally:
        await pool.close()
    skipped = [r.getMessage() for r in caplog.records if r.name == "taskd.scheduler"]
    assert len(skipped) == 1 and "never fires" in skipped[0], skipped
    [listed] = await client.list_schedules()
    assert listed.id == schedule.id and listed.next_fire_at is None


# a running daemon ----------------------------------------------------------------------------


class LoopProbe:
    """The longest CPU time the loop's thread spent between two wake-ups of a 5 ms sleeper:
    how long the loop was blocked, whatever the machine's load does to wall-clock time."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        while True:
            before = time.thread_time()
            await anyio.sleep(0.005)
            self.longest = max(self.longest, time.thread_time() - before)


async def test_a_per_second_cron_resumed_after_30_days_does_not_block_the_daemon(
    client: Client,
    db: asyncpg.Connection,
    start_daemon: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule = await client.create_schedule("beat", "* * * * * *")  # catch_up latest
    await client.deactivate_schedule(schedule.id)
    paused_at = datetime.now(UTC) - timedelta(days=30)
    await db.execute(
        "UPDATE taskd.schedules SET last_fired_at = $2, created_at = $2 WHERE id = $1",
        schedule.id,
        paused_at,
    )
    caplog.set_level(logging.WARNING, logger="taskd.scheduler")
    probe = LoopProbe()
    async with start_daemon([beat]) as daemon, anyio.create_task_group() as group:
        group.start_soon(probe.run)
        resumed_at = datetime.now(UTC)
        await client.activate_schedule(schedule.id)
        fired = await wait_for(lambda: _at_least(db, schedule.id, 65), timeout=30)
        group.cancel_scope.cancel()
        lag = daemon.notifier.max_lag
    # latest: the newest missed time, then every time less than 60 s late, then each second
    missed = [r for r in caplog.records if "missed" in r.getMessage()]
    assert len(missed) == 1, [r.getMessage() for r in missed]
    assert "catch_up=latest: firing the latest" in missed[0].getMessage()
    newest_missed = datetime.fromisoformat(getattr(missed[0], FIELDS_ATTR)["until"])
    assert fired[0] == newest_missed >= resumed_at - timedelta(seconds=62), "no older one"
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(fired)] == [1.0] * (
        len(fired) - 1
    ), "no fire time dropped"
    assert probe.longest < 0.1, f"the loop was blocked for {probe.longest:.3f} s of CPU"
    # The daemon's own monitor (wall clock, 250 ms period): before the fix it saw the whole
    # walk (tens of seconds). Loose bound: wall-clock lag also counts the machine's load.
    assert lag < 5.0, lag


async def _at_least(db: asyncpg.Connection, schedule_id: str, count: int) -> list[datetime]:
    fired = await _fired(db, schedule_id)
    return fired if len(fired) >= count else []

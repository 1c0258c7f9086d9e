"""Cron schedules: trigger math and DST with a fixed clock, catch-up policies on seeded rows,
and real daemons firing per-second schedules (two of them: one run per fire time)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from taskd import Client, Context, RunStatus, ScheduledRun, ScheduleNotFound, schedules, task
from taskd.sdk.cron import cron_trigger, fire_times_after, next_fire_after
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.scheduler import Scheduler
from tests.support.cli import taskd
from tests.support.paths import ROOT
from tests.support.waiting import wait_for, wait_for_run

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# cron math -------------------------------------------------------------------------------------


def test_weekdays_shorthands_and_seconds() -> None:
    saturday = utc(2026, 11, 21, 12)
    assert next_fire_after(cron_trigger("0 9 * * 1-5"), saturday) == utc(2026, 11, 23, 9)
    assert next_fire_after(cron_trigger("0 9 * * 0"), saturday) == utc(2026, 11, 22, 9)
    assert next_fire_after(cron_trigger("0 9 * * 7"), saturday) == utc(2026, 11, 22, 9)
    assert next_fire_after(cron_trigger("@daily"), saturday) == utc(2026, 11, 22)
    assert next_fire_after(cron_trigger("@hourly"), saturday) == utc(2026, 11, 21, 13)
    every_two = fire_times_after(
        cron_trigger("*/2 * * * * *"), saturday, saturday + timedelta(seconds=7)
    )
    assert [t.second for t in every_two] == [2, 4, 6]
    paris = next_fire_after(cron_trigger("0 9 * * *", "Europe/Paris"), saturday)
    assert paris == utc(2026, 11, 22, 8)


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("0 9 * *", "UTC", "needs 5 fields"),
        ("61 * * * *", "UTC", "higher than the maximum value"),
        ("0 9 * * 8", "UTC", "out of range"),
        ("0 9 * * *", "Mars/Olympus", "unknown timezone"),
    ],
)
def test_bad_cron_or_timezone_is_a_clear_error(cron: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron_trigger(cron, zone)
    with pytest.raises(ValueError, match=message):
        schedules.task(id="bad", cron=cron, timezone=zone)


def test_dst_in_paris_follows_apschedulers_rules() -> None:
    daily = cron_trigger("30 2 * * *", "Europe/Paris")
    spring = fire_times_after(daily, utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and fires at 03:30 CEST
    assert spring == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    autumn = fire_times_after(daily, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and fires twice
    assert autumn == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)]
    every_20 = cron_trigger("*/20 2 * * *", "Europe/Paris")
    gap = fire_times_after(every_20, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert gap == [utc(2026, 3, 29, 1)], "the gap's three times fire once, at 03:00 CEST"
    # no loop at the repeated hour (APScheduler 3.11 can answer the same time forever)
    hourly = cron_trigger("0 * * * *", "Europe/Paris")
    fall = fire_times_after(hourly, utc(2026, 10, 24, 22), utc(2026, 10, 25, 4))
    assert fall == sorted(set(fall)) and len(fall) == 6


# catch-up policies, with a fixed clock ---------------------------------------------------------


@pytest.mark.parametrize(("policy", "fired"), [("latest", 1), ("all", 5), ("none", 0)])
async def test_missed_fire_times_follow_the_catch_up_policy(
    database: str, client: Client, db: asyncpg.Connection, policy: str, fired: int
) -> None:
    schedule = await client.create_schedule("report", "0 * * * *", catch_up=policy)
    await db.execute(
        "UPDATE taskd.schedules SET last_fired_at = $2, created_at = $2 WHERE id = $1",
        schedule.id,
        utc(2026, 1, 1, 7),
    )
    pool = await create_pool(database)
    try:
        now = utc(2026, 1, 1, 12, 30)  # every daemon was down from 07:00 to 12:30
        next_at = await Scheduler(Store(pool)).tick(now=now)
    finally:
        await pool.close()
    assert next_at == utc(2026, 1, 1, 13)
    runs = await client.list_runs(schedule=schedule.id)
    expected = [utc(2026, 1, 1, h) for h in range(8, 13)][-fired:] if fired else []
    assert sorted(r.scheduled_for for r in runs) == expected
    assert (await client.get_schedule(schedule.id)).last_fired_at == utc(2026, 1, 1, 12)


async def test_a_fire_time_a_little_late_is_fired_not_missed(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    schedule = await client.create_schedule("report", "0 * * * *", catch_up="none")
    await db.execute(
        "UPDATE taskd.schedules SET last_fired_at = $2 WHERE id = $1",
        schedule.id,
        utc(2026, 1, 1, 11),
    )
    pool = await create_pool(database)
    try:
        await Scheduler(Store(pool)).tick(now=utc(2026, 1, 1, 12, 0, 20))  # 20 s late
    finally:
        await pool.close()
    runs = await client.list_runs(schedule=schedule.id)
    assert [r.scheduled_for for r in runs] == [utc(2026, 1, 1, 12)]
    assert runs[0].payload["last_timestamp"].startswith("2026-01-01T11:00:00")


# real daemons ---------------------------------------------------------------------------------


@schedules.task(id="tick", cron="* * * * * *", timezone="Europe/Paris")
async def tick(payload: ScheduledRun, ctx: Context) -> str:
    return payload.timestamp.isoformat()


@task(id="tock")
async def tock(payload: ScheduledRun, ctx: Context) -> dict:
    return {"external_id": payload.external_id, "extra": payload.payload}


async def test_two_daemons_fire_each_second_exactly_once(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([tick]) as first, start_daemon([tick]) as second:
        await wait_for(lambda: _fired(db, "tick", 5), timeout=15)
        declared = await client.get_schedule("tick")
        # Stop firing before counting: a daemon stopped in the middle of a fire has its run
        # committed but not counted (its scheduler is cancelled while awaiting the INSERT).
        # Once the pause commits nothing more fires; the fires already under way finish here.
        await client.deactivate_schedule("tick")
        assert first.scheduler is not None and second.scheduler is not None
        schedulers = (first.scheduler, second.scheduler)
        await wait_for(lambda: _counted_all(db, schedulers))
        last = (await client.list_runs(schedule="tick"))[0]
        run = await wait_for_run(client, last.id)  # while the daemons still run
    times = [
        r["scheduled_for"]
        for r in await db.fetch(
            "SELECT scheduled_for FROM taskd.runs WHERE schedule_id = 'tick' ORDER BY 1"
        )
    ]
    assert len(times) == len(set(times)), "at most one run per fire time"
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps == {1.0}, f"every second fired, none twice: {times}"
    assert first.scheduler.fired + second.scheduler.fired == len(times)
    assert run.status is RunStatus.COMPLETED
    fired_at = datetime.fromisoformat(run.output)
    assert fired_at.utcoffset() == PARIS.utcoffset(fired_at.replace(tzinfo=None)), "Paris time"
    assert declared.declared and declared.active and declared.timezone == "Europe/Paris"


async def test_a_schedule_created_while_the_daemon_runs_fires_without_restart(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([tock]):
        first = await client.create_schedule(
            tock,
            "* * * * * *",
            external_id="user-7",
            dedup_key="tock-every-second",
            payload={"k": 1},
        )
        again = await client.create_schedule(
            tock,
            "*/2 * * * * *",
            external_id="user-7",
            dedup_key="tock-every-second",
            payload={"k": 2},
        )
        assert again.id == first.id and again.cron == "*/2 * * * * *", "dedup_key: created once"
        assert len(await client.list_schedules()) == 1
        # A fire between the two creations (a second boundary) has the first payload: wait
        # for one the updated schedule fired (a second after the update, at an even second).
        updated = again.updated_at + timedelta(seconds=1)
        runs = await wait_for(lambda: _runs_of(client, first.id, after=updated), timeout=10)
        assert runs[-1].scheduled_for.second % 2 == 0
        done = await wait_for_run(client, runs[-1].id)
        paused = await client.deactivate_schedule(first.id)
        assert not paused.active and paused.next_fire_at is None
    assert done.output == {"external_id": "user-7", "extra": {"k": 2}}
    await client.delete_schedule(first.id)
    with pytest.raises(ScheduleNotFound):
        await client.get_schedule(first.id)


async def test_a_schedule_removed_from_the_code_is_deactivated(
    client: Client, start_daemon
) -> None:
    async with start_daemon([tick]):
        assert (await client.get_schedule("tick")).active

    @task(id="tick")  # the same task, its @schedules.task removed
    async def tick_without_schedule(payload: object, ctx: Context) -> None:
        return None

    async with start_daemon([tick_without_schedule]):
        assert not (await client.get_schedule("tick")).active


async def test_cli_lists_and_pauses_schedules(client: Client, database: str, start_daemon) -> None:
    async with start_daemon([tick]):
        listing = await taskd(database, "schedules", "list", cwd=ROOT, timeout=60)
        paused = await taskd(database, "schedules", "pause", "tick", cwd=ROOT, timeout=60)
        missing = await taskd(database, "schedules", "show", "nope", cwd=ROOT, timeout=60)
    assert listing.code == 0 and "tick" in listing.out and "Europe/Paris" in listing.out
    zone_name = datetime.now(PARIS).tzname()  # CET, or CEST in summer
    assert f" {zone_name} " in listing.out, "the next fire time in the schedule's timezone"
    assert paused.out.strip() == "tick paused"
    assert missing.code == 1 and "no schedule with id 'nope'" in missing.err
    assert not (await client.get_schedule("tick")).active


async def _fired(db: asyncpg.Connection, schedule_id: str, at_least: int) -> bool:
    count = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE schedule_id = $1", schedule_id)
    return bool(count >= at_least)


async def _runs_of(client: Client, schedule_id: str, after: datetime | None = None) -> list:
    runs = await client.list_runs(schedule=schedule_id)
    return [r for r in runs if after is None or r.scheduled_for >= after]


async def _counted_all(db: asyncpg.Connection, schedulers: tuple[Scheduler, ...]) -> bool:
    count = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE schedule_id = 'tick'")
    return bool(sum(s.fired for s in schedulers) == count)

"""Schedules created, changed, deleted and fired now from plain SQL (migration 0004).

A producer in another language (seed 002's app creates its cron jobs at run time) has only
SQL: what it writes must be what the Python client would have written, refused with the same
reasons, and every daemon's scheduler must hear of it when the transaction commits.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import orjson
import pytest

from taskd import Client, ScheduledRun
from taskd.errors import ScheduleNotFound
from taskd.store.store import Store
from taskd.worker.scheduler import Scheduler


async def test_create_schedule_from_sql_is_what_the_client_reads(
    db: asyncpg.Connection, client: Client
) -> None:
    schedule_id = await db.fetchval(
        "SELECT taskd.create_schedule('send-digest', '0 8 * * 1', $1::jsonb)",
        orjson.dumps(
            {
                "timezone": "America/New_York",
                "payload": {"plan": "pro"},
                "external_id": "user-42",
                "dedup_key": "digest-user-42",
                "catch_up": "all",
            }
        ).decode(),
    )
    assert schedule_id.startswith("sched_") and len(schedule_id) == len("sched_") + 32
    found = await client.get_schedule(schedule_id)
    assert (found.task_id, found.cron, found.timezone, found.catch_up) == (
        "send-digest",
        "0 8 * * 1",
        "America/New_York",
        "all",
    )
    assert (found.payload, found.external_id, found.dedup_key) == (
        {"plan": "pro"},
        "user-42",
        "digest-user-42",
    )
    assert found.active and not found.declared and found.next_fire_at is not None

    # the same dedup_key again updates that schedule and returns its id
    again = await db.fetchval(
        "SELECT taskd.create_schedule('send-digest', '0 7 * * 1', "
        """'{"dedup_key": "digest-user-42"}')"""
    )
    assert again == schedule_id
    updated = await client.get_schedule(schedule_id)
    assert (updated.cron, updated.timezone, updated.catch_up) == ("0 7 * * 1", "UTC", "latest")
    assert len(await client.list_schedules()) == 1


async def test_defaults_and_accepted_cron_forms(db: asyncpg.Connection, client: Client) -> None:
    for cron in (
        "@daily",
        "*/10 * * * * *",
        "0 9 * * 1-5",
        "0 0 last * *",
        "15,45 */2 1-15/3 jan-jun mon-fri",
        "0 0 * * 7",
    ):
        schedule_id = await db.fetchval("SELECT taskd.create_schedule('t', $1)", cron)
        found = await client.get_schedule(schedule_id)
        assert (found.timezone, found.catch_up, found.payload) == ("UTC", "latest", None)
        assert found.next_fire_at is not None, cron  # the daemon's cron math accepts it too


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("taskd.create_schedule('t', '0 9 * *')", "needs 5 fields"),
        ("taskd.create_schedule('t', '61 * * * *')", "minute field '61' is out of range 0-59"),
        ("taskd.create_schedule('t', '0 24 * * *')", "hour field '24' is out of range 0-23"),
        ("taskd.create_schedule('t', '0 9 * * 8')", "weekday field '8' is out of range 0-7"),
        ("taskd.create_schedule('t', '0 9 0 * *')", "day field '0' is out of range 1-31"),
        ("taskd.create_schedule('t', '0 9 * 13 *')", "month field '13' is out of range 1-12"),
        ("taskd.create_schedule('t', '*/0 * * * *')", "has a step of 0"),
        ("taskd.create_schedule('t', '0 9 5-2 * *')", "range that ends before it starts"),
        ("taskd.create_schedule('t', 'x 9 * * *')", "minute field 'x' is not a cron expression"),
        ("taskd.create_schedule('t', '')", "cron must not be empty"),
        ("taskd.create_schedule('', '@daily')", "task_id must not be empty"),
        (
            """taskd.create_schedule('t', '@daily', '{"timezone": "Mars/Olympus"}')""",
            "unknown timezone 'Mars/Olympus'",
        ),
        (
            """taskd.create_schedule('t', '@daily', '{"catch_up": "some"}')""",
            "catch_up must be one of latest, all, none, not 'some'",
        ),
        (
            """taskd.create_schedule('t', '@daily', '{"cron": "@hourly"}')""",
            "unknown option(s): cron",
        ),
        (
            """taskd.create_schedule('t', '@daily', '{"external_id": 42}')""",
            "external_id must be a string, not 42",
        ),
        ("taskd.create_schedule('t', '@daily', '[]')", "options must be a JSON object"),
    ],
)
async def test_bad_input_is_refused_with_the_reason(
    db: asyncpg.Connection, call: str, message: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as raised:
        await db.fetchval(f"SELECT {call}")
    assert raised.value.sqlstate == "22023"
    assert message in str(raised.value)
    assert await db.fetchval("SELECT count(*) FROM taskd.schedules") == 0


async def test_an_oversized_payload_is_refused(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE taskd.settings SET value = '100' WHERE key = 'max_payload_bytes'")
    big = orjson.dumps({"payload": {"text": "x" * 200}}).decode()
    with pytest.raises(asyncpg.PostgresError) as raised:
        await db.fetchval("SELECT taskd.create_schedule('t', '@daily', $1::jsonb)", big)
    assert raised.value.sqlstate == "54000"
    assert "over the limit of 100 bytes" in str(raised.value)


async def test_update_schedule_changes_only_what_it_names(
    db: asyncpg.Connection, client: Client
) -> None:
    created = await client.create_schedule(
        "t", "0 9 * * *", timezone="Europe/Paris", external_id="u1", payload={"a": 1}
    )
    returned = await db.fetchval(
        """SELECT taskd.update_schedule($1, '{"cron": "30 6 * * *", "external_id": null}')""",
        created.id,
    )
    assert returned == created.id
    found = await client.get_schedule(created.id)
    assert (found.cron, found.timezone, found.external_id, found.payload) == (
        "30 6 * * *",
        "Europe/Paris",
        None,
        {"a": 1},
    )
    assert found.updated_at > created.updated_at

    await db.execute(
        """SELECT taskd.update_schedule($1, '{"payload": {"b": 2}, "active": false}')""",
        created.id,
    )
    paused = await client.get_schedule(created.id)
    assert (paused.payload, paused.active, paused.next_fire_at) == ({"b": 2}, False, None)
    await db.execute("""SELECT taskd.update_schedule($1, '{"active": true}')""", created.id)
    assert (await client.get_schedule(created.id)).active

    with pytest.raises(asyncpg.PostgresError) as bad:
        await db.execute(
            """SELECT taskd.update_schedule($1, '{"timezone": "Nowhere/Else"}')""", created.id
        )
    assert bad.value.sqlstate == "22023" and "unknown timezone 'Nowhere/Else'" in str(bad.value)
    with pytest.raises(asyncpg.PostgresError) as unknown:
        await db.execute("""SELECT taskd.update_schedule($1, '{"dedup_key": "k"}')""", created.id)
    assert "unknown change(s): dedup_key" in str(unknown.value)
    with pytest.raises(asyncpg.PostgresError) as missing:
        await db.execute("""SELECT taskd.update_schedule('nope', '{"cron": "@daily"}')""")
    assert missing.value.sqlstate == "TD404"
    assert "no schedule with id 'nope'" in str(missing.value)
    assert (await client.get_schedule(created.id)).timezone == "Europe/Paris"


async def test_delete_schedule_keeps_its_runs(db: asyncpg.Connection, client: Client) -> None:
    created = await client.create_schedule("t", "@hourly")
    run_id = await db.fetchval("SELECT taskd.trigger_schedule($1)", created.id)
    await db.execute("SELECT taskd.delete_schedule($1)", created.id)
    with pytest.raises(ScheduleNotFound):
        await client.get_schedule(created.id)
    assert (await client.get_run(run_id)).schedule_id == created.id
    with pytest.raises(asyncpg.PostgresError) as missing:
        await db.execute("SELECT taskd.delete_schedule($1)", created.id)
    assert missing.value.sqlstate == "TD404"


async def test_each_change_notifies_the_schedulers_at_commit(
    db: asyncpg.Connection, database: str
) -> None:
    listener = await asyncpg.connect(database)
    heard: list[str] = []
    got = anyio.Event()

    def on_change(*args: object) -> None:
        heard.append(str(args[3]))
        got.set()

    await listener.add_listener("taskd_schedules", on_change)
    try:
        async with db.transaction():
            schedule_id = await db.fetchval("SELECT taskd.create_schedule('t', '@daily')")
            await listener.fetchval("SELECT 1")  # a round trip: a notification would be in
            assert heard == [], "nothing is announced before the commit"
        for statement in (
            """SELECT taskd.update_schedule($1, '{"cron": "@hourly"}')""",
            "SELECT taskd.delete_schedule($1)",
        ):
            await db.execute(statement, schedule_id)
        with anyio.fail_after(10):
            while len(heard) < 3:
                got = anyio.Event()
                await got.wait()
    finally:
        await listener.close()
    assert heard == [schedule_id] * 3


async def test_trigger_schedule_fires_now_without_moving_the_next_fire(
    db: asyncpg.Connection, client: Client, database: str
) -> None:
    await db.execute(
        "INSERT INTO taskd.tasks (id, queue, max_attempts) VALUES ('report', 'reports', 3)"
    )
    created = await client.create_schedule(
        "report", "0 9 * * *", timezone="Europe/Paris", external_id="org-1", payload={"k": 1}
    )
    # it fired once already, on schedule
    store = Store(client.pool)
    before = datetime.now(UTC)
    await store.schedules.fire(
        created.id, before - timedelta(hours=1), uuid.uuid4(), '{"scheduled": true}'
    )
    scheduled = await client.get_schedule(created.id)

    listener = await asyncpg.connect(database)
    woken = anyio.Event()
    await listener.add_listener("taskd_wakeup", lambda *args: woken.set())
    try:
        run_id = await db.fetchval("SELECT taskd.trigger_schedule($1)", created.id)
        with anyio.fail_after(10):
            await woken.wait()
    finally:
        await listener.close()

    run = await client.get_run(run_id)
    assert (run.task_id, run.queue, run.status.value) == ("report", "reports", "queued")
    assert run.schedule_id == created.id and run.scheduled_for is None
    fired = ScheduledRun.model_validate(run.payload)
    assert fired.manual and fired.schedule_id == created.id
    assert (fired.timezone, fired.external_id, fired.payload) == ("Europe/Paris", "org-1", {"k": 1})
    assert fired.timestamp.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
    assert before - timedelta(seconds=1) <= fired.timestamp <= datetime.now(UTC)
    assert fired.last_timestamp == scheduled.last_fired_at

    after = await client.get_schedule(created.id)
    assert after.last_fired_at == scheduled.last_fired_at
    assert after.next_fire_at == scheduled.next_fire_at
    assert after.last_run_id == scheduled.last_run_id

    # twice is two runs: a manual fire takes no fire time
    second = await client.trigger_schedule(created.id)
    assert second != run_id
    assert (await client.get_run(second)).payload["manual"] is True

    with pytest.raises(asyncpg.PostgresError) as missing:
        await db.fetchval("SELECT taskd.trigger_schedule('nope')")
    assert missing.value.sqlstate == "TD404"
    with pytest.raises(ScheduleNotFound, match="no schedule with id 'nope'"):
        await client.trigger_schedule("nope")


async def test_a_paused_schedule_fires_on_demand_and_the_scheduler_still_fires_on_time(
    client: Client,
) -> None:
    created = await client.create_schedule("t", "*/5 * * * *")
    await client.deactivate_schedule(created.id)
    run_id = await client.trigger_schedule(created.id)
    assert (await client.get_run(run_id)).payload["manual"] is True
    await client.activate_schedule(created.id)

    # the scheduler's next tick past the first fire time fires it, as if nothing was triggered
    store = Store(client.pool)
    first = created.next_fire_at
    assert first is not None
    await Scheduler(store).tick(now=first.astimezone(UTC) + timedelta(seconds=1))
    runs = await client.list_runs(schedule=created.id)
    assert sorted(r.scheduled_for is not None for r in runs) == [False, True]
    assert (await client.get_schedule(created.id)).last_fired_at == first


async def test_schedule_time_writes_the_zone_offset(db: asyncpg.Connection) -> None:
    assert (
        await db.fetchval("SELECT taskd.schedule_time('2026-03-29 07:00:00+00', 'Europe/Paris')")
        == "2026-03-29T09:00:00.000000+02:00"
    )
    assert (
        await db.fetchval(
            "SELECT taskd.schedule_time('2026-01-05 12:00:00+00', 'America/St_Johns')"
        )
        == "2026-01-05T08:30:00.000000-03:30"
    )
    assert await db.fetchval("SELECT taskd.schedule_time(NULL, 'UTC')") is None


async def test_a_cron_that_never_fires_is_stored_and_skipped_by_the_scheduler(
    db: asyncpg.Connection, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # SQL checks the form and ranges, not whether a date matches: the documented gap
    schedule_id = await db.fetchval("SELECT taskd.create_schedule('t', '0 0 30 2 *')")
    found = await client.get_schedule(schedule_id)
    assert found.active and found.next_fire_at is None
    scheduler = Scheduler(Store(client.pool))
    for _ in range(2):
        assert await scheduler.tick() is None
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 0
    skipped = [r for r in caplog.records if "schedule skipped" in r.getMessage()]
    assert len(skipped) == 1, "one error line, not one per tick"
    assert "never fires" in skipped[0].getMessage()

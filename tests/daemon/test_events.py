"""Events: SQL, the client (in a rolled-back transaction too), bare NOTIFY, subscribers."""

from __future__ import annotations

import logging

import asyncpg
import orjson
import pytest

from taskd import Client, Context, task
from taskd.config import Settings
from tests.support.waiting import wait_for, wait_for_run


@task(id="welcome", on_event="user.registered")
async def welcome(payload: dict, ctx: Context) -> str:
    return f"welcome {payload['user_id']}"


@task(id="crm-sync", on_event=["user.registered", "user.updated"])
async def crm_sync(payload: dict, ctx: Context) -> str:
    return f"synced {payload['user_id']}"


async def runs_of(db: asyncpg.Connection, event_id: object) -> list[str]:
    rows = await db.fetch(
        "SELECT task_id FROM taskd.runs WHERE event_id = $1 ORDER BY task_id", event_id
    )
    return [r["task_id"] for r in rows]


async def test_send_event_from_sql_starts_every_subscriber(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([welcome, crm_sync]):
        two = await db.fetchval(
            "SELECT taskd.send_event('user.registered', '{\"user_id\": \"u1\"}')"
        )
        one = await db.fetchval("SELECT taskd.send_event('user.updated', '{\"user_id\": \"u2\"}')")
        none = await db.fetchval("SELECT taskd.send_event('user.deleted', '{\"user_id\": \"u3\"}')")
        runs = await client.list_runs(event="user.registered")
        done = [await wait_for_run(client, r.id) for r in runs]
        assert sorted(r.output for r in done) == ["synced u1", "welcome u1"]
        assert all(r.event_id == two for r in done)
    assert await runs_of(db, two) == ["crm-sync", "welcome"]
    assert await runs_of(db, one) == ["crm-sync"]
    assert await runs_of(db, none) == []
    events = {e.name: e for e in await client.list_events()}
    assert events["user.deleted"].runs == 0, "an event nobody subscribes to is recorded"
    assert events["user.registered"].runs == 2 and events["user.registered"].id == two


async def test_client_send_event_commits_or_rolls_back_with_the_caller(
    client: Client, database: str, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([welcome]):  # subscriptions are synced by the daemon
        pass
    connection = await asyncpg.connect(database)
    try:
        with pytest.raises(RuntimeError):
            async with connection.transaction():
                await client.send_event("user.registered", {"user_id": "u9"}, connection=connection)
                raise RuntimeError("the caller's transaction fails")
        async with connection.transaction():
            kept = await client.send_event(
                "user.registered", {"user_id": "u8"}, connection=connection
            )
    finally:
        await connection.close()
    assert [e.id for e in await client.list_events()] == [kept]
    assert await runs_of(db, kept) == ["welcome"]
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 1


async def test_a_bare_notify_becomes_one_event_with_two_daemons(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([welcome]) as first, start_daemon([welcome]) as second:
        await wait_for(lambda: _one_leader(first, second))
        message = {"name": "user.registered", "payload": {"user_id": "n1"}}
        await db.execute("SELECT pg_notify('taskd_event', $1)", orjson.dumps(message).decode())
        runs = await wait_for(lambda: _runs_named(client, "user.registered"))
        run = await wait_for_run(client, runs[0].id)
    assert run.output == "welcome n1"
    assert len(await client.list_events()) == 1, "relayed once, not once per daemon"


async def test_malformed_notify_payloads_are_dropped_and_the_daemon_serves_on(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="taskd.events")

    def small_payloads(settings: Settings) -> None:
        # a NOTIFY carries at most 8,000 bytes: a limit below that is what one can exceed
        settings.tasks.max_payload_bytes = 1_000

    async with start_daemon([welcome], small_payloads) as daemon:
        await wait_for(lambda: _one_leader(daemon))
        big = orjson.dumps({"name": "user.registered", "payload": {"x": "y" * 2_000}})
        assert len(big) < 7_900, "a valid NOTIFY, only its payload is too big"
        reasons = [
            ("{not json", "not JSON"),
            ('"a string"', "not a JSON object"),
            ('{"payload": {}}', 'no "name"'),
            ('{"name": ""}', 'no "name"'),
            ('{"name": "x", "extra": 1}', "unknown key(s) ['extra']"),
            (big.decode(), "over the limit of 1000"),
        ]
        for bad, _ in reasons:
            await db.execute("SELECT pg_notify('taskd_event', $1)", bad)
        await db.execute(
            "SELECT pg_notify('taskd_event', $1)",
            '{"name": "user.registered", "payload": {"user_id": "ok"}}',
        )
        runs = await wait_for(lambda: _runs_named(client, "user.registered"))
        run = await wait_for_run(client, runs[0].id)
        assert daemon.event_relay is not None and daemon.event_relay.dropped == 6
    assert run.output == "welcome ok" and len(await client.list_events()) == 1
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(logged) == len(reasons), logged
    for message, (_, reason) in zip(logged, reasons, strict=True):
        assert reason in message, (message, reason)


async def test_event_errors_are_clear(client: Client, db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="name must not be empty"):
        await db.fetchval("SELECT taskd.send_event('', '{}')")
    with pytest.raises(ValueError, match="non-empty name"):
        await client.send_event(" ", {})
    await db.execute("UPDATE taskd.settings SET value = '100' WHERE key = 'max_payload_bytes'")
    with pytest.raises(asyncpg.ProgramLimitExceededError, match="over the limit of 100"):
        await db.fetchval(
            "SELECT taskd.send_event('big', $1::jsonb)", orjson.dumps({"x": "y" * 200}).decode()
        )
    with pytest.raises(ValueError, match="on_event names"):
        task(id="bad-sub", on_event=[""])


async def _one_leader(*daemons: object) -> bool:
    leaders = [d.event_relay is not None and d.event_relay.leading for d in daemons]  # type: ignore[attr-defined]
    return leaders.count(True) == 1


async def _runs_named(client: Client, event: str) -> list:
    return await client.list_runs(event=event)

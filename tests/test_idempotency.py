"""Idempotency keys: at most one run per (task, key) within the key's ttl, on every path."""

from __future__ import annotations

import uuid

import anyio
import anyio.lowlevel
import asyncpg
import orjson
import pytest

from daemon import Client, Context, task
from tests.conftest import wait_for, wait_for_run
from tests.test_cli import taskd


@task(id="idem.charge")
async def charge(payload: dict, ctx: Context) -> dict:
    return payload


async def all_connected(connected: list[int]) -> bool:
    return len(connected) == 50


async def run_count(db: asyncpg.Connection, task_id: str = "idem.charge") -> int:
    count: int = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE task_id = $1", task_id)
    return count


async def test_fifty_concurrent_triggers_of_one_key_make_one_run(
    database: str, db: asyncpg.Connection
) -> None:
    # 50 callers, each on its own connection, all at once
    ids: list[uuid.UUID] = []
    connected: list[int] = []
    start = anyio.Event()

    async def caller(number: int) -> None:
        async with Client.connect(database) as own:
            connected.append(number)
            await start.wait()
            ids.append(
                await own.trigger("idem.charge", {"caller": number}, idempotency_key="order-7")
            )

    async with anyio.create_task_group() as group:
        for number in range(50):
            group.start_soon(caller, number)
        await wait_for(lambda: all_connected(connected))  # then all fire at once
        start.set()
    assert len(ids) == 50 and len(set(ids)) == 1
    assert await run_count(db) == 1
    stored = await db.fetchrow("SELECT id, idempotency_key FROM taskd.runs")
    assert stored["id"] == ids[0] and stored["idempotency_key"] == "order-7"


async def test_the_key_is_per_task_and_expires_with_its_ttl(
    client: Client, db: asyncpg.Connection
) -> None:
    first = await client.trigger("idem.charge", {}, idempotency_key="k", idempotency_ttl="1h")
    assert await client.trigger("idem.charge", {"again": 1}, idempotency_key="k") == first
    other_task = await client.trigger("idem.refund", {}, idempotency_key="k")
    assert other_task != first
    assert await client.trigger("idem.charge", {}, idempotency_key="k2") != first
    # the key's time is up: a new run takes it over, and holds it from then on
    await db.execute("UPDATE taskd.idempotency_keys SET expires_at = now() - interval '1s'")
    later = await client.trigger("idem.charge", {}, idempotency_key="k")
    assert later != first
    assert await client.trigger("idem.charge", {}, idempotency_key="k") == later
    assert await run_count(db) == 3  # first, k2, later


async def test_a_rolled_back_trigger_leaves_the_key_free(
    client: Client, db: asyncpg.Connection
) -> None:
    async with client.pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        lost = await client.trigger("idem.charge", {}, idempotency_key="tx", connection=connection)
        await transaction.rollback()
    kept = await client.trigger("idem.charge", {}, idempotency_key="tx")
    assert kept != lost
    assert await run_count(db) == 1


async def test_sql_cli_and_api_paths_share_the_key(
    database: str, client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    from_sql = await db.fetchval(
        "SELECT taskd.trigger('idem.charge', '{\"n\": 1}', "
        '\'{"idempotency_key": "shared", "idempotency_ttl": "2 hours"}\')'
    )
    assert await client.trigger("idem.charge", {}, idempotency_key="shared") == from_sql
    async with start_daemon([charge]) as daemon:
        result = await taskd(
            database, "trigger", "idem.charge", "--payload", "{}", "--idempotency-key", "shared"
        )
        assert result.code == 0, str(result)
        assert uuid.UUID(result.out.strip()) == from_sql
        import aiohttp

        assert daemon.admin is not None
        async with aiohttp.ClientSession() as http:
            reply = await http.post(
                f"{daemon.admin.url}/api/tasks/idem.charge/trigger",
                json={"payload": {}, "idempotency_key": "shared"},
            )
            assert reply.status == 201
            assert uuid.UUID((await reply.json())["id"]) == from_sql
            empty = await http.post(
                f"{daemon.admin.url}/api/tasks/idem.charge/trigger",
                json={"payload": {}, "idempotency_key": ""},
            )
            assert empty.status == 422
        run = await wait_for_run(client, from_sql)
        assert run.payload == {"n": 1}
    assert await run_count(db) == 1
    with pytest.raises(asyncpg.InvalidParameterValueError, match="must not be empty"):
        await db.fetchval(
            "SELECT taskd.trigger('idem.charge', '{}', '{\"idempotency_key\": \"\"}')"
        )
    with pytest.raises(ValueError, match="non-empty"):
        await client.trigger("idem.charge", {}, idempotency_key="")


async def test_a_keyed_trigger_takes_every_option(client: Client) -> None:
    run_id = await client.trigger(
        "idem.charge",
        {"x": 1},
        idempotency_key="opts",
        delay="1h",
        priority=5,
        max_attempts=2,
        tags=["user:u1"],
        queue="payments",
        ttl="2h",
    )
    run = await client.get_run(run_id)
    assert (run.priority, run.max_attempts, run.tags, run.queue) == (5, 2, ["user:u1"], "payments")
    assert run.payload == {"x": 1}
    assert run.expires_at is not None and run.run_at > run.created_at
    assert orjson.dumps(run.payload) == b'{"x":1}'

"""Idempotency keys: at most one run per (task, key) within the key's ttl, on every path."""

from __future__ import annotations

import uuid

import anyio
import anyio.lowlevel
import asyncpg
import orjson
import pytest

from taskd import Client, Context, task
from tests.support.cli import taskd
from tests.support.waiting import wait_for, wait_for_run


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


async def test_batch_trigger_takes_one_key_per_payload(
    client: Client, db: asyncpg.Connection
) -> None:
    first = await client.trigger(charge, {"n": 0}, idempotency_key="k0")
    ids = await client.batch_trigger(
        charge,
        [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 1}],
        idempotency_keys=["k0", "k1", None, "k1"],
    )
    # k0 was held by the earlier run; k1 repeated in the batch is its first payload's run
    assert ids[0] == first
    assert ids[3] == ids[1] and len({ids[0], ids[1], ids[2]}) == 3
    assert await run_count(db) == 3
    keyed = await db.fetchval("SELECT idempotency_key FROM taskd.runs WHERE id = $1", ids[1])
    assert keyed == "k1"
    with pytest.raises(ValueError, match="one each"):
        await client.batch_trigger(charge, [{}, {}], idempotency_keys=["a"])


async def test_concurrent_batches_sharing_keys_in_any_order_make_one_run_per_key(
    database: str, db: asyncpg.Connection
) -> None:
    keys = [f"order-{n}" for n in range(20)]
    results: list[list[uuid.UUID]] = []

    async def batch(order: list[str]) -> None:
        async with Client.connect(database) as own:
            ids = await own.batch_trigger(charge, [{}] * len(order), idempotency_keys=order)
            results.append([ids[order.index(key)] for key in keys])

    async with anyio.create_task_group() as group:
        for n in range(8):  # forwards and backwards: a deadlock would fail a batch
            group.start_soon(batch, keys if n % 2 else keys[::-1])
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert await run_count(db) == 20


@task(id="idem.child")
async def child(payload: dict, ctx: Context) -> str:
    return f"letter {payload['activity']}"


@task(id="idem.parent")
async def parent(payload: dict, ctx: Context) -> str:
    return await child.trigger_and_wait(
        {"activity": payload["activity"]}, idempotency_key=f"letter-{payload['activity']}"
    )


async def test_child_runs_with_one_idempotency_key_are_one_run(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([parent, child], concurrency=10):
        parents = await client.batch_trigger(parent, [{"activity": "a1"}] * 3)
        for parent_id in parents:
            run = await wait_for_run(client, parent_id, timeout=20)
            assert run.output == "letter a1", run
    # three parents asked for the letter of a1: one child run wrote it
    assert await run_count(db, "idem.child") == 1

"""Bad input and bad timing never wedge the daemon (review findings, each reproduced).

Some tests inject latency into the store's claim (``monkeypatch`` wrapping the real method):
the only way to put a NOTIFY or a shutdown exactly between a claim's query and its result.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest
from pydantic import BaseModel, field_validator

from daemon import Client, Context, Retry, RunStatus, task
from daemon.store.store import Store
from tests.conftest import wait_for, wait_for_run


@task(id="echo")
async def echo(payload: object, ctx: Context) -> object:
    return payload


class Picky(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def no_bugs(cls, value: str) -> str:
        if value == "bug":
            raise TypeError("a validator with a bug")  # pydantic does not wrap TypeError
        return value


async def test_a_validator_that_crashes_fails_only_its_run(client: Client, start_daemon) -> None:
    @task(id="picky", retry=Retry(max_attempts=3, min_delay=0))
    async def picky(payload: Picky, ctx: Context) -> str:
        return payload.name

    async with start_daemon([picky, echo]):
        bad = await wait_for_run(client, await client.trigger(picky, {"name": "bug"}))
        good = await wait_for_run(client, await client.trigger(picky, {"name": "ok"}))
        after = await wait_for_run(client, await client.trigger(echo, 1))
    assert bad.status is RunStatus.FAILED and len(bad.attempts) == 1
    assert bad.error["type"] == "TypeError"
    assert good.output == "ok" and after.output == 1


async def test_an_exception_whose_str_raises_is_recorded(client: Client, start_daemon) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    @task(id="unprintable", retry=Retry(max_attempts=2, min_delay=0))
    async def unprintable(payload: None, ctx: Context) -> None:
        raise Unprintable()

    async with start_daemon([unprintable, echo]):
        run = await wait_for_run(client, await client.trigger(unprintable))
        after = await wait_for_run(client, await client.trigger(echo, 2))
    assert run.status is RunStatus.FAILED and len(run.attempts) == 2
    assert run.error["type"] == "Unprintable"
    assert "str() raised" in run.error["message"]
    assert after.output == 2


def test_retry_forever_policies_do_not_overflow() -> None:
    retry = Retry(max_attempts=10_000, min_delay=1, max_delay=60, factor=2, jitter=False)
    assert retry.delay_after(1) == 1
    assert retry.delay_after(1025) == 60
    assert retry.delay_after(9_999) == 60


async def test_a_notify_during_a_claim_is_not_lost(
    client: Client, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = Store.run_claim
    claim_returned = anyio.Event()
    release = anyio.Event()

    async def slow_claim(self: Store, *args: object, **kwargs: object) -> object:
        claimed = await real_claim(self, *args, **kwargs)
        if claimed and not claim_returned.is_set():
            claim_returned.set()
            await release.wait()  # the result is on its way back; a NOTIFY lands now
        return claimed

    monkeypatch.setattr(Store, "run_claim", slow_claim)
    async with start_daemon([echo], poll_interval=30):
        first = await client.trigger(echo, "first")
        await claim_returned.wait()
        second = await client.trigger(echo, "second")
        await anyio.sleep(0.05)  # let the NOTIFY reach the listener while the claim waits
        release.set()
        runs = [await wait_for_run(client, run_id, timeout=5) for run_id in (first, second)]
    assert [r.output for r in runs] == ["first", "second"], "without waiting for the 30 s poll"


async def test_runs_claimed_while_a_drain_starts_go_back_to_the_queue(
    client: Client, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = Store.run_claim
    in_claim = anyio.Event()
    release = anyio.Event()

    async def gated_claim(self: Store, *args: object, **kwargs: object) -> object:
        claimed = await real_claim(self, *args, **kwargs)
        if claimed:
            in_claim.set()
            await release.wait()
        return claimed

    started: list[int] = []

    @task(id="never-started")
    async def never_started(payload: None, ctx: Context) -> None:
        started.append(ctx.attempt)
        await anyio.sleep(60)

    monkeypatch.setattr(Store, "run_claim", gated_claim)
    async with anyio.create_task_group() as group, start_daemon([never_started]) as daemon:
        run_id = await client.trigger(never_started)
        await in_claim.wait()  # the run is EXECUTING in the database, not yet in the pool
        group.start_soon(daemon.stop, 0.2)
        await wait_for(lambda: _claiming_stopped(daemon))
        release.set()
    run = await client.get_run(run_id)
    assert started == []
    assert run.status is RunStatus.QUEUED and run.attempt == 0


async def _claiming_stopped(daemon: object) -> bool:
    return not daemon.pool._claiming  # type: ignore[attr-defined]


async def test_shutdown_ends_when_the_database_is_gone(
    client: Client, database: str, server_dsn: str, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("daemon.worker.pool.FINAL_FLUSH_TIMEOUT", 1.0)
    gate = anyio.Event()
    running = anyio.Event()

    @task(id="outlives-db")
    async def outlives_db(payload: None, ctx: Context) -> str:
        running.set()
        await gate.wait()
        return "done"

    name = urlsplit(database).path.lstrip("/")
    admin = await asyncpg.connect(server_dsn)
    try:
        with anyio.fail_after(20):
            async with start_daemon([outlives_db]) as daemon:
                run_id = await client.trigger(outlives_db)
                await running.wait()
                await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                gate.set()  # the attempt completes while the database is away
        assert daemon.pool is not None and daemon.pool.unwritten == 1
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    async with Client.connect(database) as fresh:
        run = await fresh.get_run(run_id)
    assert run.status is RunStatus.EXECUTING, "left to the lease: nothing was written twice"


async def test_queues_route_by_the_runs_queue(client: Client, start_daemon) -> None:
    async with start_daemon([echo], queues=["default"], poll_interval=0.05):
        billing = await client.trigger(echo, "b", queue="billing")
        default = await client.trigger(echo, "d")
        await wait_for_run(client, default)
    assert (await client.get_run(billing)).status is RunStatus.QUEUED
    async with start_daemon([echo], queues=["billing"], poll_interval=0.05):
        run = await wait_for_run(client, billing)
    assert run.output == "b"


async def test_the_listener_reconnects_and_wakes_the_claimer(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([echo], poll_interval=30) as daemon:
        assert daemon.listener is not None
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        await wait_for(lambda: _reconnected(daemon))
        # a run triggered after the reconnect starts on its NOTIFY, not at the 30 s poll
        run = await wait_for_run(client, await client.trigger(echo, "after"), timeout=5)
    assert run.output == "after"


async def _reconnected(daemon: object) -> bool:
    listener = daemon.listener  # type: ignore[attr-defined]
    return bool(listener.up and listener.reconnects == 1)

"""Bad input and bad timing never wedge the daemon (review findings, each reproduced).

Some tests inject latency into the store's claim (``monkeypatch`` wrapping the real method):
the only way to put a NOTIFY or a shutdown exactly between a claim's query and its result.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest
from pydantic import BaseModel, field_validator

from taskd import Client, Context, Retry, RunStatus, task
from taskd.models import Claim
from taskd.store.runs import RunStore
from taskd.store.workers import WorkerStore
from tests.support.waiting import wait_for, wait_for_run


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
    real_claim = RunStore.claim
    claim_returned = anyio.Event()
    release = anyio.Event()

    async def slow_claim(self: RunStore, *args: Any, **kwargs: Any) -> Claim:
        claimed = await real_claim(self, *args, **kwargs)
        if claimed.runs and not claim_returned.is_set():
            claim_returned.set()
            await release.wait()  # the result is on its way back; a NOTIFY lands now
        return claimed

    monkeypatch.setattr(RunStore, "claim", slow_claim)
    async with start_daemon([echo], poll_interval=30) as daemon:
        first = await client.trigger(echo, "first")
        await claim_returned.wait()
        assert daemon.listener is not None
        heard_before = daemon.listener.last_notification_at
        second = await client.trigger(echo, "second")
        # the NOTIFY reaches the listener while the claim's result is still on its way back
        await wait_for(lambda: _heard_since(daemon, heard_before))
        release.set()
        runs = [await wait_for_run(client, run_id, timeout=5) for run_id in (first, second)]
    assert [r.output for r in runs] == ["first", "second"], "without waiting for the 30 s poll"


async def _heard_since(daemon: object, before: float | None) -> bool:
    return daemon.listener.last_notification_at != before  # type: ignore[attr-defined]


async def test_runs_claimed_while_a_drain_starts_go_back_to_the_queue(
    client: Client, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = RunStore.claim
    in_claim = anyio.Event()
    release = anyio.Event()

    async def gated_claim(self: RunStore, *args: Any, **kwargs: Any) -> Claim:
        claimed = await real_claim(self, *args, **kwargs)
        if claimed.runs:
            in_claim.set()
            await release.wait()
        return claimed

    started: list[int] = []

    @task(id="never-started")
    async def never_started(payload: None, ctx: Context) -> None:
        started.append(ctx.attempt)
        await anyio.sleep(60)

    monkeypatch.setattr(RunStore, "claim", gated_claim)
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
    return not daemon.claimer._claiming  # type: ignore[attr-defined]


async def test_shutdown_ends_when_the_database_is_gone(
    client: Client, database: str, server_dsn: str, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("taskd.worker.completer.FINAL_FLUSH_TIMEOUT", 1.0)
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
        assert daemon.completer is not None and daemon.completer.unwritten == 1
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
            # the listener's connection: its last statement LISTENs on taskd_schedules (the
            # event relay's connection LISTENs too, on taskd_event)
            "WHERE datname = current_database() AND query LIKE 'LISTEN%taskd_schedules%'"
        )
        assert killed == 1
        await wait_for(lambda: _reconnected(daemon))
        # a run triggered after the reconnect starts on its NOTIFY, not at the 30 s poll
        run = await wait_for_run(client, await client.trigger(echo, "after"), timeout=5)
    assert run.output == "after"


async def _reconnected(daemon: object) -> bool:
    listener = daemon.listener  # type: ignore[attr-defined]
    return bool(listener.up and listener.reconnects == 1)


# second review: cancel and lease races ------------------------------------------------------

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


async def test_a_task_raising_cancelled_error_itself_is_a_failed_attempt(
    client: Client, start_daemon
) -> None:
    calls: list[int] = []

    @task(id="raises-cancelled", retry=Retry(max_attempts=2, min_delay=0))
    async def raises_cancelled(payload: None, ctx: Context) -> None:
        calls.append(ctx.attempt)
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future  # a future some library cancelled: nobody cancelled this task

    async with start_daemon([raises_cancelled], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(raises_cancelled), FINISHED)
    assert calls == [1, 2], "not handed back forever"
    assert run.status is RunStatus.FAILED and run.error["type"] == "CancelledError"


async def test_a_cancel_accepted_during_a_failing_attempt_stops_its_retry(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    attempts: list[int] = []

    @task(id="fails-after-cancel", retry=Retry(max_attempts=3, min_delay=0, jitter=False))
    async def fails_after_cancel(payload: None, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        await db.fetchval("SELECT taskd.cancel($1)", ctx.run_id)
        raise RuntimeError("failed before the cancel landed")  # no await after the cancel

    async with start_daemon([fails_after_cancel], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(fails_after_cancel), FINISHED)
    assert attempts == [1] and run.status is RunStatus.CANCELED


async def test_a_cancel_landing_before_the_first_step_cancels_the_run(
    client: Client, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    @task(id="never-steps")
    async def never_steps(payload: None, ctx: Context) -> None:
        started.append(1)

    real_claim = RunStore.claim
    pools: list[object] = []

    async def claim_then_cancel(self: RunStore, *args: Any, **kwargs: Any) -> Claim:
        claimed = await real_claim(self, *args, **kwargs)
        loop = asyncio.get_running_loop()
        for run in claimed.runs:  # a cancel NOTIFY handled in the loop iteration of the reply
            loop.call_soon(pools[0].cancel, run.id)  # type: ignore[attr-defined]
        return claimed

    monkeypatch.setattr(RunStore, "claim", claim_then_cancel)
    async with start_daemon([never_steps], poll_interval=0.05) as daemon:
        pools.append(daemon.in_flight)
        run = await wait_for_run(client, await client.trigger(never_steps), FINISHED, timeout=5)
        assert daemon.in_flight is not None and daemon.in_flight.in_use == 0
    assert started == [] and run.status is RunStatus.CANCELED


async def test_a_run_claimed_again_here_supersedes_its_stale_attempt(
    client: Client, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []
    second_started = anyio.Event()

    @task(id="outlives-lease", retry=Retry(max_attempts=5, min_delay=0, jitter=False))
    async def outlives_lease(payload: None, ctx: Context) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt > 1:
            second_started.set()
            return f"done {ctx.attempt}"
        await anyio.sleep(30)  # outlives its lease while the heartbeats fail
        return "stale"

    real_heartbeat = WorkerStore.heartbeat

    async def failing_until_reclaimed(self: RunStore, *args: object, **kwargs: object) -> bool:
        if not second_started.is_set():
            raise OSError("heartbeat cannot reach the database")
        return await real_heartbeat(self, *args, **kwargs)

    monkeypatch.setattr(WorkerStore, "heartbeat", failing_until_reclaimed)
    async with start_daemon([outlives_lease], heartbeat=0.2, lease=1, poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(outlives_lease), timeout=15)
    assert run.status is RunStatus.COMPLETED and run.output == "done 2"
    assert [a.outcome for a in run.attempts] == ["lost", "completed"]
    assert attempts == [1, 2]


async def test_a_worker_without_its_lock_stops_claiming_and_stops_when_declared_gone(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    executions: list[tuple[uuid.UUID, int]] = []

    @task(id="held-work")
    async def held_work(payload: int, ctx: Context) -> str:
        executions.append((ctx.run_id, ctx.attempt))
        await anyio.sleep(2 if payload == 1 else 0)
        return "done"

    async with start_daemon([held_work], heartbeat=0.3, lease=5, poll_interval=0.05) as b:
        first = await client.trigger(held_work, 1)
        await wait_for_run(client, first, (RunStatus.EXECUTING,), timeout=5)
        assert b.lock is not None
        # b's lock connection drops and cannot come back (max_connections reached, say)
        b.lock._session._dsn = "postgresql://nobody@127.0.0.1:1/nowhere"
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND granted AND objid::bigint = ($1::bigint & 4294967295)",
            b.lock.key,
        )
        await wait_for(lambda: _lock_lost(b))
        second = await client.trigger(held_work, 2)  # b must not claim it without its lock
        async with start_daemon([held_work], heartbeat=0.3, lease=5, poll_interval=0.05) as a:
            runs = [await wait_for_run(client, r, FINISHED, timeout=10) for r in (first, second)]
            await wait_for(lambda: _declared_gone(b))
        assert all(r.status is RunStatus.COMPLETED for r in runs)
        assert [r.attempts[-1].worker_id for r in runs] == [a.worker_id, a.worker_id]
        assert [e for e in executions if e[0] == second] == [(second, 1)], "claimed by a only"
        # b's attempt was taken from it (lost) and run again by a; b, declared gone, abandoned
        # it without writing anything
        assert [(x.outcome, x.worker_id) for x in runs[0].attempts] == [
            ("lost", b.worker_id),
            ("completed", a.worker_id),
        ]
        assert b.completer is not None and b.completer.completed_total == 0


async def _lock_lost(daemon: object) -> bool:
    return not daemon.lock.held  # type: ignore[attr-defined]


async def _declared_gone(daemon: object) -> bool:
    return bool(daemon.declared_gone)  # type: ignore[attr-defined]

"""A transaction outside taskd that holds one run's row lock costs that run at most (H1).

An application may call ``taskd.cancel(id)`` inside its own transaction and keep it open, or an
operator may leave an ``UPDATE`` uncommitted in a SQL client: the run's row stays locked for as
long as they like. The daemon's heartbeat, completer and claims must go on for every other run.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, RunStatus, task
from taskd.config import load_settings
from taskd.errors import ConfigError
from tests.support.waiting import wait_for, wait_for_run

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)


async def test_a_foreign_row_lock_past_the_lease_costs_only_that_run(
    client: Client, db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    executions: Counter[uuid.UUID] = Counter()
    ended: set[uuid.UUID] = set()
    gates = {"held": anyio.Event(), "second": anyio.Event(), "many": anyio.Event()}

    @task(id="locks.work")
    async def work(payload: dict[str, Any], ctx: Context) -> str:
        executions[ctx.run_id] += 1
        gate = gates.get(payload["gate"])
        if gate is not None:
            await gate.wait()
        ended.add(ctx.run_id)
        return "done"

    locker = await asyncpg.connect(database)
    second_locker = await asyncpg.connect(database)
    lock_tx = locker.transaction()
    second_tx = second_locker.transaction()
    try:
        async with start_daemon(
            [work], lease=3.0, heartbeat=0.5, concurrency=100, poll_interval=0.05
        ):
            held = await client.trigger(work, {"gate": "held"})  # canceled by the foreign tx
            second = await client.trigger(work, {"gate": "second"})  # finishes while locked
            many = await client.batch_trigger(work, [{"gate": "many"}] * 50)
            everyone = [held, second, *many]
            await wait_for(
                lambda: db.fetchval(
                    "SELECT count(*) = $2 FROM taskd.runs"
                    " WHERE id = ANY($1::uuid[]) AND status = 'executing'",
                    everyone,
                    len(everyone),
                )
            )

            # An application cancels `held` in its transaction and keeps it open; another
            # session holds `second` (an operator's open UPDATE, say).
            await lock_tx.start()
            await locker.fetchval("SELECT taskd.cancel($1)", held)
            await second_tx.start()
            await second_locker.execute(
                "SELECT 1 FROM taskd.runs WHERE id = $1 FOR NO KEY UPDATE", second
            )

            # `second` ends while its row is locked: its outcome waits, no other run's does,
            # and the daemon keeps claiming.
            gates["second"].set()
            await wait_for(lambda: _true(second in ended))
            fresh = await client.batch_trigger(work, [{"gate": "none"}] * 10)
            for run_id in fresh:
                await wait_for_run(client, run_id, FINISHED)
            await second_tx.rollback()
            assert (await wait_for_run(client, second, FINISHED)).status is RunStatus.COMPLETED

            # `held` stays locked until its lease has long expired (more than two heartbeats,
            # so the rescuers have looked): the other 50 executing runs keep their leases.
            await wait_for(
                lambda: db.fetchval(
                    "SELECT lease_expires_at < now() - interval '1.5 s'"
                    " FROM taskd.runs WHERE id = $1",
                    held,
                ),
                timeout=20,
            )
            assert not await db.fetch("SELECT run_id FROM taskd.attempts WHERE outcome = 'lost'"), (
                "runs were rescued while their daemon was alive"
            )
            assert not await db.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE id = ANY($1::uuid[])"
                " AND (status <> 'executing' OR lease_expires_at < now())",
                many,
            )

            gates["many"].set()
            for run_id in many:
                assert (await wait_for_run(client, run_id, FINISHED)).status is (
                    RunStatus.COMPLETED
                )
            await lock_tx.commit()  # the cancel lands
            assert (await wait_for_run(client, held, FINISHED)).status is RunStatus.CANCELED
    finally:
        await locker.close()
        await second_locker.close()

    # Only `held` may have been handed back as lost (its lease expired under the lock; it
    # ended canceled either way); every run executed once.
    lost = {
        row[0] for row in await db.fetch("SELECT run_id FROM taskd.attempts WHERE outcome = 'lost'")
    }
    assert lost <= {held}
    assert {run_id: n for run_id, n in executions.items() if n != 1} == {}
    assert set(executions) == {held, second, *many, *fresh}


async def _true(value: bool) -> bool:
    return value


def test_the_lock_and_statement_timeouts_are_validated_config_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings(None).database
    assert (defaults.lock_timeout, defaults.statement_timeout) == (5.0, 300.0)
    monkeypatch.setenv("TASKD_DATABASE__LOCK_TIMEOUT", "2s")
    monkeypatch.setenv("TASKD_DATABASE__STATEMENT_TIMEOUT", "1m")
    assert load_settings(None).database.lock_timeout == 2.0
    monkeypatch.setenv("TASKD_DATABASE__LOCK_TIMEOUT", "0")
    with pytest.raises(ConfigError, match=r"database\.lock_timeout .*greater than 0"):
        load_settings(None)
    monkeypatch.setenv("TASKD_DATABASE__LOCK_TIMEOUT", "2m")
    with pytest.raises(ConfigError, match=r"lock_timeout \(120s\) must not exceed"):
        load_settings(None)


async def test_a_daemon_whose_worker_row_is_gone_stops_like_a_declared_gone_one(
    db: asyncpg.Connection, start_daemon: Any
) -> None:
    @task(id="locks.idle")
    async def idle(payload: None, ctx: Context) -> None:
        return None

    async with start_daemon([idle], lease=1.5, heartbeat=0.2) as daemon:
        # pruned a day after a stop, or deleted by hand: nobody can see or reconcile the
        # worker any more, so it must not go on claiming under that id (L10)
        await db.execute("DELETE FROM taskd.workers WHERE id = $1", daemon.worker_id)
        await wait_for(lambda: _true(daemon.declared_gone))

"""A claim the database forgot: the run comes back to the same daemon under the same attempt.

The claim is committed asynchronously (``synchronous_commit=off``), so a PostgreSQL crash may
forget it after the daemon started the run. Recovery puts the run back in the queue at its
previous attempt, and this daemon may claim it again: the new claim carries the same worker
and the same attempt number as the one the database forgot. An outcome of the first execution
still waiting to be written (the database was away) would pass the new claim's
compare-and-set. It must not: the run is the new execution's now, and a run reported completed
twice on the change stream (`tests/process/test_db_crash.py` saw it in CI: both outcomes in
one batch) is a broken promise.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, task
from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import WorkerSettings
from taskd.sdk.registry import Registry
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.claimer import Claimer
from taskd.worker.completer import Completer
from taskd.worker.in_flight import InFlight
from tests.support.waiting import wait_for
from tests.support.workers import register_worker

EXECUTIONS: list[uuid.UUID] = []


@task(id="forgotten.count")
async def count(payload: Any, ctx: Context) -> int:
    EXECUTIONS.append(ctx.run_id)
    return len(EXECUTIONS)


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def forget_claim(db: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """What crash recovery does to a claim whose commit never reached the WAL."""
    async with db.transaction():
        await db.execute("SET LOCAL forgotten.recovering = 'on'")  # passes `fail_outcomes`
        await db.execute(
            "UPDATE taskd.runs SET status = 'queued', attempt = attempt - 1, worker_id = NULL,"
            " lease_expires_at = NULL, attempt_started_at = NULL WHERE id = $1",
            run_id,
        )


async def fail_outcomes(db: asyncpg.Connection, failing: bool) -> None:
    """While ``failing``, every outcome write fails as it does while the server recovers
    (SQLSTATE 57P03, retried by the completer)."""
    await db.execute(
        """
        CREATE TABLE IF NOT EXISTS forgotten_failing (failing boolean NOT NULL);
        CREATE OR REPLACE FUNCTION forgotten_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('forgotten.recovering', true) IS DISTINCT FROM 'on'
               AND (SELECT bool_or(failing) FROM forgotten_failing) THEN
                RAISE EXCEPTION 'the database system is starting up' USING ERRCODE = '57P03';
            END IF;
            RETURN NEW;
        END $$;
        CREATE OR REPLACE TRIGGER forgotten_fail BEFORE UPDATE ON taskd.runs FOR EACH ROW
            WHEN (OLD.status = 'executing' AND NEW.status <> 'executing')
            EXECUTE FUNCTION forgotten_fail();
        DELETE FROM forgotten_failing;
        """
    )
    await db.execute("INSERT INTO forgotten_failing VALUES ($1)", failing)


@pytest.mark.parametrize("first_outcome", ["waiting to be written", "being written"])
async def test_a_run_claimed_again_under_the_same_attempt_completes_once_with_the_new_execution(
    store: Store,
    client: Client,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    first_outcome: str,
) -> None:
    EXECUTIONS.clear()
    caplog.set_level(logging.WARNING, logger="taskd")
    worker_id = await register_worker(store, ["forgotten.count"])
    run_id = await client.trigger(count, {})
    changes = ChangeHub()
    changes.forward = []  # every change the daemon publishes
    settings = WorkerSettings(concurrency=4)
    claimer = Claimer(store, Registry([count]), settings, worker_id)
    completer = Completer(store, worker_id, claimer, changes=changes)
    in_flight = InFlight(store, Registry([count]), settings, claimer, completer, changes=changes)
    writing = first_outcome == "being written"
    await fail_outcomes(db, writing)

    async with anyio.create_task_group() as group:
        assert [r.attempt for r in await claimer.run_once()] == [1]
        await wait_for(lambda: idle(in_flight), timeout=5)
        assert completer.leases() == [(run_id, 1)], "the first execution's outcome waits"
        if writing:
            # its batch goes out and fails: the completer retries it after a pause
            group.start_soon(completer.run)
            await wait_for(lambda: failed_once(caplog), timeout=5)
            assert completer.leases() == [(run_id, 1)]

        await forget_claim(db, run_id)
        assert [r.attempt for r in await claimer.run_once()] == [1], "same worker, same attempt"
        await wait_for(lambda: idle(in_flight), timeout=5)
        assert EXECUTIONS == [run_id, run_id]

        if writing:
            await fail_outcomes(db, False)  # the database is back: the retry goes out
            await wait_for(lambda: completed(db, run_id), timeout=10)
            completer.close()
        else:
            await completer.run_once()

    row = await db.fetchrow("SELECT status, attempt, output FROM taskd.runs WHERE id = $1", run_id)
    assert (row["status"], row["attempt"]) == ("completed", 1)
    assert row["output"] == "2", "the outcome of the execution the database knows of"
    assert await db.fetchval("SELECT count(*) FROM taskd.attempts WHERE run_id = $1", run_id) == 1
    published: list[RunChange] = changes.forward
    assert [(c.kind, c.attempt) for c in published if c.kind is not ChangeKind.STARTED] == [
        (ChangeKind.COMPLETED, 1)
    ], "one completion on the change stream"


async def idle(in_flight: InFlight) -> bool:
    return in_flight.in_use == 0


async def failed_once(caplog: pytest.LogCaptureFixture) -> bool:
    return any("writing 1 outcome(s) failed" in r.getMessage() for r in caplog.records)


async def completed(db: asyncpg.Connection, run_id: uuid.UUID) -> bool:
    status = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id)
    return bool(status == "completed")

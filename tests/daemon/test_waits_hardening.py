"""Waits, tokens and drains under pressure (issue 12: review M1, M4, L4-L6, L9, L13).

A completed token wakes only the run waiting on it; a token past its timeout is refused; tokens
go with their runs; token data has a size cap; a daemon whose clock is ahead of the database's
suspends instead of spinning; a drained run keeps its start (its ttl is over); the per-run log
cap holds over resumes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import (
    Client,
    Context,
    PayloadTooLarge,
    RunStatus,
    TokenFinished,
    WaitTimeout,
    clock,
    task,
    wait,
)
from taskd.config import Settings
from taskd.sdk.context import Context as ContextClass
from taskd.store.database import create_pool
from taskd.store.store import Store
from tests.support.retention import LONG_AGO, NOW, pruner, seed_run
from tests.support.waiting import wait_for, wait_for_run

# The smallest waits that still suspend: a wait longer than the threshold suspends the run.
THRESHOLD = 0.1

DSN: dict[str, str] = {}
EXECS: dict[str, int] = {}
TOKENS: dict[str, str] = {}
GATES: dict[str, anyio.Event] = {}


def executed(ctx: Context) -> int:
    key = str(ctx.run_id)
    EXECS[key] = EXECS.get(key, 0) + 1
    return EXECS[key]


async def complete_from_sql(token_id: str, data: str) -> str:
    """Complete a token from another session, as an outside program does."""
    connection = await asyncpg.connect(DSN["dsn"])
    try:
        return str(
            await connection.fetchval(
                "SELECT taskd.complete_token($1, $2::jsonb)", uuid.UUID(token_id), data
            )
        )
    finally:
        await connection.close()


async def token_row(db: asyncpg.Connection, token_id: str | uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, unseen, data FROM taskd.wait_tokens WHERE id = $1", uuid.UUID(str(token_id))
    )
    assert row is not None
    return row


# M1: a completed token wakes only the run waiting on it ------------------------------------


@task(id="hardening.early_token")
async def early_token(payload: dict[str, Any], ctx: Context) -> Any:
    executed(ctx)
    token = await wait.create_token(timeout="1h")
    # completed while the run still executes: no waiting run to wake yet
    await ctx.step("complete", complete_from_sql, str(token.id), '"approved"')
    await wait.for_(seconds=payload["seconds"])  # suspends: the token is not what it waits on
    return await wait.for_token(token)


async def test_a_token_completed_early_does_not_wake_a_run_waiting_on_something_else(
    client: Client, database: str, db: asyncpg.Connection, start_daemon
) -> None:
    DSN["dsn"] = database
    async with start_daemon([early_token], wait_threshold=THRESHOLD):
        run_id = await client.trigger(early_token, {"seconds": 2.5})
        done = await wait_for_run(client, run_id, timeout=20)
    assert done.status is RunStatus.COMPLETED and done.output == "approved"
    # once before the timer, once after it (the token's data read at once): not one execution
    # per 250 ms wake tick while the timer runs
    assert EXECS[str(run_id)] <= 3, EXECS[str(run_id)]
    assert [s.name for s in done.steps] == ["token:1", "complete", "wait:1"]
    assert (await token_row(db, done.steps[0].result["id"]))["unseen"] is False


@task(id="hardening.await_early_token")
async def await_early_token(payload: dict[str, Any], ctx: Context) -> Any:
    executed(ctx)
    token = await wait.create_token(timeout="1h")
    TOKENS[str(ctx.run_id)] = str(token.id)
    gate = GATES.get(str(payload.get("gate")))
    if gate is not None:
        await gate.wait()
    return await wait.for_token(token)


async def test_a_token_completed_as_its_run_suspends_on_it_wakes_the_run(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    # The wake loop's own case: the completion lands between the run reading the token
    # (pending) and its suspension being written. Stand-in: complete it while the run
    # executes, then mark it unseen as if it had been completed before the run waited.
    async with start_daemon([await_early_token], wait_threshold=THRESHOLD):
        run_id = await client.trigger(await_early_token, {})
        await wait_for(lambda: status_is(client, run_id, RunStatus.WAITING))
        token = uuid.UUID(TOKENS[str(run_id)])
        # as taskd.complete_token leaves a token whose run was still executing
        await db.execute(
            "UPDATE taskd.wait_tokens SET status = 'completed', data = '7', unseen = true,"
            " completed_at = now() WHERE id = $1",
            token,
        )
        done = await wait_for_run(client, run_id, timeout=10)
    assert done.status is RunStatus.COMPLETED and done.output == 7
    assert (await token_row(db, token))["unseen"] is False


async def status_is(client: Client, run_id: uuid.UUID, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


async def test_a_token_being_completed_in_an_open_transaction_does_not_hold_the_run(
    client: Client, database: str, start_daemon
) -> None:
    # An application completes the token inside its own transaction, still open when the run
    # reaches for_token: the run must not wait on the token's row lock (holding its slot).
    GATES["held"] = anyio.Event()
    async with start_daemon([await_early_token], wait_threshold=THRESHOLD):
        run_id = await client.trigger(await_early_token, {"gate": "held"})
        token = uuid.UUID(await wait_for(lambda: token_of(run_id)))
        app = await asyncpg.connect(database)
        try:
            transaction = app.transaction()
            await transaction.start()
            await app.execute("SELECT taskd.complete_token($1, '\"late commit\"')", token)
            GATES["held"].set()
            await wait_for(lambda: status_is(client, run_id, RunStatus.WAITING))
            await transaction.commit()
        finally:
            await app.close()
        done = await wait_for_run(client, run_id, timeout=10)
    assert done.status is RunStatus.COMPLETED and done.output == "late commit"


async def token_of(run_id: uuid.UUID) -> str | None:
    return TOKENS.get(str(run_id))


# L5: a token past its timeout is refused, even before its run replays ----------------------


async def seed_waiting_token(db: asyncpg.Connection, expires_in: float) -> tuple[uuid.UUID, Any]:
    """A run suspended on a token, as the daemon leaves it (no daemon here: time is ours)."""
    run_id = await db.fetchval("SELECT taskd.trigger('hardening.nobody', '{}')")
    token_id = uuid.uuid4()
    await db.execute(
        "UPDATE taskd.runs SET status = 'waiting', started_at = now(), run_at = now() + $2"
        " WHERE id = $1",
        run_id,
        timedelta(seconds=max(expires_in, 0)),
    )
    await db.execute(
        "INSERT INTO taskd.wait_tokens (id, run_id, expires_at, awaited)"
        " VALUES ($1, $2, now() + $3, true)",
        token_id,
        run_id,
        timedelta(seconds=expires_in),
    )
    return token_id, run_id


async def test_a_token_completed_after_its_timeout_is_refused(
    client: Client, db: asyncpg.Connection
) -> None:
    token_id, run_id = await seed_waiting_token(db, expires_in=-1)  # timed out, not replayed
    with pytest.raises(TokenFinished, match="timed_out"):
        await client.complete_token(token_id, "late")
    with pytest.raises(asyncpg.PostgresError, match="timed_out") as refused:
        await db.execute("SELECT taskd.complete_token($1, '\"late\"')", token_id)
    assert refused.value.sqlstate == "TD409"
    # the run was not woken with the data: it wakes at its timeout and sees WaitTimeout
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id) == "waiting"
    assert (await token_row(db, token_id))["data"] is None

    # within its timeout, the same completion is taken and wakes the run
    token_id, run_id = await seed_waiting_token(db, expires_in=3600)
    await client.complete_token(token_id, "in time")
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id) == "queued"


# L13: token data has a size cap, from SQL as from Python ------------------------------------


async def test_token_data_over_the_payload_limit_is_refused(
    client: Client, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE taskd.settings SET value = '1000' WHERE key = 'max_payload_bytes'")
    token_id, run_id = await seed_waiting_token(db, expires_in=3600)
    big = '"' + "x" * 2000 + '"'
    with pytest.raises(asyncpg.PostgresError, match="token data is 2002 bytes, over the limit"):
        await db.execute("SELECT taskd.complete_token($1, $2::jsonb)", token_id, big)
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        await client.complete_token(token_id, "x" * 2000)  # the client reads the same setting
    # refused: nothing stored, the run still waits, and a small completion still works
    assert (await token_row(db, token_id))["status"] == "pending"
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id) == "waiting"
    assert await db.fetchval("SELECT taskd.complete_token($1, '1')", token_id) == "completed"


# L4: tokens go with their runs; unseen never stays on a finished run's token --------------


@task(id="hardening.unused_token")
async def unused_token(payload: Any, ctx: Context) -> str:
    token = await wait.create_token(timeout="1h")
    TOKENS[str(ctx.run_id)] = str(token.id)
    await ctx.step("complete", complete_from_sql, str(token.id), '"never read"')
    return "done without reading it"


async def test_a_finished_runs_tokens_are_not_left_unseen(
    client: Client, database: str, db: asyncpg.Connection, start_daemon
) -> None:
    DSN["dsn"] = database
    async with start_daemon([unused_token], wait_threshold=THRESHOLD):
        run_id = await client.trigger(unused_token)
        done = await wait_for_run(client, run_id)
        assert done.status is RunStatus.COMPLETED
        token = TOKENS[str(run_id)]

        async def seen() -> bool:
            return (await token_row(db, token))["unseen"] is False

        await wait_for(seen, timeout=5)
    # completed after its run finished: nothing will ever read it, nothing to wake
    later = await seed_finished_run_token(db)
    assert await db.fetchval("SELECT taskd.complete_token($1, '1')", later) == "completed"
    assert (await token_row(db, later))["unseen"] is False


async def seed_finished_run_token(db: asyncpg.Connection) -> uuid.UUID:
    run_id = await db.fetchval("SELECT taskd.trigger('hardening.nobody', '{}')")
    await db.execute(
        "UPDATE taskd.runs SET status = 'completed', finished_at = now() WHERE id = $1", run_id
    )
    token_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO taskd.wait_tokens (id, run_id, expires_at) VALUES ($1, $2, now() + '1h')",
        token_id,
        run_id,
    )
    return token_id


async def test_tokens_are_pruned_with_their_runs(database: str, db: asyncpg.Connection) -> None:
    old = await seed_run(db, "completed", LONG_AGO, LONG_AGO)
    kept = await seed_run(db, "waiting", LONG_AGO, None)
    for run_id in (old, old, kept):
        await db.execute(
            "INSERT INTO taskd.wait_tokens (id, run_id, expires_at, status, unseen)"
            " VALUES ($1, $2, now(), 'completed', $3)",
            uuid.uuid4(),
            run_id,
            run_id == old,
        )
    pool = await create_pool(database)
    try:
        deleted = await pruner(Store(pool)).run_once(now=NOW)
    finally:
        await pool.close()
    assert deleted["runs"] == 1
    assert await db.fetchval("SELECT array_agg(DISTINCT run_id) FROM taskd.wait_tokens") == [kept]


# L9: a daemon clock ahead of the database's -------------------------------------------------

SKEW = timedelta(seconds=10)
"""How far the daemon's clock is ahead of the database's (a stand-in for a skewed host)."""


@task(id="hardening.skewed_token")
async def skewed_token(payload: Any, ctx: Context) -> str:
    executed(ctx)
    token = await wait.create_token(timeout="1s")  # expired at once by the daemon's clock
    try:
        return await wait.for_token(token)
    except WaitTimeout:
        return "timed out"


async def test_a_daemon_clock_ahead_of_the_databases_suspends_until_the_timeout(
    client: Client, db: asyncpg.Connection, start_daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    real_wait_for_token = ContextClass.wait_for_token

    async def counted(self: ContextClass, token_id: uuid.UUID) -> Any:
        nonlocal reads
        reads += 1
        return await real_wait_for_token(self, token_id)

    monkeypatch.setattr(ContextClass, "wait_for_token", counted)
    # the daemon's clock (taskd.clock, where the context and the executor read it for waits)
    monkeypatch.setattr(clock, "_offset", SKEW)
    async with start_daemon([skewed_token], wait_threshold=THRESHOLD):
        run_id = await client.trigger(skewed_token)
        done = await wait_for_run(client, run_id, timeout=20)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == "timed out" and done.attempt == 1
    # one read per execution (suspended until the timeout by the database's clock, then
    # timed out), not a recursion of reads until the database's clock catches up
    assert reads <= 3 and EXECS[str(run_id)] <= 3, (reads, EXECS[str(run_id)])
    token = await db.fetchrow("SELECT status, expires_at, completed_at FROM taskd.wait_tokens")
    assert token["status"] == "timed_out" and token["completed_at"] >= token["expires_at"]


# M4: a drained run keeps its start --------------------------------------------------------


@task(id="hardening.ttl_drained")
async def ttl_drained(payload: Any, ctx: Context) -> str:
    await ctx.step("side", lambda: 1)
    if executed(ctx) == 1:
        GATES["ttl_started"].set()
        await anyio.sleep(60)  # drained here
    return "finished after the restart"


async def test_a_drained_run_with_a_ttl_finishes_after_the_restart(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    GATES["ttl_started"] = anyio.Event()
    async with start_daemon([ttl_drained], shutdown_grace=0.1) as daemon:
        run_id = await client.trigger(ttl_drained, ttl="1h")
        await GATES["ttl_started"].wait()
        started_at = (await client.get_run(run_id)).started_at
        await daemon.stop()
    drained = await client.get_run(run_id)
    assert drained.status is RunStatus.QUEUED and drained.attempt == 0
    assert drained.started_at == started_at  # it started: its ttl is over
    # the ttl passes while no daemon runs (time skipped, not waited for)
    await db.execute(
        "UPDATE taskd.runs SET expires_at = now() - interval '1 second' WHERE id = $1", run_id
    )
    async with start_daemon([ttl_drained]):
        done = await wait_for_run(
            client, run_id, (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.EXPIRED)
        )
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == "finished after the restart" and done.attempt == 1
    assert done.started_at == started_at


# L6: the per-run log cap holds over resumes ------------------------------------------------

CAP = 5


@task(id="hardening.chatty_waiter")
async def chatty_waiter(payload: Any, ctx: Context) -> int:
    n = executed(ctx)
    for i in range(3):
        ctx.log.info("line", execution=n, i=i)
    for _ in range(3):
        await wait.for_(seconds=THRESHOLD * 2)
    return n


async def test_the_log_cap_holds_over_resumes(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    def capped(settings: Settings) -> None:
        settings.log.run_lines = CAP

    async with start_daemon([chatty_waiter], capped, wait_threshold=THRESHOLD):
        run_id = await client.trigger(chatty_waiter)
        done = await wait_for_run(client, run_id, timeout=20)
        lines = await client.list_logs(run=run_id)
    assert done.status is RunStatus.COMPLETED and done.attempt == 1
    assert done.output == 4  # the three waits each suspended it: four executions
    messages = [line.message for line in lines]
    assert messages.count("line") == CAP, messages
    assert len(messages) == CAP + 1 and messages[-1].startswith("log cap reached"), messages

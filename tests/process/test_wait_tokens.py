"""Wait tokens: a run waits for data from outside (client, SQL, CLI), or times out."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import (
    Client,
    Context,
    RunStatus,
    TokenFinished,
    TokenNotFound,
    WaitTimeout,
    task,
    wait,
)
from tests.support.cli import taskd
from tests.support.waiting import wait_for, wait_for_run

TOKENS: dict[str, str] = {}  # run id -> token id, as the task published it
GATES: dict[str, anyio.Event] = {}
CREATED: dict[str, int] = {}


@task(id="tokens.approval")
async def approval(payload: dict[str, Any], ctx: Context) -> Any:
    token = await wait.create_token(timeout=payload.get("timeout", "1h"))
    CREATED[str(ctx.run_id)] = CREATED.get(str(ctx.run_id), 0) + 1
    TOKENS[str(ctx.run_id)] = str(token.id)  # e.g. emailed to an approver
    gate = GATES.get(payload.get("gate", ""))
    if gate is not None:
        await gate.wait()
    try:
        decision = await wait.for_token(token)
    except WaitTimeout:
        return {"decision": "timed out"}
    return {"decision": decision}


async def token_of(run_id: uuid.UUID) -> str | None:
    return TOKENS.get(str(run_id))


async def waiting(client: Client, run_id: uuid.UUID) -> bool:
    return (await client.get_run(run_id)).status is RunStatus.WAITING


async def test_a_token_completed_after_the_wait_began(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([approval], concurrency=1):
        run_id = await client.trigger("tokens.approval", {})
        token = await wait_for(lambda: token_of(run_id))
        await wait_for(lambda: waiting(client, run_id))  # suspended: the slot is free
        await client.complete_token(token, {"approved": True, "by": "ana"})
        done = await wait_for_run(client, run_id)
        with pytest.raises(TokenFinished, match="already completed"):
            await client.complete_token(token, {"approved": False})
    assert done.status is RunStatus.COMPLETED
    assert done.output == {"decision": {"approved": True, "by": "ana"}}
    assert CREATED[str(run_id)] == 2  # executed twice (before and after), one token created
    assert await db.fetchval("SELECT count(*) FROM taskd.wait_tokens") == 1


async def test_a_token_completed_before_the_wait_began(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    GATES["early"] = gate = anyio.Event()
    async with start_daemon([approval]):
        run_id = await client.trigger("tokens.approval", {"gate": "early"})
        token = await wait_for(lambda: token_of(run_id))
        # completed from SQL while the run still executes: no waiting run to wake yet
        await db.execute("SELECT taskd.complete_token($1, '\"yes\"')", uuid.UUID(token))
        gate.set()
        done = await wait_for_run(client, run_id)
    assert done.output == {"decision": "yes"}
    assert await db.fetchval("SELECT unseen FROM taskd.wait_tokens") is False


async def test_a_token_completed_by_the_cli_while_its_run_waits(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([approval]):
        run_id = await client.trigger("tokens.approval", {})
        token = await wait_for(lambda: token_of(run_id))
        await wait_for(lambda: waiting(client, run_id))
        result = await taskd(database, "tokens", "complete", token, "--data", '{"ok": 1}')
        assert result.code == 0 and result.out.strip() == "completed", str(result)
        done = await wait_for_run(client, run_id)
        again = await taskd(database, "tokens", "complete", token)
    assert done.output == {"decision": {"ok": 1}}
    assert again.code == 1 and "already completed" in again.err


async def test_a_token_times_out(client: Client, start_daemon) -> None:
    async with start_daemon([approval], wait_threshold=0.1):
        run_id = await client.trigger("tokens.approval", {"timeout": "1s"})
        token = await wait_for(lambda: token_of(run_id))
        await wait_for(lambda: waiting(client, run_id))
        done = await wait_for_run(client, run_id, timeout=10)
        with pytest.raises(TokenFinished, match="timed_out"):
            await client.complete_token(token, "late")
    assert done.output == {"decision": "timed out"}


async def test_unknown_tokens(client: Client) -> None:
    with pytest.raises(TokenNotFound):
        await client.complete_token(uuid.uuid4(), 1)
    with pytest.raises(TokenNotFound):
        await client.complete_token("not-a-uuid", 1)

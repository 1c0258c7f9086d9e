"""Only the database decides a cancel (review M2).

PostgreSQL checks no privilege for NOTIFY: any role that can connect can send
``NOTIFY taskd_cancel, '<run id>'``. The daemon takes it as a hint and cancels the run only
when the run's ``cancel_requested_at`` is set in the database; a real cancel request (which
sets it, then notifies) still reaches the run at once, through the same hint.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from taskd import Client, Context, RunStatus, task
from tests.support.waiting import wait_for_run

STARTED: dict[str, anyio.Event] = {}
GO: dict[str, anyio.Event] = {}


@task(id="hint.hold")
async def hold(payload: str, ctx: Context) -> str:
    STARTED[payload].set()
    await GO[payload].wait()
    return payload


@pytest.fixture
async def nobody(server_dsn: str, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of a role with no rights at all: LOGIN (and the CONNECT every role has)."""
    role = f"nobody_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    parts = urlsplit(database)
    host = parts.netloc.rpartition("@")[2]
    connection = await asyncpg.connect(urlunsplit(parts._replace(netloc=f"{role}@{host}")))
    try:
        yield connection
    finally:
        await connection.close()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_bare_notify_cannot_cancel_a_run(
    client: Client, db: asyncpg.Connection, nobody: asyncpg.Connection, start_daemon, monkeypatch
) -> None:
    # No cancel poll during the test: a run canceled below was canceled by its NOTIFY.
    monkeypatch.setattr("taskd.worker.in_flight.CANCEL_POLL_INTERVAL", 3600.0)
    for name in ("victim", "real"):
        STARTED[name], GO[name] = anyio.Event(), anyio.Event()
    async with start_daemon([hold]):
        victim = await client.trigger(hold, "victim")
        real = await client.trigger(hold, "real")
        await STARTED["victim"].wait()
        await STARTED["real"].wait()

        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await nobody.fetchval("SELECT taskd.cancel($1)", victim)
        await nobody.execute(f"NOTIFY taskd_cancel, '{victim}'")
        # A real request, notified after the forged one: when it has reached its run, the
        # forged hint (delivered first, on the same LISTEN connection) has been checked too.
        assert await client.cancel(real) is RunStatus.EXECUTING
        canceled = await wait_for_run(client, real, [RunStatus.CANCELED])

        still = await client.get_run(victim)
        assert (still.status, still.cancel_requested_at) == (RunStatus.EXECUTING, None)
        GO["victim"].set()
        done = await wait_for_run(client, victim, [RunStatus.COMPLETED, RunStatus.CANCELED])
    assert [a.outcome for a in canceled.attempts] == ["canceled"]
    assert done.status is RunStatus.COMPLETED and done.output == "victim"
    assert [a.outcome for a in done.attempts] == ["completed"]

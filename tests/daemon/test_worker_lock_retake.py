"""Retaking the worker lock never blocks the daemon (H3).

After a network partition the server may keep the daemon's old lock session (and its lock)
alive for hours. The review's stand-in: another session, in ONE statement, terminates the
daemon's lock session and takes its key. The daemon must say it is not ready while the key is
held elsewhere, take its own orphan's key back at once, and claim again as soon as it holds it.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from taskd import Client, Context, RunStatus, task
from taskd.app import Daemon
from tests.support.in_process import admin_url
from tests.support.waiting import wait_for, wait_for_run

LOCK_HOLDER = """
SELECT l.pid FROM pg_locks l
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.classid::bigint = (($1::bigint >> 32) & 4294967295)
   AND l.objid::bigint = ($1::bigint & 4294967295)
"""
STAND_IN = "SELECT pg_terminate_backend($1), pg_advisory_lock($2)"


@task(id="lock.echo")
async def echo(payload: object, ctx: Context) -> object:
    return payload


async def _readyz(daemon: Daemon) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(admin_url(daemon) + "/readyz") as response,
    ):
        return response.status, await response.json()


async def _take_the_key(daemon: Daemon, db: asyncpg.Connection, probe: asyncpg.Connection) -> int:
    assert daemon.lock is not None
    key = daemon.lock.key
    holder = await db.fetchval(LOCK_HOLDER, key)
    assert holder is not None
    await probe.fetch(STAND_IN, holder, key)
    assert await db.fetchval(LOCK_HOLDER, key) == probe.get_server_pid()
    return key


async def test_a_foreign_holder_of_the_key_makes_the_daemon_unready_until_it_lets_go(
    client: Client, db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    async with start_daemon([echo], poll_interval=0.05) as daemon:
        assert (await _readyz(daemon))[0] == 200
        probe = await asyncpg.connect(database)  # not taskd's: the daemon leaves it alone
        try:
            await _take_the_key(daemon, db, probe)

            async def unready() -> Any:
                status, body = await _readyz(daemon)
                return status == 503 and body

            body = await wait_for(unready)
            assert "worker_lock" in body["error"]
            assert body["detail"]["worker_lock"] is False
            run_id = await client.trigger(echo, "while-held")
            await wait_for(unready)  # a round trip later: still not claimed
            assert (await client.get_run(run_id)).status is RunStatus.QUEUED
            assert probe.get_server_pid() == await db.fetchval(LOCK_HOLDER, daemon.lock.key)
        finally:
            await probe.close()
        # the holder went away: the lock is taken again, the daemon is ready and claims
        assert (await wait_for_run(client, run_id)).status is RunStatus.COMPLETED

        async def ready() -> bool:
            return (await _readyz(daemon))[0] == 200

        await wait_for(ready)


async def test_the_daemons_own_orphaned_session_is_terminated_and_the_lock_retaken(
    client: Client, db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    async with start_daemon([echo], poll_interval=0.05) as daemon:
        # a taskd session of the same role holding the key: what the daemon's own lock session
        # looks like when the server still keeps it after a partition
        orphan = await asyncpg.connect(database, server_settings={"application_name": "taskd"})
        try:
            key = await _take_the_key(daemon, db, orphan)
            run_id = await client.trigger(echo, "after-orphan")
            assert (await wait_for_run(client, run_id)).status is RunStatus.COMPLETED

            async def orphan_gone() -> bool:
                holder = await db.fetchval(LOCK_HOLDER, key)
                return holder is not None and holder != orphan.get_server_pid()

            await wait_for(orphan_gone)
            assert await db.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1",
                orphan.get_server_pid(),
            )
        finally:
            orphan.terminate()
        assert await _readyz(daemon) == (200, _ready_body(True))


def _ready_body(lock: bool) -> dict[str, Any]:
    return {
        "ready": lock,
        "database": True,
        "listener": True,
        "worker_lock": lock,
        "reconciled": True,
        "draining": False,
    }

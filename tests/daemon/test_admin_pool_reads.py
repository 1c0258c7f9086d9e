"""/metrics and /readyz read the database through the admin pool, never the worker's (M6).

The admin pool has 3 connections of its own, each statement capped at 10 s, and shows in
pg_stat_activity as ``taskd-admin``: however slow or many the scrapes, the worker's pool keeps
its connections for claims, outcomes and heartbeats.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import asyncpg

from taskd import Context, task
from taskd.store.queues import SQL as QUEUE_SQL
from tests.support.in_process import admin_url
from tests.support.waiting import wait_for


@task(id="metrics.noop")
async def noop(payload: object, ctx: Context) -> None:
    return None


async def test_metrics_read_the_database_on_the_admin_pool(
    db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    async with start_daemon([noop]) as daemon:
        url = admin_url(daemon)
        locker = await asyncpg.connect(database)
        replies: list[int] = []
        try:
            # an operator's open transaction makes the scrape's read of the queues wait: the
            # waiting statement shows who runs it
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE taskd.queues IN ACCESS EXCLUSIVE MODE")

            async def scrape() -> None:
                async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as reply:
                    await reply.read()
                    replies.append(reply.status)

            async with anyio.create_task_group() as group:
                group.start_soon(scrape)
                waiting = await wait_for(
                    lambda: db.fetch(
                        "SELECT application_name FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query = $1",
                        QUEUE_SQL["settings"],
                    )
                )
                assert [row["application_name"] for row in waiting] == ["taskd-admin"]
                await tx.rollback()
        finally:
            await locker.close()
        assert replies == [200]

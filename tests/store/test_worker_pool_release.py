"""The worker's pool (outcome batches, heartbeats, chores) returns a connection to the pool
without asyncpg's reset query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
ALL``): a round trip and four commands on every release, for a pool whose connections run only
taskd's own statements and keep no session state (issue 18, the drain's cost per run). What
the connection keeps is what it was opened with: the bounds sent at startup stay."""

from __future__ import annotations

import asyncpg

from taskd.config import DatabaseSettings
from taskd.store.database import create_worker_pool


async def test_a_released_worker_connection_ran_no_reset_and_keeps_its_bounds(
    database: str, db: asyncpg.Connection
) -> None:
    settings = DatabaseSettings(pool_min_size=1, pool_max_size=2)
    pool = await create_worker_pool(database, settings)
    try:
        async with pool.acquire() as connection:
            pid = await connection.fetchval("SELECT pg_backend_pid() /* the last statement */")
        # pg_stat_activity shows a backend's last statement once it is idle: the release's
        # reset query would be there instead (it is sent before the connection goes back)
        last = await db.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'idle'", pid
        )
        assert last is not None and "the last statement" in last, last
        async with pool.acquire() as connection:
            bounds = await connection.fetchval(
                "SELECT setting || ' ' || current_setting('plan_cache_mode') FROM pg_settings"
                " WHERE name = 'lock_timeout'"
            )
        assert bounds == f"{int(settings.lock_timeout * 1000)} force_custom_plan"
    finally:
        await pool.close()

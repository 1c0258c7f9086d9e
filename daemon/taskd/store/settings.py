"""Settings: cluster-wide values a daemon records for the clients (``taskd.settings``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("settings")


class SettingStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, key: str) -> Any:
        return await self.pool.fetchval(SQL["get"], key)

    async def put(self, key: str, value: Any) -> None:
        await self.pool.execute(SQL["put"], key, value)

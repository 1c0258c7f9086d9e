"""Queues: their depths, the limits the code declares and an operator sets, pause."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from taskd.models import QueueSettings
from taskd.store.queries import load

SQL = load("queues")


def _limits(stored: Any) -> dict[str, Any]:
    if stored is None:
        return {}
    limits: dict[str, Any] = orjson.loads(stored) if isinstance(stored, str | bytes) else stored
    return limits


def llm_rate_text(stored: Any) -> str | None:
    """A queue's LLM call limits as ``taskd queues list`` shows them: ``tokens=400000/60s``."""
    calls = _limits(stored).get("calls")
    if not calls:
        return None
    parts = [f"{name}={value}" for name, value in calls.items() if name != "period"]
    return f"{','.join(parts)}/{calls['period']:g}s"


def llm_budget_text(stored: Any) -> str | None:
    """A queue's LLM budget as ``taskd queues list`` shows it: ``$5/86400s per key``."""
    budget = _limits(stored).get("budget")
    if not budget:
        return None
    wait = " (wait)" if budget.get("on_exceed") == "wait" else ""
    return f"${budget['usd']:g}/{budget['period']:g}s per key{wait}"


def _settings_fields(row: Any) -> dict[str, Any]:
    return {
        "paused": row["paused"],
        "concurrency": row["concurrency"],
        "concurrency_limit_per_key": row["concurrency_per_key"],
        "rate_limit": row["rate_limit"],
        "rate_period": row["rate_period"],
        "overridden": row["overridden"],
        "llm_rate": llm_rate_text(row["llm_limits"]),
        "llm_budget": llm_budget_text(row["llm_limits"]),
    }


class QueueStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def depths(self) -> list[dict[str, Any]]:
        """Per queue (with runs, or with settings): due and delayed queued runs, the oldest
        due, runs executing, and its limits and pause."""
        async with self.pool.acquire() as connection:
            queued = await connection.fetch(SQL["depths"])
            executing = dict(await connection.fetch(SQL["executing"]))
            settings = await connection.fetch(SQL["settings"])
        depths: dict[str, dict[str, Any]] = {}

        def entry(queue: str) -> dict[str, Any]:
            return depths.setdefault(
                queue,
                {"queue": queue, "due": 0, "delayed": 0, "oldest_due": None, "executing": 0},
            )

        for row in queued:
            entry(row["queue"]).update(row)
        for queue, count in executing.items():
            entry(queue)["executing"] = count
        for row in settings:
            entry(row["name"]).update(_settings_fields(row))
        return [depths[queue] for queue in sorted(depths)]

    async def depth(self, name: str) -> dict[str, Any] | None:
        """One queue's entry of ``depths`` (along the queue's indexes: runs_claim_idx,
        runs_lease_idx), or None for a queue with neither runs nor settings."""
        async with self.pool.acquire() as connection:
            queued = await connection.fetchrow(SQL["depth_one"], name)
            executing = await connection.fetchval(SQL["executing_one"], name)
            settings = await connection.fetchrow(SQL["settings_one"], name)
        assert queued is not None
        if settings is None and queued["due"] + queued["delayed"] == 0 and not executing:
            return None
        found: dict[str, Any] = {"queue": name, **dict(queued), "executing": executing}
        if settings is not None:
            found.update(_settings_fields(settings))
        return found

    async def sync(self, queues: Sequence[QueueSettings]) -> None:
        """Record the queues this daemon's tasks declare, with their limits."""
        if not queues:
            return
        await self.pool.execute(
            SQL["sync"],
            [q.name for q in queues],
            [q.concurrency for q in queues],
            [q.concurrency_per_key for q in queues],
            [q.rate_limit for q in queues],
            [q.rate_period for q in queues],
            [q.declared() for q in queues],
            [q.llm_limits for q in queues],
        )

    async def pause(self, name: str, paused: bool) -> None:
        await self.pool.execute(SQL["pause"], name, paused)

    async def set_limits(self, name: str, changes: dict[str, Any]) -> None:
        """Set some of concurrency, concurrency_per_key, rate (a (limit, period) or None)."""
        rate = changes.get("rate")
        await self.pool.execute(
            SQL["set_limits"],
            name,
            changes.get("concurrency"),
            "concurrency" in changes,
            changes.get("concurrency_per_key"),
            "concurrency_per_key" in changes,
            rate[0] if rate is not None else None,
            rate[1] if rate is not None else None,
            "rate" in changes,
        )

    async def reset(self, name: str) -> bool:
        return await self.pool.fetchval(SQL["reset"], name) is not None

"""Schedules: cron schedules declared in code or created by clients, and their firing (one
run per schedule and fire time). Every change tells the daemons' schedulers (NOTIFY)."""

from __future__ import annotations

import builtins
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("schedules")


class Keep(enum.Enum):
    """A field of ScheduleChanges left as it is (None is a value: it clears the field)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A schedule a client creates; ``payload`` as JSON text. With a ``dedup_key`` an
    existing schedule of that key is updated instead."""

    schedule_id: str
    task_id: str
    cron: str
    timezone: str
    payload: str | None
    external_id: str | None
    dedup_key: str | None
    catch_up: str


@dataclass(frozen=True, slots=True)
class DeclaredSchedule:
    """A schedule declared in code (its id is the task's)."""

    task_id: str
    cron: str
    timezone: str
    catch_up: str


@dataclass(frozen=True, slots=True)
class ScheduleChanges:
    """What an update changes: None keeps cron, timezone and catch_up; KEEP keeps payload
    (JSON text) and external_id, which None clears."""

    cron: str | None = None
    timezone: str | None = None
    catch_up: str | None = None
    payload: str | Keep | None = KEEP
    external_id: str | Keep | None = KEEP


class ScheduleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list(
        self, task_id: str | None = None, active: bool | None = None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(SQL["list"], task_id, active)
        return [dict(row) for row in rows]

    async def active(self) -> builtins.list[asyncpg.Record]:
        """Active schedules, as records: a tick over many schedules builds no dicts."""
        rows: list[asyncpg.Record] = await self.pool.fetch(SQL["active"])
        return rows

    async def get(self, schedule_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(SQL["get"], schedule_id)
        return dict(row) if row is not None else None

    async def upsert(self, schedule: NewSchedule) -> str:
        """Create (or, same dedup_key, update) a schedule and tell every daemon; its id."""
        async with self.pool.acquire() as connection, connection.transaction():
            created: str = await connection.fetchval(
                SQL["upsert"],
                schedule.schedule_id,
                schedule.task_id,
                schedule.cron,
                schedule.timezone,
                schedule.payload,
                schedule.external_id,
                schedule.dedup_key,
                schedule.catch_up,
                False,
            )
            await connection.execute(SQL["notify"], created)
        return created

    async def declare(self, schedules: Sequence[DeclaredSchedule]) -> None:
        """Upsert the schedules declared in code."""
        async with self.pool.acquire() as connection, connection.transaction():
            for s in schedules:
                await connection.execute(SQL["declare"], s.task_id, s.cron, s.timezone, s.catch_up)
            await connection.execute(SQL["notify"], "*")

    async def retire_declared(
        self, undeclared: Sequence[str], served: Sequence[str]
    ) -> builtins.list[str]:
        rows = await self.pool.fetch(SQL["retire_declared"], list(undeclared), list(served))
        return [row[0] for row in rows]

    async def update(self, schedule_id: str, changes: ScheduleChanges) -> bool:
        payload, external_id = changes.payload, changes.external_id
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(
                SQL["update"],
                schedule_id,
                changes.cron,
                changes.timezone,
                not isinstance(payload, Keep),
                None if isinstance(payload, Keep) else payload,
                not isinstance(external_id, Keep),
                None if isinstance(external_id, Keep) else external_id,
                changes.catch_up,
            )
            await connection.execute(SQL["notify"], schedule_id)
        return found is not None

    async def set_active(self, schedule_id: str, active: bool) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(SQL["set_active"], schedule_id, active)
            await connection.execute(SQL["notify"], schedule_id)
        return found is not None

    async def delete(self, schedule_id: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(SQL["delete"], schedule_id)
            await connection.execute(SQL["notify"], schedule_id)
        return found is not None

    async def trigger(self, schedule_id: str) -> tuple[uuid.UUID, str] | None:
        """Fire a schedule now (taskd.trigger_schedule): the new run's id and task, None when
        there is no such schedule. Its next scheduled fire is not touched."""
        try:
            row = await self.pool.fetchrow(SQL["trigger"], schedule_id)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == "TD404":
                return None
            raise
        return (row["id"], row["task_id"]) if row is not None else None

    async def fire(
        self, schedule_id: str, fire_time: datetime, run_id: uuid.UUID, payload: str
    ) -> bool:
        """One run for (schedule, fire time); False when another daemon fired it first."""
        fired = await self.pool.fetchval(SQL["fire"], run_id, fire_time, payload, schedule_id)
        return fired is not None

    async def skip_to(self, schedule_id: str, fire_time: datetime) -> None:
        await self.pool.execute(SQL["skip_to"], schedule_id, fire_time)

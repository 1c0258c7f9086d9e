"""The store: every read and write taskd makes, as verbs named noun-first.

The worker, the client and the CLI call these; none of them holds SQL. Each verb takes an
optional ``connection`` so a producer can enqueue inside its own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from daemon.models import Attempt, ClaimedRun, Event, Outcome, Run, RunStatus
from daemon.store.queries import QUERIES


class Store:
    def __init__(self, pool: asyncpg.Pool, *, claim_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        # Claims may go through a pool of their own (asynchronous commit; see create_pool).
        self.claim_pool = claim_pool or pool

    def _on(self, connection: asyncpg.Connection | None) -> asyncpg.Pool | asyncpg.Connection:
        return connection if connection is not None else self.pool

    # settings -----------------------------------------------------------------------------

    async def setting_get(self, key: str) -> Any:
        return await self.pool.fetchval(QUERIES["setting_get"], key)

    async def setting_put(self, key: str, value: Any) -> None:
        await self.pool.execute(QUERIES["setting_put"], key, value)

    # tasks and workers --------------------------------------------------------------------

    async def task_sync(self, tasks: Sequence[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Upsert (id, queue, max_attempts, settings) for the tasks this daemon registers."""
        if not tasks:
            return
        ids, queues, max_attempts, settings = zip(*tasks, strict=True)
        await self.pool.execute(
            QUERIES["task_sync"], list(ids), list(queues), list(max_attempts), list(settings)
        )

    async def task_list(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(QUERIES["task_list"])]

    async def worker_register(
        self,
        worker_id: uuid.UUID,
        *,
        host: str,
        pid: int,
        version: str,
        concurrency: int,
        queues: Sequence[str],
        tasks: Sequence[str],
        lock_key: int,
    ) -> None:
        await self.pool.execute(
            QUERIES["worker_register"],
            worker_id,
            host,
            pid,
            version,
            concurrency,
            list(queues),
            list(tasks),
            lock_key,
        )

    async def worker_lock(self, connection: asyncpg.Connection, lock_key: int) -> None:
        """Take the worker's session lock on ``connection`` (a dedicated one, never pooled)."""
        await connection.execute(QUERIES["worker_lock"], lock_key)

    async def worker_list_unlocked(self, worker_id: uuid.UUID) -> list[dict[str, Any]]:
        """Other workers, not known to be stopped, whose lock nobody holds."""
        return [
            dict(row) for row in await self.pool.fetch(QUERIES["worker_list_unlocked"], worker_id)
        ]

    async def worker_mark_gone(self, worker_ids: Sequence[uuid.UUID]) -> None:
        await self.pool.execute(QUERIES["worker_mark_gone"], list(worker_ids))

    async def worker_list(self) -> list[dict[str, Any]]:
        """Workers not known to be stopped, with how many runs each executes."""
        return [dict(row) for row in await self.pool.fetch(QUERIES["worker_list"])]

    async def worker_heartbeat(
        self, worker_id: uuid.UUID, lease_seconds: float, leases: Sequence[tuple[uuid.UUID, int]]
    ) -> bool:
        """Mark the worker alive and extend its leases ((run id, attempt) pairs).

        Returns False when the worker was declared gone by another daemon meanwhile.
        """
        ids = [run_id for run_id, _ in leases]
        attempts = [attempt for _, attempt in leases]
        gone = await self.pool.fetchval(
            QUERIES["worker_heartbeat"], worker_id, lease_seconds, ids, attempts
        )
        return not gone

    async def worker_stop(self, worker_id: uuid.UUID) -> None:
        await self.pool.execute(QUERIES["worker_stop"], worker_id)

    # runs ---------------------------------------------------------------------------------

    async def run_insert_many(
        self,
        task_id: str,
        ids: Sequence[uuid.UUID],
        payloads: Sequence[bytes],
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        tags: Sequence[str] = (),
        ttl: float | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> None:
        """Insert runs of one task; ``payloads`` are JSON already encoded (size-checked)."""
        await self._on(connection).execute(
            QUERIES["run_insert_many"],
            task_id,
            queue,
            priority,
            run_at,
            delay,
            max_attempts,
            list(tags),
            ids,
            [payload.decode() for payload in payloads],
            ttl,
        )

    async def run_claim(
        self,
        task_ids: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        worker_id: uuid.UUID,
        lease_seconds: float,
    ) -> list[ClaimedRun]:
        """Claim up to ``limit`` due runs of these tasks (in these queues; None: all)."""
        rows = await self.claim_pool.fetch(
            QUERIES["run_claim"], task_ids, queues, limit, worker_id, lease_seconds
        )
        return [ClaimedRun(*row) for row in rows]

    async def run_complete_many(
        self, worker_id: uuid.UUID, outcomes: Sequence[Outcome]
    ) -> set[uuid.UUID]:
        """Write outcomes; return the ids whose write won (the rest lost a race)."""
        rows = await self.pool.fetch(
            QUERIES["run_complete_many"],
            worker_id,
            [o.run_id for o in outcomes],
            [o.attempt for o in outcomes],
            [o.status.value for o in outcomes],
            [o.attempt_outcome.value for o in outcomes],
            [o.output.decode() if o.output is not None else None for o in outcomes],
            [o.error.decode() if o.error is not None else None for o in outcomes],
            [o.retry_delay for o in outcomes],
        )
        return {row[0] for row in rows}

    async def run_release_many(
        self, worker_id: uuid.UUID, runs: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]:
        """Hand (run id, attempt) back to the queue without spending the attempt."""
        if not runs:
            return set()
        ids, attempts = zip(*runs, strict=True)
        rows = await self.pool.fetch(QUERIES["run_release_many"], worker_id, ids, attempts)
        return {row[0] for row in rows}

    async def run_rescue(
        self, gone_workers: Sequence[uuid.UUID], limit: int = 1000
    ) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
        """Hand back runs with an expired lease or a gone worker: (run id, new status, worker)."""
        rows = await self.pool.fetch(QUERIES["run_rescue"], list(gone_workers), limit)
        return [(row[0], row[1], row[2]) for row in rows]

    async def run_expire(self, limit: int = 1000) -> list[uuid.UUID]:
        return [row[0] for row in await self.pool.fetch(QUERIES["run_expire"], limit)]

    async def run_fail_unknown(
        self, served: Sequence[str], waited_seconds: float, limit: int = 1000
    ) -> list[tuple[uuid.UUID, str]]:
        rows = await self.pool.fetch(
            QUERIES["run_fail_unknown"], list(served), waited_seconds, limit
        )
        return [(row[0], row[1]) for row in rows]

    async def task_list_served(self) -> list[str]:
        """Task ids that some live worker serves."""
        return [row[0] for row in await self.pool.fetch(QUERIES["task_list_served"])]

    async def run_cancel(self, run_id: uuid.UUID) -> str:
        """taskd.cancel: 'canceled', or 'executing' when its worker was asked to cancel it."""
        status: str = await self.pool.fetchval(QUERIES["run_cancel"], run_id)
        return status

    async def run_list_cancel_requested(self, run_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        rows = await self.pool.fetch(QUERIES["run_list_cancel_requested"], list(run_ids))
        return [row[0] for row in rows]

    async def run_replay(self, run_id: uuid.UUID, new_id: uuid.UUID) -> bool:
        """Create ``new_id`` as a copy of ``run_id``; False when ``run_id`` does not exist."""
        return await self.pool.fetchrow(QUERIES["run_replay"], run_id, new_id) is not None

    async def queue_depths(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(QUERIES["queue_depths"])]

    async def run_count_unserved(self, served: Sequence[str]) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["run_count_unserved"], list(served))
        return [dict(row) for row in rows]

    async def event_send(
        self, name: str, payload: str, *, connection: asyncpg.Connection | None = None
    ) -> uuid.UUID:
        """taskd.send_event: record the event, create its subscribers' runs; its id."""
        event_id: uuid.UUID = await self._on(connection).fetchval(
            QUERIES["event_send"], name, payload
        )
        return event_id

    async def event_list(self, name: str | None, limit: int) -> list[Event]:
        rows = await self.pool.fetch(QUERIES["event_list"], name, limit)
        return [Event(**dict(row)) for row in rows]

    async def subscription_sync(
        self, task_ids: Sequence[str], pairs: Sequence[tuple[str, str]]
    ) -> None:
        """These tasks' subscriptions become exactly ``pairs`` of (event name, task id)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(QUERIES["subscription_clear"], list(task_ids))
            await connection.execute(
                QUERIES["subscription_add"], [p[0] for p in pairs], [p[1] for p in pairs]
            )

    # schedules --------------------------------------------------------------------------

    async def schedule_list(
        self, task_id: str | None = None, active: bool | None = None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["schedule_list"], task_id, active)
        return [dict(row) for row in rows]

    async def schedule_get(self, schedule_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(QUERIES["schedule_get"], schedule_id)
        return dict(row) if row is not None else None

    async def schedule_upsert(
        self,
        schedule_id: str,
        *,
        task_id: str,
        cron: str,
        timezone: str,
        payload: str | None,
        external_id: str | None,
        dedup_key: str | None,
        catch_up: str,
    ) -> str:
        """Create (or, same dedup_key, update) a schedule and tell every daemon; its id."""
        async with self.pool.acquire() as connection, connection.transaction():
            created: str = await connection.fetchval(
                QUERIES["schedule_upsert"],
                schedule_id,
                task_id,
                cron,
                timezone,
                payload,
                external_id,
                dedup_key,
                catch_up,
                False,
            )
            await connection.execute(QUERIES["schedule_notify"], created)
        return created

    async def schedule_declare(self, specs: Sequence[tuple[str, str, str, str]]) -> None:
        """Upsert (task id, cron, timezone, catch_up) of schedules declared in code."""
        async with self.pool.acquire() as connection, connection.transaction():
            for task_id, cron, timezone, catch_up in specs:
                await connection.execute(
                    QUERIES["schedule_declare"], task_id, cron, timezone, catch_up
                )
            await connection.execute(QUERIES["schedule_notify"], "*")

    async def schedule_retire_declared(
        self, undeclared: Sequence[str], served: Sequence[str]
    ) -> list[str]:
        rows = await self.pool.fetch(
            QUERIES["schedule_retire_declared"], list(undeclared), list(served)
        )
        return [row[0] for row in rows]

    async def schedule_update(
        self,
        schedule_id: str,
        *,
        cron: str | None,
        timezone: str | None,
        payload: tuple[bool, str | None],
        external_id: tuple[bool, str | None],
        catch_up: str | None,
    ) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(
                QUERIES["schedule_update"],
                schedule_id,
                cron,
                timezone,
                payload[0],
                payload[1],
                external_id[0],
                external_id[1],
                catch_up,
            )
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_set_active(self, schedule_id: str, active: bool) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(QUERIES["schedule_set_active"], schedule_id, active)
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_delete(self, schedule_id: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(QUERIES["schedule_delete"], schedule_id)
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_fire(
        self, schedule_id: str, fire_time: datetime, run_id: uuid.UUID, payload: str
    ) -> bool:
        """One run for (schedule, fire time); False when another daemon fired it first."""
        fired = await self.pool.fetchval(
            QUERIES["schedule_fire"], run_id, fire_time, payload, schedule_id
        )
        return fired is not None

    async def schedule_skip_to(self, schedule_id: str, fire_time: datetime) -> None:
        await self.pool.execute(QUERIES["schedule_skip_to"], schedule_id, fire_time)

    async def run_get(self, run_id: uuid.UUID, *, with_attempts: bool = True) -> Run | None:
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(QUERIES["run_get"], run_id)
            if row is None:
                return None
            attempts = (
                await connection.fetch(QUERIES["attempt_list"], run_id) if with_attempts else []
            )
        return Run(**dict(row), attempts=[Attempt(**dict(a)) for a in attempts])

    async def run_list(
        self,
        *,
        statuses: Sequence[RunStatus] | None = None,
        task_id: str | None = None,
        event: str | None = None,
        schedule_id: str | None = None,
        before: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[Run]:
        rows = await self.pool.fetch(
            QUERIES["run_list"],
            [s.value for s in statuses] if statuses else None,
            task_id,
            before,
            limit,
            event,
            schedule_id,
        )
        return [Run(**dict(row)) for row in rows]

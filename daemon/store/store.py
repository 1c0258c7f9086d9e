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

from daemon.models import Attempt, ClaimedRun, Outcome, Run, RunStatus
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
        )

    async def worker_heartbeat(
        self, worker_id: uuid.UUID, lease_seconds: float, run_ids: Sequence[uuid.UUID]
    ) -> None:
        """Mark the worker alive and extend the leases of the runs it holds."""
        await self.pool.execute(QUERIES["worker_heartbeat"], worker_id, lease_seconds, run_ids)

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
        before: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[Run]:
        rows = await self.pool.fetch(
            QUERIES["run_list"],
            [s.value for s in statuses] if statuses else None,
            task_id,
            before,
            limit,
        )
        return [Run(**dict(row)) for row in rows]

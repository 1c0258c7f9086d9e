"""Workers: their rows, the session lock that proves each alive, heartbeats and reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskd.store.queries import load

SQL = load("workers")


@dataclass(frozen=True, slots=True)
class WorkerRegistration:
    """A worker's row as it starts. ``process``: its process identity
    (daemon/taskd/worker/process_identity.py), if known."""

    worker_id: uuid.UUID
    host: str
    pid: int
    version: str
    concurrency: int
    queues: Sequence[str]
    tasks: Sequence[str]
    lock_key: int
    process: dict[str, Any] | None = None
    # the version served of each of tasks (the same positions), and [worker] version_policy
    task_versions: Sequence[str | None] | None = None
    version_policy: str | None = None


class WorkerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def register(self, worker: WorkerRegistration) -> None:
        await self.pool.execute(
            SQL["register"],
            worker.worker_id,
            worker.host,
            worker.pid,
            worker.version,
            worker.concurrency,
            list(worker.queues),
            list(worker.tasks),
            worker.lock_key,
            worker.process,
            list(worker.task_versions) if worker.task_versions is not None else None,
            worker.version_policy,
        )

    async def lock(self, connection: asyncpg.Connection, lock_key: int) -> bool:
        """Try to take the worker's session lock on ``connection`` (a dedicated one, never
        pooled); False when another session holds the key."""
        return bool(await connection.fetchval(SQL["lock"], lock_key))

    async def free_orphan_locks(self, connection: asyncpg.Connection, lock_key: int) -> list[int]:
        """Terminate this daemon's own orphaned sessions that still hold ``lock_key``."""
        return [row[0] for row in await connection.fetch(SQL["free_orphan_locks"], lock_key)]

    async def list_unlocked(self, worker_id: uuid.UUID) -> list[dict[str, Any]]:
        """Other workers, not known to be stopped, whose lock nobody holds (id, host, pid,
        process identity or None)."""
        return [dict(row) for row in await self.pool.fetch(SQL["list_unlocked"], worker_id)]

    async def mark_gone(self, worker_ids: Sequence[uuid.UUID]) -> None:
        await self.pool.execute(SQL["mark_gone"], list(worker_ids))

    async def list(self) -> list[dict[str, Any]]:
        """Workers not known to be stopped, with how many runs each executes."""
        return [dict(row) for row in await self.pool.fetch(SQL["list"])]

    async def heartbeat(
        self,
        worker_id: uuid.UUID,
        lease_seconds: float,
        leases: Sequence[tuple[uuid.UUID, int]],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg cancels the statement itself)
    ) -> bool:
        """Mark the worker alive and extend its leases ((run id, attempt) pairs).

        Returns False when the worker was declared gone by another daemon meanwhile, or when
        its row no longer exists (pruned or deleted: nobody can see or reconcile it).
        """
        ids = [run_id for run_id, _ in leases]
        attempts = [attempt for _, attempt in leases]
        gone = await self.pool.fetchval(
            SQL["heartbeat"], worker_id, lease_seconds, ids, attempts, timeout=timeout
        )
        return gone is False

    async def stop(self, worker_id: uuid.UUID) -> None:
        await self.pool.execute(SQL["stop"], worker_id)

    async def report(self, worker_id: uuid.UUID, report: bytes) -> None:
        """Record the worker's last reconciliation report (JSON)."""
        await self.pool.execute(SQL["report"], worker_id, report.decode())

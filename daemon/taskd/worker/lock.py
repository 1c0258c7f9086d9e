"""The worker's advisory lock: held on a session of its own for the daemon's whole life.

Other daemons read pg_locks: a worker whose lock nobody holds is provably gone, so its runs
can be handed back at once instead of after their lease. After a reconnect (the database
restarted, the connection dropped) the lock is taken again.
"""

from __future__ import annotations

import logging
import secrets

import anyio
import asyncpg
from anyio.abc import TaskStatus

from taskd.config import DatabaseSettings
from taskd.store.store import Store
from taskd.worker.session import PROBE_TIMEOUT, DedicatedSession

log = logging.getLogger("taskd.lock")
# How often a held key is looked at again while the lock is not ours.
LOCK_RETRY = 0.5


def new_lock_key() -> int:
    """A random advisory-lock key per process start (never derived from host or pid)."""
    return secrets.randbits(63)


class WorkerLock:
    def __init__(self, dsn: str, settings: DatabaseSettings, store: Store, key: int) -> None:
        self.key = key
        self._store = store
        # A short backoff: while the lock is not held, other daemons may count us as gone.
        self._session = DedicatedSession("worker-lock", dsn, settings, self._take, max_backoff=1.0)

    @property
    def held(self) -> bool:
        return self._session.up

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._session.run(task_status=task_status)

    async def _take(self, connection: asyncpg.Connection) -> None:
        """Poll until this session holds the key (never a blocking wait, which no probe sees).

        A holder that is this daemon's own orphaned session is terminated at once; any other
        is waited out, with the daemon not claiming and /readyz answering 503 meanwhile.
        """
        reported = False
        while True:
            # each poll bounded: a connection that died silently shows here, and reconnects
            with anyio.fail_after(PROBE_TIMEOUT):
                if await self._store.workers.lock(connection, self.key):
                    break
                orphans = await self._store.workers.free_orphan_locks(connection, self.key)
            if orphans:
                log.warning(
                    "worker lock held by this daemon's own orphaned session(s) %s: terminated",
                    orphans,
                )
            elif not reported:
                log.error("worker lock held by another session; not claiming until it is free")
            reported = True
            # right after terminating our orphan, look again at once: while the key is free,
            # other daemons may count this worker as gone
            await anyio.sleep(0.05 if orphans else LOCK_RETRY)
        if reported:
            log.info("worker lock taken again")

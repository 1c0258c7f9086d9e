"""A dedicated database session that must stay up: reconnect with backoff, probe, report.

The LISTEN connection and the worker's advisory-lock connection are both held this way.
Neither may come from a pool: asyncpg's pool resets released connections (UNLISTEN *,
pg_advisory_unlock_all) and PgBouncer in transaction mode would break both.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import asyncpg
from anyio.abc import TaskStatus

from taskd.config import DatabaseSettings
from taskd.store.database import DB_ERRORS, connect
from taskd.store.workers import SQL as WORKER_SQL

PROBE_INTERVAL = 15.0
PROBE_TIMEOUT = 5.0


class DedicatedSession:
    """Holds one connection; ``on_connect`` sets it up after every (re)connect."""

    def __init__(
        self,
        name: str,
        dsn: str,
        settings: DatabaseSettings,
        on_connect: Callable[[asyncpg.Connection], Awaitable[None]],
        *,
        probe_interval: float = PROBE_INTERVAL,
        max_backoff: float = 5.0,
    ) -> None:
        self._log = logging.getLogger(f"taskd.{name}")
        self._name = name
        self._dsn = dsn
        self._settings = settings
        self._on_connect = on_connect
        self._probe_interval = probe_interval
        self._max_backoff = max_backoff
        self.up = False
        self.reconnects = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect (the first time before ``task_status.started``), then keep it up forever."""
        started = False
        failures = 0
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await connect(self._dsn, self._settings)
                lost = anyio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.fetchval(WORKER_SQL["session_keepalives"], timeout=PROBE_TIMEOUT)
                await self._on_connect(connection)
                self.up = True
                if started:
                    self.reconnects += 1
                    self._log.info("%s connection restored", self._name)
                failures = 0
                if not started:
                    started = True
                    task_status.started()
                await self._watch(connection, lost)
            except DB_ERRORS as exc:
                if self.up or failures == 0:
                    self._log.error("%s connection lost: %s", self._name, exc)
            finally:
                was_up, self.up = self.up, False
                if connection is not None:
                    connection.terminate()
            if was_up:
                self._log.warning("%s connection down; reconnecting", self._name)
            failures += 1
            await anyio.sleep(min(self._max_backoff, 0.05 * 2**failures))

    async def _watch(self, connection: asyncpg.Connection, lost: anyio.Event) -> None:
        """Return when the connection is lost or stops answering a probe."""
        while True:
            with anyio.move_on_after(self._probe_interval):
                await lost.wait()
                return
            with anyio.fail_after(PROBE_TIMEOUT):
                await connection.fetchval("SELECT 1")

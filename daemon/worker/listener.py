"""The LISTEN connection: wake-ups from producers, on a dedicated connection that reconnects.

NOTIFY is a hint, not a delivery: the pool's poll interval is the backstop, and every
(re)connect wakes the claimer at once, since notifications sent while it was down are gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskStatus

from daemon.config import DatabaseSettings
from daemon.store.database import connect

log = logging.getLogger("taskd.listener")

WAKEUP_CHANNEL = "taskd_wakeup"
PROBE_INTERVAL = 15.0
PROBE_TIMEOUT = 5.0
MAX_BACKOFF = 10.0


class Listener:
    def __init__(
        self,
        dsn: str,
        settings: DatabaseSettings,
        on_wake: Callable[[str], None],
        *,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._on_wake = on_wake
        self._probe_interval = probe_interval
        self.up = False
        self.reconnects = 0
        self.last_notification_at: float | None = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.last_notification_at = time.monotonic()
        self._on_wake(payload)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        failures = 0
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await connect(self._dsn, self._settings)
                lost = anyio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(WAKEUP_CHANNEL, self._on_notify)
                self.up = True
                if started:
                    self.reconnects += 1
                    log.info("listener reconnected")
                failures = 0
                self._on_wake("*")  # anything sent while we were away is lost: look now
                if not started:
                    started = True
                    task_status.started()
                await self._watch(connection, lost)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not started and failures == 0:
                    log.error("listener cannot connect: %s", exc)
                elif self.up:
                    log.error("listener connection lost: %s", exc)
            finally:
                was_up, self.up = self.up, False
                if connection is not None:
                    connection.terminate()
            if was_up:
                log.warning("listener down; polling continues; reconnecting")
            failures += 1
            await anyio.sleep(min(MAX_BACKOFF, 0.1 * 2**failures))

    async def _watch(self, connection: asyncpg.Connection, lost: anyio.Event) -> None:
        """Return when the connection is lost or stops answering a probe."""
        while True:
            with anyio.move_on_after(self._probe_interval):
                await lost.wait()
                return
            with anyio.fail_after(PROBE_TIMEOUT):
                await connection.fetchval("SELECT 1")

"""The LISTEN connection: nudges (taskd_wakeup) and cancel requests from producers.

NOTIFY is a hint, not a delivery: the claimer's poll interval is the backstop, and every
(re)connect calls ``on_reconnect`` at once, since notifications sent while it was down are
gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskStatus

from taskd.config import DatabaseSettings
from taskd.worker.session import DedicatedSession

log = logging.getLogger("taskd.listener")

NUDGE_CHANNEL = "taskd_wakeup"  # a producer's NOTIFY here nudges the claimers
CANCEL_CHANNEL = "taskd_cancel"


class Listener:
    def __init__(
        self,
        dsn: str,
        settings: DatabaseSettings,
        handlers: dict[str, Callable[[str], None]],
        on_reconnect: Callable[[], None],
        *,
        probe_interval: float = 15.0,
    ) -> None:
        self._handlers = handlers
        self._on_reconnect = on_reconnect
        self._session = DedicatedSession(
            "listener", dsn, settings, self._listen, probe_interval=probe_interval
        )
        self.last_notification_at: float | None = None

    @property
    def up(self) -> bool:
        return self._session.up

    @property
    def reconnects(self) -> int:
        return self._session.reconnects

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._session.run(task_status=task_status)

    async def _listen(self, connection: asyncpg.Connection) -> None:
        for channel in self._handlers:
            await connection.add_listener(channel, self._on_notify)
        self._on_reconnect()  # anything sent while we were away is lost: look now

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.last_notification_at = time.monotonic()
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:  # a handler's bug (or a payload it chokes on) must not stop LISTEN
            log.exception("notification on %s not handled: %.200r", channel, payload)

"""Turns a bare ``NOTIFY taskd_event, '{"name": ..., "payload": ...}'`` into a recorded event.

For producers that can only NOTIFY. Every daemon receives every notification, so only one
of them relays: the holder of an advisory lock (the leader). Notifications sent while no
daemon leads, or while the leader is changing, are lost; producers that need delivery call
taskd.send_event instead, in their transaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import asyncpg
import orjson

from taskd.config import DatabaseSettings
from taskd.logs import log_event
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.session import DedicatedSession

log = logging.getLogger("taskd.events")

EVENT_CHANNEL = "taskd_event"
# pg_try_advisory_lock key of the relay's leadership: one per database.
RELAY_LOCK_KEY = 0x7A5D_0002
LEADERSHIP_RETRY = 5.0
MAX_PENDING = 1000


class EventRelay:
    def __init__(
        self, dsn: str, settings: DatabaseSettings, store: Store, max_payload_bytes: int
    ) -> None:
        self._store = store
        self._max_payload_bytes = max_payload_bytes
        self._session = DedicatedSession("event-relay", dsn, settings, self._lead)
        self._pending: set[asyncio.Task[None]] = set()
        self.leading = False
        self.relayed = 0
        self.dropped = 0

    async def run(self) -> None:
        await self._session.run()

    async def _lead(self, connection: asyncpg.Connection) -> None:
        """Wait until this session holds the leadership lock, then LISTEN."""
        self.leading = False
        # an advisory lock can only be polled (a blocking pg_advisory_lock would hide a
        # dead connection from the session's probe)
        while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):  # noqa: ASYNC110
            await anyio.sleep(LEADERSHIP_RETRY)
        await connection.add_listener(EVENT_CHANNEL, self._on_notify)
        self.leading = True
        log.info("relaying NOTIFY %s for this database", EVENT_CHANNEL)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        parsed = self._parse(payload)
        if parsed is None:
            self.dropped += 1
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            log.error("event relay saturated: NOTIFY %s dropped", EVENT_CHANNEL)
            return
        relay = asyncio.get_running_loop().create_task(self._send(*parsed))
        self._pending.add(relay)
        relay.add_done_callback(self._pending.discard)

    def _parse(self, payload: str) -> tuple[str, str] | None:
        """(name, payload as JSON text), or None with the reason logged."""
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            _drop(f"not JSON ({exc})", payload)
            return None
        if not isinstance(message, dict):
            _drop("not a JSON object", payload)
            return None
        name = message.get("name")
        if not isinstance(name, str) or not name.strip():
            _drop('no "name" (a non-empty string)', payload)
            return None
        unknown = set(message) - {"name", "payload"}
        if unknown:
            _drop(f"unknown key(s) {sorted(unknown)}", payload)
            return None
        body = orjson.dumps(message.get("payload", {}))
        if len(body) > self._max_payload_bytes:
            _drop(
                f"payload is {len(body)} bytes, over the limit of {self._max_payload_bytes}",
                payload,
            )
            return None
        return name, body.decode()

    async def _send(self, name: str, payload: str) -> None:
        try:
            event_id = await self._store.events.send(name, payload)
        except DB_ERRORS as exc:
            self.dropped += 1
            log_event(log, logging.ERROR, f"NOTIFY event {name!r} lost: {exc}", event=name)
            return
        self.relayed += 1
        log_event(log, logging.DEBUG, "event relayed", event=name, event_id=str(event_id))


def _drop(reason: str, payload: str) -> None:
    log_event(
        log,
        logging.WARNING,
        f"NOTIFY {EVENT_CHANNEL} dropped: {reason}",
        payload=payload[:200],
    )

"""The fleet's run changes on every daemon's ``/api/stream``, through the database.

Each daemon publishes its own transitions in process (``ChangeHub``). This feed carries them
to the other daemons, and only while one of them has a stream client:

- A daemon with a stream client says so through its feed connection's ``application_name``
  (``taskd-stream``), LISTENs on ``taskd_changes`` and NOTIFYs ``taskd_stream_watch``.
- Every daemon's feed LISTENs on ``taskd_stream_watch`` and counts the ``taskd-stream``
  sessions in ``pg_stat_activity`` (shared memory, no table) every ``check_interval`` and at
  once on such a notification. While the count of OTHER daemons is 0 the hub is not
  forwarding: no change is built for it and nothing is sent. A daemon that crashes stops
  counting with its connection, by itself.
- While it is not 0, the hub also collects every change its layers publish; the feed sends
  them every ``flush_interval`` as compact NOTIFY payloads (under 8000 bytes each, one round
  trip per batch) on its own connection, never on a claim's or an outcome's.
- The streaming daemon hands what it receives to its readers (``ChangeHub.deliver``), never
  back to the feed, and skips what it sent itself: a change reaches each reader once.

NOTIFY is a hint: a notification sent while the reader's LISTEN connection was down is lost.
On every reconnect while streaming, the feed reads the runs finished since the last change it
delivered (``finished_since``) and sends them as ``completed`` / ``failed`` / ``canceled`` /
``expired``. Metadata too large for a notification is read from the run's row.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import anyio
import asyncpg
import orjson
from anyio.abc import TaskStatus

from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import DatabaseSettings
from taskd.store import change_feed as sql
from taskd.store.database import DB_ERRORS, connect
from taskd.store.workers import SQL as WORKER_SQL

log = logging.getLogger("taskd.change_feed")

WATCH_CHANNEL = "taskd_stream_watch"
CHANGES_CHANNEL = "taskd_changes"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL refuses a NOTIFY payload of 8000 or more
INLINE_DATA = 2000  # a change's data up to this size travels in the notification
MESSAGE_CHARS = 500  # a longer error message is cut (the run's page has it whole)
MAX_PENDING = 20_000  # changes kept for the next flush; beyond, the oldest are dropped
CATCH_UP_LIMIT = 1000
CATCH_UP_MARGIN = 1.0  # seconds read before the cursor: finished_at is the commit's start
STEP_TIMEOUT = 10.0  # a feed round trip that takes longer: the connection is dropped, retaken


class ChangeFeed:
    def __init__(
        self,
        dsn: str,
        settings: DatabaseSettings,
        hub: ChangeHub,
        worker_id: uuid.UUID,
        *,
        check_interval: float = 2.0,
        flush_interval: float = 0.05,
        tick: float = 0.1,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._hub = hub
        self._worker_id = worker_id
        self._origin = str(worker_id)
        self._check_interval = check_interval
        self._flush_interval = flush_interval
        self._tick = tick
        self._received: list[str] = []
        self._wake = anyio.Event()
        self._look_now = False
        self._next_check = 0.0
        self.streaming = False
        """Whether this daemon has a stream client and LISTENs for the others' changes."""
        self.forwarding = False
        """Whether another daemon streams: this one sends its changes."""
        self.cursor: float | None = None
        self.sent_total = 0
        self.notifications_total = 0
        self.delivered_total = 0
        self.dropped_total = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        failures = 0
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await connect(self._dsn, self._settings)
                # TCP keepalives as the other dedicated connections (session.py)
                with anyio.fail_after(STEP_TIMEOUT):
                    await connection.fetchval(WORKER_SQL["session_keepalives"])
                    await connection.add_listener(WATCH_CHANNEL, self._on_watch)
                failures = 0
                if not started:
                    started = True
                    task_status.started()
                await self._serve(connection)
            except DB_ERRORS as exc:
                if failures == 0:
                    log.warning("change feed connection lost: %s", exc)
            finally:
                self._stop_forwarding()
                self.streaming = False
                if connection is not None:
                    connection.terminate()
            failures += 1
            await anyio.sleep(min(5.0, 0.05 * 2**failures))

    def _on_watch(self, *_args: Any) -> None:
        self._look_now = True
        self._wake.set()

    def _on_changes(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._received.append(payload)
        self._wake.set()

    async def _serve(self, connection: asyncpg.Connection) -> None:
        # the backend's own pid (behind a session-mode pooler, get_server_pid() is the
        # pooler's, which pg_stat_activity does not know)
        with anyio.fail_after(STEP_TIMEOUT):
            own_pid = await connection.fetchval("SELECT pg_backend_pid()")
        self._next_check = 0.0
        lost = anyio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        while not lost.is_set():
            with anyio.fail_after(STEP_TIMEOUT):
                await self._step(connection, own_pid)
            self._wake = anyio.Event()
            if self._received:
                continue
            with anyio.move_on_after(self._flush_interval if self.forwarding else self._tick):
                await self._wake.wait()
        raise ConnectionError("the change feed's connection was closed")

    async def _step(self, connection: asyncpg.Connection, own_pid: int) -> None:
        """One look: start or stop streaming, count the others, deliver, send."""
        want = self._hub.subscribers > 0
        if want != self.streaming:
            await self._set_streaming(connection, want)
        elif not want:
            self.cursor = None  # the readers left while the connection was down
        now = time.monotonic()
        if self._look_now or now >= self._next_check:
            self._look_now = False
            self._next_check = now + self._check_interval
            others = await sql.streamers(connection, own_pid)
            if others and not self.forwarding:
                self._hub.forward = []
                self.forwarding = True
                log.info("forwarding run changes: %d other daemon(s) stream", others)
            elif not others and self.forwarding:
                self._stop_forwarding()
                log.info("no other daemon streams: run changes no longer forwarded")
        if self._received:
            await self._deliver(connection)
        if self.forwarding:
            await self._flush(connection)

    async def _set_streaming(self, connection: asyncpg.Connection, streaming: bool) -> None:
        if streaming:
            resumed = self.cursor is not None
            await connection.add_listener(CHANGES_CHANNEL, self._on_changes)
            await sql.set_streaming(connection, True)
            await sql.announce(connection)
            if resumed:
                assert self.cursor is not None
                await self.catch_up(connection, self.cursor - CATCH_UP_MARGIN)
            self.cursor = time.time()
            self.streaming = True
        else:
            await sql.set_streaming(connection, False)
            await connection.remove_listener(CHANGES_CHANNEL, self._on_changes)
            self._received.clear()
            self.cursor = None
            self.streaming = False

    def _stop_forwarding(self) -> None:
        self._hub.forward = None
        self.forwarding = False

    async def _flush(self, connection: asyncpg.Connection) -> None:
        changes = self._hub.forward
        if not changes:
            return
        self._hub.forward = []
        if len(changes) > MAX_PENDING:
            self.dropped_total += len(changes) - MAX_PENDING
            log.warning("%d run change(s) not forwarded: too many at once", len(changes))
            changes = changes[-MAX_PENDING:]
        payloads = pack(self._origin, changes)
        await sql.publish(connection, payloads)
        self.sent_total += len(changes)
        self.notifications_total += len(payloads)

    async def _deliver(self, connection: asyncpg.Connection) -> None:
        received, self._received = self._received, []
        entries: list[list[Any]] = []
        for payload in received:
            try:
                message = orjson.loads(payload)
            except orjson.JSONDecodeError:
                log.warning("not a change notification: %.200r", payload)
                continue
            if message.get("o") == self._origin:
                continue  # this daemon's own: its readers had it in process
            entries.extend(message.get("c", ()))
        if not entries:
            return
        missing = [uuid.UUID(e[1]) for e in entries if len(e) > 7 and e[7]]
        metadata = await sql.metadata(connection, missing) if missing else {}
        for kind, run_id, task_id, status, attempt, at, data, *rest in entries:
            parsed = uuid.UUID(run_id)
            if rest and rest[0]:
                data = metadata.get(parsed)
            self._hub.deliver(
                RunChange(ChangeKind(kind), parsed, task_id, status, attempt, data=data, at=at)
            )
            self.cursor = max(self.cursor or at, at)
        self.delivered_total += len(entries)

    async def catch_up(self, connection: asyncpg.Connection, since: float) -> None:
        rows = await sql.finished_since(connection, since, self._worker_id, CATCH_UP_LIMIT)
        for row in rows:
            data = None
            error = row["error"]
            if row["status"] != "completed" and isinstance(error, dict):
                data = {"error": _short_error(error)}
            self._hub.deliver(
                RunChange(
                    ChangeKind(row["status"]),
                    row["id"],
                    row["task_id"],
                    row["status"],
                    row["attempt"],
                    data=data,
                    at=row["at"],
                )
            )
        if rows:
            log.info("change feed caught up: %d run(s) finished while it was away", len(rows))


def _short_error(error: dict[str, Any]) -> dict[str, Any]:
    message = error.get("message")
    if isinstance(message, str) and len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "…"
    return {"type": error.get("type"), "message": message}


def entry(change: RunChange) -> bytes:
    """One change as a compact JSON array; data too large is cut or left to be read."""
    data = change.data
    read_data = 0
    if data is not None:
        encoded = orjson.dumps(data)
        if len(encoded) > INLINE_DATA:
            if change.kind == ChangeKind.METADATA:
                data, read_data = None, 1
            else:
                data = {
                    k: _short_error(v) if k == "error" and isinstance(v, dict) else v
                    for k, v in data.items()
                }
                if len(orjson.dumps(data)) > INLINE_DATA:
                    data = {"truncated": True}
    return orjson.dumps(
        [
            change.kind.value,
            str(change.run_id),
            change.task_id,
            change.status,
            change.attempt,
            change.at,
            data,
            read_data,
        ]
    )


def pack(origin: str, changes: list[RunChange]) -> list[str]:
    """The changes as NOTIFY payloads of at most ``MAX_PAYLOAD`` bytes each."""
    head = b'{"o":"%s","c":[' % origin.encode()
    payloads: list[str] = []
    parts: list[bytes] = []
    size = len(head) + 2
    for change in changes:
        encoded = entry(change)
        if parts and size + len(encoded) + 1 > MAX_PAYLOAD:
            payloads.append((head + b",".join(parts) + b"]}").decode())
            parts, size = [], len(head) + 2
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        payloads.append((head + b",".join(parts) + b"]}").decode())
    return payloads

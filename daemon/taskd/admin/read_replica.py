"""The admin API's reads from a streaming replica ([admin] read_url).

Every GET under /api/ that reads stored history (runs, logs, errors, stats, costs, events,
schedules, webhooks, queues, tasks, workers) runs its handler against the replica's pool; the
writes, the session, the SSE stream, /readyz and /metrics stay on the primary. Two rules keep
an operator from seeing less than the primary knows:

- a read the replica answers 404 (a run just triggered through the API, not replayed yet) is
  asked of the primary again;
- a replica that cannot be reached (refused, timed out, shutting down) makes that read, and
  every read of the next ``RETRY_AFTER`` seconds, go to the primary; the switch is logged once
  (warning), and the return once (info). A query the standby cancels (a conflict with
  recovery) or that would write is asked of the primary for that request only.

Answers say where they were read: ``Taskd-Read-From: replica`` (with ``Taskd-Replica-Lag``,
seconds, measured at most once per ``LAG_EVERY``) or ``primary``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Gauge

from taskd.admin.replica_schemas import ReplicaStatus
from taskd.admin.routing import RequestInvalid, Route
from taskd.admin.state import AdminState
from taskd.client import Client
from taskd.errors import (
    QueueNotFound,
    RunNotFound,
    ScheduleNotFound,
    TokenNotFound,
    WebhookNotFound,
)
from taskd.store.database import dsn_location
from taskd.store.replica import (
    ReplicaLag,
    primary_position,
    replica_lag,
    server_down,
    unreachable,
)
from taskd.store.store import Store

log = logging.getLogger("taskd.admin.replica")

RETRY_AFTER = 5.0
"""Seconds the reads stay on the primary after the replica failed one."""
LAG_EVERY = 1.0
"""Seconds a lag measurement is reused for the answers' header."""
PRIMARY_ONLY = frozenset({"/api/session", "/api/stream", "/api/replica"})
"""GET routes under /api/ that stay on the primary: who the caller is, the live stream (fed
by this daemon), and the replica's own status (it measures both servers)."""

NOT_FOUND = (
    RequestInvalid,
    RunNotFound,
    ScheduleNotFound,
    QueueNotFound,
    WebhookNotFound,
    TokenNotFound,
)
"""What a handler raises for a 404: asked of the primary again."""
READ_FROM = "Taskd-Read-From"
LAG_HEADER = "Taskd-Replica-Lag"


def reads_history(route: Route) -> bool:
    """The route's handler may run on the replica."""
    return (
        route.method == "GET" and route.path.startswith("/api/") and route.path not in PRIMARY_ONLY
    )


class ReadReplica:
    """The replica's pool and the state the read handlers get on it; the fallback's clock."""

    def __init__(
        self,
        url: str,
        pool: asyncpg.Pool,
        primary_pool: asyncpg.Pool,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = dsn_location(url)
        self.pool = pool
        self._primary_pool = primary_pool
        self._store = Store(pool)
        self._client: Client | None = None
        self._clock = clock
        self._down_until = 0.0
        self._lag: ReplicaLag | None = None
        self._lag_at = -LAG_EVERY
        self.fallbacks = 0
        self.last_error: str | None = None
        self.lag_seconds = Gauge(
            "taskd_replica_lag_seconds",
            "Seconds since the primary committed the last transaction [admin] read_url's "
            "replica replayed (0: nothing left to replay; NaN: unknown)",
            registry=registry,
        )
        self.lag_bytes = Gauge(
            "taskd_replica_lag_bytes",
            "WAL bytes written on the primary not replayed yet by the read replica",
            registry=registry,
        )
        self.up = Gauge(
            "taskd_replica_up",
            "1 while the admin API reads from the replica, 0 while it falls back to the primary",
            registry=registry,
        )
        self.up.set(1)
        self._reading = True

    @property
    def down(self) -> bool:
        return self._clock() < self._down_until

    def on(self, state: AdminState) -> AdminState:
        """``state`` with the replica's store and a client reading through it."""
        if self._client is None:
            self._client = Client(self.pool, changes=state.changes)
        return replace(state, store=self._store, client=self._client)

    async def read(
        self,
        state: AdminState,
        handler: Callable[[AdminState], Awaitable[Any]],
    ) -> tuple[Any, str]:
        """The handler's answer and where it was read (``replica`` or ``primary``)."""
        if self.down:
            return await handler(state), "primary"
        try:
            result = await handler(self.on(state))
        except NOT_FOUND as exc:
            if isinstance(exc, RequestInvalid) and exc.status != 404:
                raise
            # not (yet) on the replica: a write just made through the primary, or truly none
            return await handler(state), "primary"
        except Exception as exc:
            if not unreachable(exc):
                raise
            if server_down(exc):
                self._fell_back(exc)
            # else one query the standby could not answer (a recovery conflict): this read only
            return await handler(state), "primary"
        if not self._reading:  # the replica answers again
            log.info("reading from the replica at %s again", self.where)
            self._reading = True
            self.up.set(1)
        return result, "replica"

    def _fell_back(self, exc: BaseException) -> None:
        self.last_error = one_line(exc)
        self._down_until = self._clock() + RETRY_AFTER
        self.fallbacks += 1
        self._lag = None
        self.lag_seconds.set(float("nan"))
        self.lag_bytes.set(float("nan"))
        if self._reading:
            self._reading = False
            log.warning(
                "the replica at %s is unreachable (%s): the admin API reads from the primary "
                "(the replica is tried again every %g s)",
                self.where,
                one_line(exc),
                RETRY_AFTER,
            )
            self.up.set(0)

    async def lag(self, *, fresh: bool = False) -> ReplicaLag | None:
        """The replica's lag, measured at most once per LAG_EVERY (``fresh``: now); None while
        the replica cannot be read. A primary that cannot be asked raises (its own error)."""
        now = self._clock()
        if not fresh and now - self._lag_at < LAG_EVERY:
            return self._lag
        self._lag_at = now
        position = await primary_position(self._primary_pool)
        try:
            lag = await replica_lag(self.pool, position)
        except Exception as exc:
            if not unreachable(exc):
                raise
            if server_down(exc):
                self._fell_back(exc)
            self._lag = None
            self.last_error = one_line(exc)
            return None
        self._lag = lag
        self.lag_seconds.set(nan_if_none(lag.seconds))
        self.lag_bytes.set(nan_if_none(lag.bytes))
        return lag

    async def status(self) -> ReplicaStatus:
        """GET /api/replica: measured now (a primary that cannot be asked: a 503, as any
        other read of it)."""
        lag = await self.lag(fresh=True)
        return ReplicaStatus(
            configured=True,
            reading_from="primary" if self.down else "replica",
            reachable=lag is not None,
            in_recovery=lag.in_recovery if lag is not None else None,
            lag_seconds=lag.seconds if lag is not None else None,
            lag_bytes=lag.bytes if lag is not None else None,
            error=None if lag is not None else self.last_error,
        )


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__

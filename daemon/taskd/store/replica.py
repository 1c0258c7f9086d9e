"""A streaming replica to read from ([admin] read_url): its pool, and its lag behind the
primary (WAL bytes not replayed yet, seconds since the last replayed commit was made)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from taskd.config import DatabaseSettings
from taskd.store.database import DB_ERRORS, init_connection
from taskd.store.queries import load

SQL = load("replica")


@dataclass(frozen=True)
class ReplicaLag:
    """How far the replica is behind; ``in_recovery`` false: it is no replica (promoted), and
    both figures are None."""

    in_recovery: bool
    bytes: int | None
    seconds: float | None


def create_read_pool(
    url: str,
    settings: DatabaseSettings,
    *,
    size: int,
    statement_timeout: float,
    application_name: str = "taskd-read",
) -> asyncpg.Pool:
    """A pool on the replica that opens no connection until a read needs one (min_size 0): a
    replica down at a daemon's start costs its reads a fallback to the primary, not the start.
    Await it (``await pool``) before use; that opens nothing."""
    pool: asyncpg.Pool = asyncpg.create_pool(
        url,
        min_size=0,
        max_size=size,
        timeout=settings.connect_timeout,
        statement_cache_size=settings.statement_cache_size,
        init=init_connection,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(max(1, int(statement_timeout * 1000))),
        },
        reset=_keep_session,
    )
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    return None


async def measure_lag(
    primary: asyncpg.Pool | asyncpg.Connection, replica: asyncpg.Pool | asyncpg.Connection
) -> ReplicaLag:
    """The replica's lag behind the primary's WAL position read now (two statements, one on
    each server). A primary in recovery (being failed over): the replica's own figures with
    nothing to compare to count as no lag known (both None)."""
    return await replica_lag(replica, await primary_position(primary))


async def primary_position(primary: asyncpg.Pool | asyncpg.Connection) -> str | None:
    """The primary's WAL position now (None: the server is in recovery)."""
    position: str | None = await primary.fetchval(SQL["primary_position"])
    return position


async def replica_lag(
    replica: asyncpg.Pool | asyncpg.Connection, position: str | None
) -> ReplicaLag:
    """The replica's distance to ``position`` (read on the primary just before)."""
    if position is None:
        return ReplicaLag(in_recovery=True, bytes=None, seconds=None)
    row = await replica.fetchrow(SQL["replica_lag"], position)
    assert row is not None
    return ReplicaLag(
        in_recovery=bool(row["in_recovery"]), bytes=row["bytes"], seconds=row["seconds"]
    )


RETRY_ON_PRIMARY = frozenset({"40001", "25006"})
"""SQLSTATEs a read gets from a healthy standby that the primary answers: a query canceled by
a conflict with recovery, a read-only transaction asked to write."""


def server_down(exc: BaseException) -> bool:
    """``unreachable`` because the replica is down, not because of one query."""
    return unreachable(exc) and not (
        isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in RETRY_ON_PRIMARY
    )


def unreachable(exc: BaseException) -> bool:
    """The replica failed as a server, not the query: worth asking the primary instead.

    Connection failures (OSError, timeouts, a connection the server cut), SQLSTATE class 08
    (connection exception), 57P (shutting down, starting up) and 40001 on a standby (a query
    canceled by a conflict with recovery). A query that is wrong, or too slow (57014,
    statement_timeout), would fail on the primary too: it is not retried there. 25006 (a
    read-only transaction asked to write) is: a read that writes belongs on the primary."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        return state.startswith(("08", "57P")) or state in RETRY_ON_PRIMARY
    return isinstance(exc, DB_ERRORS)

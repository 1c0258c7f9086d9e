"""Session connections, and the transaction pooler that cannot give one (PgBouncer).

A transaction pooler (PgBouncer's ``pool_mode = transaction``) lends a client a server
connection for one transaction at a time: between two transactions the client's next one may
run on another server connection, and another client's on its previous one. What a session
holds (LISTEN, a session advisory lock, a ``SET``, a named prepared statement) stays behind on
a server connection the client no longer has. The daemon's pools take that (their statements
keep no session state, ``statement_cache_size = 0`` sends them unnamed); its session
connections cannot, so they go to ``database.direct_url``, checked here once at start-up.

The check costs nothing on a direct connection: the backend that answers ``pg_backend_pid()``
is the one whose pid the server sent at connect (asyncpg's ``get_server_pid()``). A pooler
sends a pid of its own making, so the check then tells a session-mode pool (the client keeps
its server connection) from a transaction pooler: a second client opens a transaction, and
either it runs on this client's server connection, or this client's next statement runs on
another one. Pickers that hand out the most recently used server connection (PgBouncer's
default) show it to the first other client; round-robin ones to the client's next statement.
"""

from __future__ import annotations

import logging

import anyio
import asyncpg

from taskd.config import DatabaseSettings
from taskd.errors import ConfigError
from taskd.store.database import connect, dsn_location

log = logging.getLogger("taskd.database")

PROBES = 3
"""Other clients opened, each holding a transaction, before the session is taken as kept."""
PROBE_WAIT = 2.0
"""Longest wait for another client's transaction to start: a session-mode pool at its limit
has no server connection for it (a transaction pooler would lend the idle one)."""

_BACKEND_PID = "SELECT pg_backend_pid()"
# a named statement of this session missing, or already there, on its server connection
_LOST_STATEMENT = (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError)


async def connect_session(dsn: str, settings: DatabaseSettings) -> asyncpg.Connection:
    """``connect(dsn)``, refused with a one-line ConfigError naming ``database.direct_url``
    when ``dsn`` goes through a transaction pooler (its session state would not be kept)."""
    try:
        connection = await connect(dsn, settings)
    except _LOST_STATEMENT as exc:  # the codecs' own lookups already ran on two servers
        raise not_a_session(dsn, settings, f"a prepared statement was lost: {exc}") from None
    try:
        problem = await session_problem(connection, dsn, settings)
    except _LOST_STATEMENT as exc:
        problem = f"a prepared statement was lost: {exc}"
    except BaseException:
        connection.terminate()
        raise
    if problem is not None:
        connection.terminate()
        raise not_a_session(dsn, settings, problem)
    return connection


async def session_problem(
    connection: asyncpg.Connection, dsn: str, settings: DatabaseSettings
) -> str | None:
    """None when ``connection`` keeps its session (PostgreSQL itself, a session-mode pool);
    else what showed that it does not."""
    backend = await connection.fetchval(_BACKEND_PID)
    if connection.get_server_pid() == backend:
        return None
    log.info("%s is a pooler: checking that it keeps sessions", dsn_location(dsn))
    others: list[asyncpg.Connection] = []
    try:
        for _ in range(PROBES):
            others_backend = None
            with anyio.move_on_after(PROBE_WAIT):
                other = await asyncpg.connect(
                    dsn,
                    timeout=settings.connect_timeout,
                    statement_cache_size=0,
                    server_settings={"application_name": "taskd"},
                )
                others.append(other)
                await other.execute("BEGIN")
                others_backend = await other.fetchval(_BACKEND_PID)
            if others_backend is None:
                return None  # no server connection for another client: a session pool
            if others_backend == backend:
                return "another client's transaction ran on this session's server connection"
            if await connection.fetchval(_BACKEND_PID) != backend:
                return "the session's statements ran on another server connection"
        return None
    finally:
        for other in others:
            other.terminate()


def not_a_session(dsn: str, settings: DatabaseSettings, how: str) -> ConfigError:
    where = dsn_location(dsn)
    if settings.direct_url:
        return ConfigError(
            f"config error: database.direct_url (TASKD_DATABASE__DIRECT_URL): {where} is a "
            f"transaction pooler ({how}); LISTEN, the worker lock and the migrations' lock "
            "need a session: point it at PostgreSQL itself or a session-mode pool"
        )
    return ConfigError(
        f"config error: database.url (TASKD_DATABASE__URL): {where} is a transaction pooler "
        f"({how}); LISTEN, the worker lock and the migrations' lock need a session: set "
        "database.direct_url (TASKD_DATABASE__DIRECT_URL) to PostgreSQL itself or a "
        "session-mode pool"
    )

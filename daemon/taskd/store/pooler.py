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
its server connection) from a transaction pooler: another client opens a transaction and
holds it, and this client's next statement runs on another server connection (or, with
asyncpg's statement cache on, fails to find its prepared statement there). A pooler that hands
out the most recently used server connection (PgBouncer's default) lends this client's to the
first other client; a round-robin one shows it within two.

The pools' check (``check_pool_statements``) is the same look with the statement cache on: a
pooler that keeps prepared statements for its clients (PgBouncer 1.21 and later with
``max_prepared_statements``) passes, one that does not (Debian 12's 1.18) is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Pooling:
    """What a connection's address is: ``direct`` (PostgreSQL itself), ``session`` (a pool
    that keeps each client on its server connection), or ``transaction`` (a pooler)."""

    mode: str
    how: str = ""
    """For ``transaction``: what showed it."""
    statements_lost: bool = False
    """For ``transaction``: a named prepared statement did not follow the client."""


async def connect_session(dsn: str, settings: DatabaseSettings) -> asyncpg.Connection:
    """``connect(dsn)``, refused with a one-line ConfigError naming ``database.direct_url``
    when ``dsn`` goes through a transaction pooler (its session state would not be kept)."""
    connection, pooling = await _connect_and_look(dsn, settings)
    if pooling.mode == "transaction":
        if connection is not None:
            connection.terminate()
        raise not_a_session(dsn, settings, pooling.how)
    assert connection is not None
    return connection


async def check_pool_statements(dsn: str, settings: DatabaseSettings) -> None:
    """With ``statement_cache_size`` above 0 (asyncpg's named prepared statements), refuse a
    ``dsn`` whose pooler loses them between transactions (PgBouncer before 1.21, or without
    ``max_prepared_statements``): one line naming the key, instead of "prepared statement
    does not exist" errors under load. Opens one connection (and up to PROBES others)."""
    if not settings.statement_cache_size:
        return
    connection, pooling = await _connect_and_look(dsn, settings)
    if connection is not None:
        await connection.close()
    if pooling.statements_lost:
        raise ConfigError(
            "config error: database.statement_cache_size "
            f"(TASKD_DATABASE__STATEMENT_CACHE_SIZE): database.url ({dsn_location(dsn)}) is "
            f"a transaction pooler that does not keep prepared statements ({pooling.how}): "
            "set it to 0 (or max_prepared_statements in PgBouncer 1.21 or later)"
        )


async def _connect_and_look(
    dsn: str, settings: DatabaseSettings
) -> tuple[asyncpg.Connection | None, Pooling]:
    try:
        connection = await connect(dsn, settings)
    except _LOST_STATEMENT as exc:  # the codecs' own lookups already ran on two servers
        return None, _lost(exc)
    try:
        return connection, await pooling_of(connection, dsn, settings)
    except BaseException:
        connection.terminate()
        raise


async def pooling_of(
    connection: asyncpg.Connection, dsn: str, settings: DatabaseSettings
) -> Pooling:
    """Whether ``connection`` keeps its session; statements are sent as the connection
    sends them (named when its statement cache is on)."""
    backend = await connection.fetchval(_BACKEND_PID)
    if connection.get_server_pid() == backend:
        return Pooling("direct")
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
                return Pooling("session")  # no server connection for another client
            # another client holds a transaction (on this client's server connection, if
            # the pooler lent it): this client's next statement runs where it can
            try:
                again = await connection.fetchval(_BACKEND_PID)
            except _LOST_STATEMENT as exc:
                return _lost(exc)
            if again != backend:
                return Pooling(
                    "transaction", "the session's statements ran on another server connection"
                )
        return Pooling("session")
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


def _first_line(exc: BaseException) -> str:
    """asyncpg's message without its HINT (several lines of advice about pgbouncer)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _lost(exc: BaseException) -> Pooling:
    return Pooling("transaction", f"a prepared statement was lost: {_first_line(exc)}", True)

"""Connections to PostgreSQL: orjson codecs for json/jsonb, pools, and one-line error text."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import asyncpg
import orjson

from taskd.config import DatabaseSettings

log = logging.getLogger("taskd.database")

T = TypeVar("T")

CONNECT_TRIES = 3
"""Tries of one connection (or pool) whose opening timed out or that the server was not
ready to take: a server that stalls for a moment under load, or is still starting, answers the
next try."""
_TRANSIENT = (TimeoutError, asyncpg.CannotConnectNowError)


def encode_json(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def decode_json(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(connection: asyncpg.Connection) -> None:
    """Install the binary jsonb/json codecs (orjson) on a new connection."""
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=encode_json, decoder=decode_json, format="binary"
    )
    await connection.set_type_codec(
        "json",
        schema="pg_catalog",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        format="text",
    )


async def connect(dsn: str, settings: DatabaseSettings | None = None) -> asyncpg.Connection:
    """A dedicated connection (LISTEN, advisory locks): never taken from a pool."""
    settings = settings or DatabaseSettings()
    connection: asyncpg.Connection = await _retrying(
        dsn,
        lambda: asyncpg.connect(
            dsn,
            timeout=settings.connect_timeout,
            statement_cache_size=settings.statement_cache_size,
            server_settings={"application_name": "taskd"},
        ),
    )
    await init_connection(connection)
    return connection


async def _retrying(dsn: str, open_: Callable[[], Awaitable[T]]) -> T:
    """``open_()``, tried again (up to CONNECT_TRIES) when it timed out or the server was not
    ready; every other failure (refused, no such database, bad password) at once."""
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            return await open_()
        except _TRANSIENT as exc:
            if attempt == CONNECT_TRIES:
                raise
            log.warning(
                "connecting to %s: %s; trying again (%d of %d)",
                dsn_location(dsn),
                str(exc) or type(exc).__name__,
                attempt + 1,
                CONNECT_TRIES,
            )
            await anyio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


async def create_pool(
    dsn: str,
    settings: DatabaseSettings | None = None,
    *,
    size: int | None = None,
    synchronous_commit: bool = True,
    reset_session: bool = True,
    statement_timeout: float | None = None,
    lock_timeout: float | None = None,
    application_name: str = "taskd",
    custom_plans: bool = False,
) -> asyncpg.Pool:
    """A pool with taskd's codecs. ``size`` fixes min = max (the claim pool).

    ``synchronous_commit=False`` is for the claim only: a claim the server forgets in a crash
    leaves its run QUEUED, which the at-least-once guarantee already covers, and WAL order
    makes any later (synchronous) completion durable together with its claim.

    ``reset_session=False`` skips asyncpg's reset query on every release (a round trip per
    call: a third of a single trigger's time). For pools whose connections only run taskd's
    own statements, which leave no session state behind; open transactions are still
    rolled back by asyncpg.
    """
    settings = settings or DatabaseSettings()
    server_settings = {"application_name": application_name}
    if not synchronous_commit:
        server_settings["synchronous_commit"] = "off"
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(max(1, int(statement_timeout * 1000)))
    if lock_timeout is not None:
        server_settings["lock_timeout"] = str(max(1, int(lock_timeout * 1000)))
    if custom_plans:  # see create_worker_pool
        server_settings["plan_cache_mode"] = "force_custom_plan"

    def open_pool(startup: dict[str, str]) -> Awaitable[asyncpg.Pool]:
        return _retrying(
            dsn,
            lambda: asyncpg.create_pool(
                dsn,
                min_size=size or settings.pool_min_size,
                max_size=size or settings.pool_max_size,
                timeout=settings.connect_timeout,
                statement_cache_size=settings.statement_cache_size,
                init=init_connection,
                server_settings=startup,
                reset=None if reset_session else _keep_session,
            ),
        )

    try:
        pool: asyncpg.Pool = await open_pool(server_settings)
    except asyncpg.ProtocolViolationError as exc:
        # PgBouncer refuses every startup parameter it does not track (it cannot set one
        # on the server connections its clients share): connect without them, then say
        # which bounds are missing (below)
        if _REFUSED not in str(exc) or len(server_settings) == 1:
            raise
        pool = await open_pool({"application_name": application_name})
    if len(server_settings) > 1:
        await _check_settings(pool, dsn, application_name, server_settings)
    return pool


async def create_worker_pool(dsn: str, settings: DatabaseSettings) -> asyncpg.Pool:
    """The worker's pool (outcomes, heartbeats, chores): every statement bounded by
    ``lock_timeout`` and ``statement_timeout``, and planned for its arguments at each call
    (``plan_cache_mode = force_custom_plan``). A generic plan is kept from a statement's sixth
    execution until the table's statistics change; made on an empty ``taskd.runs`` (every new
    deployment's first minute) the outcome write's read the whole table at every batch once
    it had grown, and under a steady load the outcomes stopped within seconds while claims went
    on (bench/soak.py). Planning costs about half a millisecond per batch of outcomes; the
    claim keeps its own generic plans (``taskd.claim_runs`` sets its own plan_cache_mode)."""
    return await create_pool(
        dsn,
        settings,
        lock_timeout=settings.lock_timeout,
        statement_timeout=settings.statement_timeout,
        custom_plans=True,
    )


_REFUSED = "unsupported startup parameter"
_warned: set[tuple[str, str, tuple[str, ...]]] = set()


async def _check_settings(
    pool: asyncpg.Pool, dsn: str, application_name: str, wanted: dict[str, str]
) -> None:
    """Warn (once) when the pool's sessions do not have the settings sent at startup: a
    pooler refused them (PgBouncer without them in ``ignore_startup_parameters``) or dropped
    them (with). One statement when the pool opens; nothing per statement."""
    rows = await pool.fetch(
        "SELECT name, setting, coalesce(unit, '') AS unit, current_user AS role"
        " FROM pg_settings WHERE name = ANY($1::text[])",
        [name for name in wanted if name != "application_name"],
    )
    unit = {r["name"]: f" {r['unit']}" if r["unit"] else "" for r in rows}
    missing = {r["name"]: r["setting"] for r in rows if r["setting"] != wanted[r["name"]]}
    if not missing:
        return
    key = (dsn_location(dsn), application_name, tuple(sorted(missing)))
    if key in _warned:
        return
    _warned.add(key)
    role = rows[0]["role"]
    bounds = [
        f"{name} is {missing[name]}{unit[name]}, not {wanted[name]}{unit[name]}"
        for name in sorted(missing)
    ]
    fixes = [
        f"ALTER ROLE {role} SET {name} = '{wanted[name]}{'ms' if name.endswith('timeout') else ''}'"
        for name in ("lock_timeout", "statement_timeout", "plan_cache_mode")
        if name in missing and application_name == "taskd"  # the worker's bounds
    ]
    log.warning(
        "%s (%s pool): the pooler does not pass startup parameters: %s%s",
        key[0],
        application_name,
        "; ".join(bounds),
        f"; set them on the role: {'; '.join(fixes)}" if fixes else "",
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    return None


def describe_connection_error(exc: BaseException, dsn: str | None = None) -> str | None:
    """One line for an error that means the database could not be reached, else None.

    With ``dsn``, the line says which database (host, port and name; never the user or
    password)."""
    database = f"the database at {dsn_location(dsn)}" if dsn else "the database"
    if isinstance(exc, OSError | socket.gaierror | TimeoutError):
        return f"cannot reach {database}: {exc}"
    if isinstance(
        exc, asyncpg.InvalidCatalogNameError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return f"cannot connect to {database}: {exc}"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"cannot connect to {database}: {exc}"
    if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.ConnectionDoesNotExistError):
        return f"database unavailable ({dsn_location(dsn) if dsn else 'database.url'}): {exc}"
    return None


def dsn_location(dsn: str) -> str:
    """``postgresql://u:secret@db:5432/app`` -> ``db:5432/app``: where, without credentials."""
    rest = dsn.partition("://")[2]
    # the credentials end at the last "@" (a password may hold "/", "?" or ":"): cut first
    address, _, query = rest.rpartition("@")[2].partition("?")
    hosts, slash, name = address.partition("/")
    if not hosts:  # a Unix socket: ?host=/run/postgresql
        socket_dir = next((p[5:] for p in query.split("&") if p.startswith("host=")), "default")
        return f"{name or '(default database)'} (socket {socket_dir})"
    return f"{hosts}{slash}{name}"


def refuses_data(exc: BaseException) -> bool:
    """True when the database refused the data itself, so retrying the same write cannot help.

    Only these SQLSTATE classes: 22 data exception (e.g. ``\\u0000`` in jsonb), 23 integrity
    constraint violation, 54 program limit exceeded. Anything else (a connection lost, a server
    shutting down, a database not accepting connections, a deadlock) is worth retrying.
    """
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in {"22", "23", "54"}
    return False


# Everything a database call can raise when the database or the connection fails: worth
# retrying later. InternalClientError ("cannot switch to state N; another operation (2) is in
# progress") is asyncpg's error for a statement on a connection the server has just
# terminated (a restart, pg_terminate_backend) before asyncpg has read the end of its stream
# (MagicStack/asyncpg#784, #1069); it derives from neither of the others.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

DatabaseError = asyncpg.PostgresError
InterfaceError = asyncpg.InterfaceError

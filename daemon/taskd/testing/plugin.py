"""taskd's pytest plugin (entry point ``pytest11``: installed with taskd, loaded by pytest).

Fixtures, all named ``taskd_*``:

- ``taskd_tester``: a ``Tester`` on a fresh database of its own (cloned from a migrated
  template on the embedded server, started once per session; ``TASKD_TEST_DSN`` names
  another server), with an in-process daemon and the virtual clock;
- ``taskd_anthropic``: a ``FakeAnthropic`` server, the tester's daemon pointed at it (``[llm]
  base_url``) and ``ANTHROPIC_API_KEY`` set for the test;
- ``taskd_server_dsn`` (session): the server's maintenance database, which a project's own
  conftest may override (to share one server with its other fixtures).

Async fixtures need pytest-asyncio (``asyncio_mode = "auto"``, or ``@pytest.mark.asyncio``
on each test). Importing this module costs only pytest: the rest loads when a fixture is used.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from taskd.testing.anthropic import FakeAnthropic
    from taskd.testing.tester import Tester

T = TypeVar("T")

TEMPLATE = "taskd_testing_template"

_ASYNC = importlib.util.find_spec("pytest_asyncio") is not None
"""pytest-asyncio is what runs async tests and fixtures: without it, the fixtures say so."""


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a loop of its own (a session fixture is not async:
    its loop would outlive or not match the tests' loops)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, name="taskd-testing-setup")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@pytest.fixture(scope="session")
def taskd_server_dsn() -> Iterator[str]:
    """The test server's maintenance database: the embedded PostgreSQL, started once."""
    from taskd.testing.server import test_server

    with test_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def taskd_template(taskd_server_dsn: str) -> Iterator[str]:
    """The name of the migrated template database with the virtual clock: made once per
    session (per process: parallel sessions may share a server), dropped at its end."""
    from taskd.testing.server import create_template, drop_database, with_database

    name = f"{TEMPLATE}_{os.getpid()}"
    _in_thread(lambda: create_template(taskd_server_dsn, name, clock=True))
    yield name
    _in_thread(lambda: drop_database(taskd_server_dsn, with_database(taskd_server_dsn, name)))


if _ASYNC:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def taskd_tester(taskd_server_dsn: str, taskd_template: str) -> AsyncIterator[Tester]:
        """A Tester: a fresh database, an in-process daemon serving the tasks the test runs,
        the virtual clock (``await taskd_tester.advance(hours=24)``)."""
        from taskd.testing.server import create_database, drop_database
        from taskd.testing.tester import Tester

        dsn = await create_database(taskd_server_dsn, taskd_template, clock=True)
        try:
            async with Tester(dsn) as tester:
                yield tester
        finally:
            await drop_database(taskd_server_dsn, dsn)

    @pytest_asyncio.fixture
    async def taskd_anthropic(
        taskd_tester: Tester, monkeypatch: pytest.MonkeyPatch
    ) -> AsyncIterator[FakeAnthropic]:
        """A fake Anthropic API (a real local server); the tester's daemon calls it."""
        from taskd.testing.anthropic import FakeAnthropic

        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        async with FakeAnthropic() as fake:

            def point_at_fake(settings: Any) -> None:
                settings.llm.base_url = fake.url

            taskd_tester.configure(point_at_fake)
            yield fake

else:  # pragma: no cover

    @pytest.fixture
    def taskd_tester() -> None:
        pytest.fail("taskd.testing's fixtures need pytest-asyncio: pip install pytest-asyncio")

    @pytest.fixture
    def taskd_anthropic() -> None:
        pytest.fail("taskd.testing's fixtures need pytest-asyncio: pip install pytest-asyncio")

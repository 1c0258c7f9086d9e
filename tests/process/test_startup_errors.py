"""`taskd run` start-up failures name their real cause in one line (issue 12 item 8, L12).

Each case is a real `taskd run` subprocess: the admin port taken by another socket, a database
that cannot be reached or a URL that is not one, a bad config value, and pool sizes that
contradict each other. Each must stop with exit code non-zero, one line on stderr naming what
is wrong (the listen address, the database, the config key), and no traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from taskd.config import DatabaseSettings, Settings, describe_validation_error
from taskd.store.database import dsn_location
from tests.support.cli import one_line_failure, taskd, taskd_all

NO_TASKS = {"TASKD_TASKS__MODULES": "[]"}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another socket listens on for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_an_admin_port_in_use_names_the_address_not_the_database(
    database: str, taken_port: int
) -> None:
    listen = f"127.0.0.1:{taken_port}"
    result = await taskd(database, "run", timeout=30, TASKD_ADMIN__LISTEN=listen, **NO_TASKS)
    problem = one_line_failure(result, "admin.listen", listen, "address already in use")
    assert problem is None, problem
    assert "database" not in result.err, result


async def test_database_and_config_failures_name_their_cause(database: str) -> None:
    unreachable = "postgresql://taskd@127.0.0.1:1/nowhere"
    cases = {
        "unreachable": (unreachable, {}),
        "not a URL": ("postgresql://taskd@127.0.0.1:notaport/x", {}),
        "bad value": (database, {"TASKD_WORKER__CONCURRENCY": "0"}),
        "pool sizes": (
            database,
            {"TASKD_DATABASE__POOL_MIN_SIZE": "20", "TASKD_DATABASE__POOL_MAX_SIZE": "5"},
        ),
    }
    results = {}
    for name, (dsn, env) in cases.items():
        results |= await taskd_all(dsn, {name: ("run",)}, timeout=30, env={name: NO_TASKS | env})
    problems = [
        one_line_failure(results["unreachable"], "database", "127.0.0.1:1"),
        one_line_failure(results["not a URL"], "database.url"),
        one_line_failure(results["bad value"], "worker.concurrency", code=2),
        one_line_failure(
            results["pool sizes"], "database.pool_min_size", "database.pool_max_size", code=2
        ),
    ]
    assert [p for p in problems if p] == []
    assert "taskd@" not in results["unreachable"].err, "user and password stay out of the line"


@pytest.mark.parametrize(
    "url", ["postgresql://app:hunter2?x@db:notaport/app", "postgresql://app:hun/ter2@db:xx/app"]
)
def test_a_url_error_never_quotes_the_password(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"database": {"url": url}})
    message = describe_validation_error(refused.value)  # the line `taskd` prints
    assert message.startswith("config error: database.url (TASKD_DATABASE__URL): "), message
    assert "is not a number" in message and "hunter2" not in message and "ter2" not in message


def test_a_password_with_url_characters_is_no_port_and_stays_out_of_the_location() -> None:
    url = "postgresql://app:hunter2?x/y@db:5432/app"
    assert DatabaseSettings(url=url).url == url
    assert dsn_location(url) == "db:5432/app"


def test_timeouts_beyond_what_postgresql_takes_are_refused() -> None:
    for key in ("lock_timeout", "statement_timeout"):
        with pytest.raises(ValidationError, match=key):
            DatabaseSettings(**{key: "30d"})

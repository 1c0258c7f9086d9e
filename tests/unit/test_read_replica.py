"""Where the admin API's reads go with [admin] read_url (admin/read_replica.py), without a server:
the handler is the test's, the replica's failures are the exceptions asyncpg raises, and the
retry clock is the test's (the reads tier, with real servers: tests/process/test_replica.py)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from taskd.admin.read_replica import RETRY_AFTER, ReadReplica, reads_history
from taskd.admin.routing import Route
from taskd.admin.state import AdminState
from taskd.changes import ChangeHub
from taskd.config import AdminSettings, Settings
from taskd.errors import RunNotFound
from taskd.store.replica import unreachable

URL = "postgresql://reader:pa55word@replica.internal:5432/app"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def primary_state() -> AdminState:
    fake: Any = object()
    return AdminState(
        store=fake,
        client=fake,
        registry=fake,
        changes=ChangeHub(),
        metrics=fake,
        settings=AdminSettings(),
        readiness=fake,
        max_payload_bytes=1024,
    )


def replica_and_clock() -> tuple[ReadReplica, Clock]:
    clock = Clock()
    pool: Any = object()
    return ReadReplica(URL, pool, pool, CollectorRegistry(), clock=clock), clock


async def test_an_unreachable_replica_sends_the_reads_to_the_primary_until_it_is_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica, clock = replica_and_clock()
    state = primary_state()
    replica_up = False
    asked: list[str] = []

    async def handler(on: AdminState) -> str:
        where = "primary" if on.store is state.store else "replica"
        asked.append(where)
        if where == "replica" and not replica_up:
            raise ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)")
        return f"read on the {where}"

    with caplog.at_level(logging.INFO, logger="taskd.admin.replica"):
        assert await replica.read(state, handler) == ("read on the primary", "primary")
        assert asked == ["replica", "primary"]
        # within RETRY_AFTER: straight to the primary, no second warning
        clock.now += RETRY_AFTER - 0.1
        assert await replica.read(state, handler) == ("read on the primary", "primary")
        assert asked[2:] == ["primary"]
        replica_up = True
        clock.now += 0.2
        assert await replica.read(state, handler) == ("read on the replica", "replica")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "reads from the primary" in lines[0][1]
    assert "replica.internal:5432/app" in lines[0][1] and "pa55word" not in lines[0][1]
    assert lines[1] == ("INFO", "reading from the replica at replica.internal:5432/app again")


async def test_a_run_the_replica_does_not_know_yet_is_read_on_the_primary() -> None:
    replica, _ = replica_and_clock()
    state = primary_state()

    async def handler(on: AdminState) -> str:
        if on.store is not state.store:
            raise RunNotFound("no run with id 0190...")
        return "the run"

    assert await replica.read(state, handler) == ("the run", "primary")
    assert not replica.down  # a 404 says nothing about the replica's health


async def test_a_recovery_conflict_reads_that_query_on_the_primary_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica, _ = replica_and_clock()
    state = primary_state()

    async def handler(on: AdminState) -> str:
        if on.store is not state.store:
            raise asyncpg.SerializationError("canceling statement due to conflict with recovery")
        return "the runs"

    with caplog.at_level(logging.INFO, logger="taskd.admin.replica"):
        assert await replica.read(state, handler) == ("the runs", "primary")
    assert not replica.down and not caplog.records  # the replica is up: the next read goes there


async def test_a_query_that_fails_on_the_replica_fails_there() -> None:
    replica, _ = replica_and_clock()
    state = primary_state()

    async def handler(on: AdminState) -> str:
        raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")

    with pytest.raises(asyncpg.QueryCanceledError):
        await replica.read(state, handler)
    assert not replica.down


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (asyncpg.SerializationError("conflict with recovery"), True),
        (asyncpg.ReadOnlySQLTransactionError("read-only transaction"), True),
        (asyncpg.QueryCanceledError("statement timeout"), False),
        (asyncpg.UndefinedTableError("no such table"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_send_a_read_to_the_primary(exc: BaseException, expected: bool) -> None:
    assert unreachable(exc) is expected


def route(method: str, path: str) -> Route:
    async def handler(*_: Any) -> None:
        return None

    return Route(method, path, handler, "")


def test_the_reads_of_history_go_to_the_replica_and_the_rest_to_the_primary() -> None:
    assert reads_history(route("GET", "/api/runs"))
    assert reads_history(route("GET", "/api/runs/{id}"))
    assert reads_history(route("GET", "/api/stats"))
    for method, path in [
        ("POST", "/api/tasks/{id}/trigger"),
        ("GET", "/api/session"),
        ("GET", "/api/stream"),
        ("GET", "/api/replica"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ]:
        assert not reads_history(route(method, path)), path


def test_read_url_must_be_a_postgresql_dsn() -> None:
    with pytest.raises(ValueError, match="expected a PostgreSQL DSN"):
        Settings.model_validate({"admin": {"read_url": "replica.internal:5432"}})
    settings = Settings.model_validate({"admin": {"read_url": URL}})
    assert settings.admin.read_url == URL

"""The example in tasks/dump.py against a real local HTTP server that fails before answering.

Nothing is patched: the task reads ``PULSEFINDER_API_URL`` at call time, so pointing it at an
HTTP server on 127.0.0.1 (tests/support/fake_http.py) is enough, and the daemon runs the task
with its production retry policy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from taskd import Client, RunStatus
from tasks import dump
from tasks.dump import player_dump, team_dump
from tests.support.fake_http import FakeHttp, Reply, Request, fake_http
from tests.support.in_process import StartDaemon
from tests.support.waiting import wait_for_run

PLAYER = {"id": "p-42", "displayName": "Ada", "rank": "diamond"}


@dataclass
class FakePulseFinder:
    """Answers each request with the next scripted reply; its server records what it was asked."""

    server: FakeHttp
    script: list[Reply] = field(default_factory=list)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def answer(self, request: Request) -> Reply:
        if not self.script:
            return Reply(599, {"error": "script exhausted"})
        return self.script.pop(0)


@pytest.fixture
async def pulsefinder(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakePulseFinder]:
    async with fake_http() as server:
        fake = FakePulseFinder(server)
        server.route("GET", "/{tail:.*}", fake.answer)
        monkeypatch.setenv("PULSEFINDER_API_URL", server.url("/v1"))
        monkeypatch.delenv("PULSEFINDER_API_KEY", raising=False)
        monkeypatch.delenv("DUMP_DATABASE_URL", raising=False)
        yield fake


async def dumped_rows(connection: asyncpg.Pool | asyncpg.Connection) -> list[dict[str, Any]]:
    """Rows of pulsefinder_dumps as plain dicts (data decoded); [] when there is no table."""
    if await connection.fetchval("SELECT to_regclass('pulsefinder_dumps')") is None:
        return []
    rows = await connection.fetch(
        "SELECT entity_type, entity_id, data::text AS data, dumped_at"
        " FROM pulsefinder_dumps ORDER BY entity_type, entity_id"
    )
    return [{**dict(row), "data": json.loads(row["data"])} for row in rows]


async def test_player_dump_retries_until_the_api_answers(
    client: Client,
    start_daemon: StartDaemon,
    pulsefinder: FakePulseFinder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PULSEFINDER_API_KEY", "secret-key")
    caplog.set_level(logging.WARNING, logger="taskd.executor")
    # The 500 comes first: its backoff is the policy's min_delay (1 s, no jitter on the first
    # retry). The 503 then asks for no wait at all, which must beat the 1-2 s the policy
    # would pick for the second retry: that is how the test stays fast and shows Retry-After.
    pulsefinder.script = [
        Reply(500, {"error": "database on fire"}),
        Reply(503, {"error": "maintenance"}, {"Retry-After": "0"}),
        Reply(200, PLAYER),
    ]
    async with start_daemon([player_dump], poll_interval=0.05):
        run_id = await client.trigger(player_dump, {"player_id": "p-42"})
        run = await wait_for_run(client, run_id, timeout=8)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.attempt == 3
    first, second, _ = run.attempts
    assert [a.outcome for a in run.attempts] == ["failed", "failed", "completed"]
    for attempt, status in ((first, 500), (second, 503)):
        assert attempt.error is not None
        assert attempt.error["type"] == "PulseFinderError"
        assert f"HTTP {status}" in attempt.error["message"]
    assert (second.started_at - first.finished_at).total_seconds() >= 1.0
    # the delays the executor chose (not how soon a busy machine got round to them): the
    # policy's 1 s after the 500, the Retry-After's 0 after the 503
    delays = [
        r.getMessage().split(":")[0].removeprefix("attempt failed, retrying in ")
        for r in caplog.records
        if r.getMessage().startswith("attempt failed, retrying in ")
    ]
    assert delays == ["1s", "0s"], delays

    assert [r.raw_path for r in pulsefinder.requests] == ["/v1/players/p-42"] * 3
    assert all(r.headers.get("X-API-Key") == "secret-key" for r in pulsefinder.requests)

    assert run.output["success"] is True
    assert run.output["entity_id"] == "p-42" and run.output["entity_type"] == "player"
    assert "Ada" in run.output["message"]
    [row] = await dumped_rows(client.pool)
    assert (row["entity_type"], row["entity_id"], row["data"]) == ("player", "p-42", PLAYER)
    assert row["dumped_at"] == datetime.fromisoformat(run.output["timestamp"])


async def test_unknown_player_fails_at_once_without_retries(
    client: Client, start_daemon: StartDaemon, pulsefinder: FakePulseFinder
) -> None:
    pulsefinder.script = [Reply(404, {"error": "no such player"})]
    async with start_daemon([player_dump], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(player_dump, {"player_id": "ghost"}))

    assert run.status is RunStatus.FAILED
    assert len(run.attempts) == 1
    assert run.error is not None and run.error["type"] == "AbortRun"
    assert "not found" in run.error["message"] and "404" in run.error["message"]
    assert len(pulsefinder.requests) == 1
    assert "X-API-Key" not in pulsefinder.requests[0].headers, "no key set, none sent"
    assert await dumped_rows(client.pool) == []


async def test_team_dump_replayed_overwrites_its_row(
    client: Client, start_daemon: StartDaemon, pulsefinder: FakePulseFinder
) -> None:
    pulsefinder.script = [
        Reply(200, {"id": "t/1", "name": "Owls", "wins": 1}),
        Reply(200, {"id": "t/1", "name": "Owls", "wins": 2}),
    ]
    async with start_daemon([team_dump], poll_interval=0.05):
        first = await wait_for_run(
            client, await team_dump.trigger(dump.TeamDumpInput(team_id="t/1"))
        )
        second = await wait_for_run(client, await client.trigger(team_dump, {"team_id": "t/1"}))

    assert first.status is second.status is RunStatus.COMPLETED
    # the id is one path segment, slash and all
    assert [r.raw_path for r in pulsefinder.requests] == ["/v1/teams/t%2F1"] * 2
    [row] = await dumped_rows(client.pool)
    assert (row["entity_type"], row["entity_id"]) == ("team", "t/1")
    assert row["data"]["wins"] == 2
    assert row["dumped_at"] == datetime.fromisoformat(second.output["timestamp"])


async def test_dump_database_url_stores_elsewhere(
    client: Client,
    start_daemon: StartDaemon,
    pulsefinder: FakePulseFinder,
    empty_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUMP_DATABASE_URL", empty_database)
    pulsefinder.script = [Reply(200, PLAYER)]
    try:
        async with start_daemon([player_dump], poll_interval=0.05):
            run = await wait_for_run(client, await client.trigger(player_dump, {"player_id": "p"}))
    finally:
        await dump.close_pool()

    assert run.status is RunStatus.COMPLETED, run.error
    assert await dumped_rows(client.pool) == []
    elsewhere = await asyncpg.connect(empty_database)
    try:
        [row] = await dumped_rows(elsewhere)
    finally:
        await elsewhere.close()
    assert row["data"] == PLAYER


async def test_invalid_payload_never_calls_the_api(
    client: Client, start_daemon: StartDaemon, pulsefinder: FakePulseFinder
) -> None:
    async with start_daemon([player_dump], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(player_dump, {"player_id": ""}))
    assert run.status is RunStatus.FAILED and len(run.attempts) == 1
    assert run.error is not None and run.error["type"] == "ValidationError"
    assert pulsefinder.requests == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("999999", dump.MAX_RETRY_AFTER),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: go now
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert dump.parse_retry_after(header) == expected

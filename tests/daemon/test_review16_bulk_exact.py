"""A bulk action whose preview was an estimate: the daemon counts the runs it would touch
exactly before touching any, and refuses (409, with the exact count) when they are far more
than the confirmation showed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

import taskd.admin.api as api_module
from taskd.app import Daemon
from tests.support.admin import admin_daemon
from tests.support.in_process import admin_url
from tests.support.runs import each, insert_runs


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, **kwargs) as response:
            return response.status, await response.json()

    async def ok(self, path: str, **params: Any) -> Any:
        status, body = await self.call("GET", path, params=params)
        assert status == 200, body
        return body


@asynccontextmanager
async def api_of(daemon: Daemon) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
        yield Api(http, admin_url(daemon))


async def test_a_replay_confirmed_on_an_estimate_touches_no_more_than_confirmed(
    database: str, db: asyncpg.Connection
) -> None:
    # 400 failed runs of customer acme, then 12,100 newer ones of which 5 are acme's: a value
    # search reads the newest 12,000 runs and extrapolates from the 5 it finds there
    await insert_runs(
        db, 400, task_id="console.order", status="failed", payload='{"customer": "acme"}'
    )
    await insert_runs(
        db,
        12_100,
        task_id="console.order",
        status="failed",
        payload=each(['{"customer": "other"}'] * 12_095 + ['{"customer": "acme"}'] * 5),
    )
    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        preview = await api.ok("/api/runs/bulk", action="replay", search="acme")
        assert preview["estimated"] and preview["matching"] < 100, preview

        request = {"action": "replay", "filter": {"search": "acme"}}
        status, body = await api.call(
            "POST", "/api/runs/bulk", json={**request, "expected": preview["matching"]}
        )
        assert status == 409, body
        assert body["detail"] == {"matching": 405, "capped": False}
        assert "405 runs match" in body["error"]
        assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'queued'") == 0

        status, body = await api.call("POST", "/api/runs/bulk", json={**request, "expected": 405})
        assert status == 200, body
        assert (body["matched"], body["done"], body["skipped"]) == (405, 405, 0)
        assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'queued'") == 405


async def test_the_runs_gathered_in_several_statements_are_each_touched_once(
    database: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_module, "BULK_COLLECT", 64)  # 405 runs: 7 statements
    monkeypatch.setattr(api_module, "BULK_BATCH", 50)  # and 9 transactions
    acme = await insert_runs(
        db, 405, task_id="console.order", status="failed", payload='{"customer": "acme"}'
    )
    await insert_runs(
        db, 300, task_id="console.order", status="failed", payload='{"customer": "other"}'
    )
    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        request = {"action": "replay", "filter": {"search": "acme"}, "expected": 405}
        status, body = await api.call("POST", "/api/runs/bulk", json=request)
        assert status == 200, body
        assert (body["matched"], body["done"], body["skipped"]) == (405, 405, 0)
    replayed = await db.fetch("SELECT replayed_from FROM taskd.runs WHERE status = 'queued'")
    assert sorted(row["replayed_from"] for row in replayed) == sorted(acme)

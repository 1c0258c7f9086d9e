"""The runs API of the console, over real HTTP against a live daemon: the new filters and
search of GET /api/runs, counts per status, bulk cancel and replay by filter (with the
confirmation's guard), replay with an edited payload, and error groups with their runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import asyncpg
from pydantic import BaseModel

from taskd import Context, Retry, task
from taskd.app import Daemon
from tests.support.admin import admin_daemon
from tests.support.in_process import admin_url
from tests.support.runs import each, insert_runs
from tests.support.waiting import wait_for


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

    async def trigger(self, task_id: str, **body: Any) -> str:
        status, reply = await self.call("POST", f"/api/tasks/{task_id}/trigger", json=body)
        assert status == 201, reply
        run_id: str = reply["id"]
        return run_id

    async def status_of(self, run_id: str) -> str:
        detail = await self.ok(f"/api/runs/{run_id}")
        status: str = detail["run"]["status"]
        return status

    async def wait_status(self, run_id: str, *statuses: str) -> None:
        async def check() -> bool:
            return await self.status_of(run_id) in statuses

        await wait_for(check)


@asynccontextmanager
async def api_of(daemon: Daemon) -> AsyncIterator[Api]:
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        yield Api(http, admin_url(daemon))


class Order(BaseModel):
    customer: str
    amount: int


@task(id="console.order")
async def order(payload: Order, ctx: Context) -> dict[str, Any]:
    await ctx.set_metadata(progress=1.0)
    return {"invoice": f"INV-{payload.amount}"}


GATE: dict[str, anyio.Event] = {}


@task(id="console.block", retry=Retry(max_attempts=1))
async def block(payload: Any, ctx: Context) -> None:
    """Runs until the test's gate opens (never, here: only a cancel ends it)."""
    await GATE["block"].wait()


@task(id="console.broken", retry=Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False))
async def broken(payload: Any, ctx: Context) -> None:
    raise LookupError(f"no rate for order {payload['order']}")


def ids(page: dict[str, Any]) -> list[str]:
    return [run["id"] for run in page["runs"]]


async def test_filters_search_and_counts(database: str) -> None:
    async with admin_daemon(database, [order]) as daemon, api_of(daemon) as api:
        acme = await api.trigger(
            "console.order", payload={"customer": "acme", "amount": 5}, concurrency_key="t-1"
        )
        other = await api.trigger("console.order", payload={"customer": "zeta", "amount": 6})
        await api.wait_status(acme, "completed")
        await api.wait_status(other, "completed")
        later = await api.trigger(
            "console.order", payload={"customer": "acme", "amount": 7}, delay="1h"
        )

        page = await api.ok("/api/runs", key="t-1")
        assert ids(page) == [acme] and page["search_complete"] and page["scanned"] >= 1
        summary = page["runs"][0]
        assert summary["concurrency_key"] == "t-1"
        assert summary["metadata"] == {"progress": 1.0}
        assert "payload" not in summary

        assert ids(await api.ok("/api/runs", search='{"customer":"acme"}')) == [later, acme]
        assert ids(await api.ok("/api/runs", search="acme", status="completed")) == [acme]
        assert ids(await api.ok("/api/runs", search="INV-6", search_in="output")) == [other]
        assert ids(await api.ok("/api/runs", search="INV-6", search_in="payload,metadata")) == []
        assert ids(await api.ok("/api/runs", search=acme)) == [acme]
        status, body = await api.call("GET", "/api/runs", params={"search_in": "headers"})
        assert status == 400 and "search_in" in body["error"]

        counts = await api.ok("/api/runs/counts", task="console.order")
        assert counts["counts"] == {
            "queued": 1, "executing": 0, "waiting": 0, "completed": 2, "failed": 0,
            "canceled": 0, "expired": 0,
        }  # fmt: skip
        assert counts["estimated"] == []
        keyed = await api.ok("/api/runs/counts", key="t-1", status="completed,failed")
        assert keyed["counts"]["completed"] == 1 and keyed["counts"]["queued"] == 0


async def test_replay_with_an_edited_payload_is_checked_against_the_task(database: str) -> None:
    async with admin_daemon(database, [order]) as daemon, api_of(daemon) as api:
        original = await api.trigger("console.order", payload={"customer": "acme", "amount": 5})
        await api.wait_status(original, "completed")

        status, body = await api.call(
            "POST", f"/api/runs/{original}/replay", json={"payload": {"customer": "acme"}}
        )
        assert status == 422 and "does not fit task 'console.order'" in body["error"]
        assert body["detail"][0]["loc"] == ["amount"]

        status, body = await api.call(
            "POST", f"/api/runs/{original}/replay", json={"payload": {"customer": "b", "amount": 9}}
        )
        assert status == 201 and body["replayed_from"] == original
        await api.wait_status(body["id"], "completed")
        detail = await api.ok(f"/api/runs/{body['id']}")
        assert detail["run"]["payload"] == {"customer": "b", "amount": 9}
        assert detail["run"]["output"] == {"invoice": "INV-9"}

        status, body = await api.call("POST", f"/api/runs/{original}/replay")  # no body: as is
        assert status == 201
        await api.wait_status(body["id"], "completed")
        assert (await api.ok(f"/api/runs/{body['id']}"))["run"]["payload"]["amount"] == 5


async def test_bulk_cancel_of_queued_and_executing_runs(database: str) -> None:
    GATE["block"] = anyio.Event()
    async with (
        admin_daemon(database, [block, order], concurrency=2) as daemon,
        api_of(daemon) as api,
    ):
        executing = await api.trigger("console.block", tags=["batch"])
        await api.wait_status(executing, "executing")
        queued = [await api.trigger("console.block", tags=["batch"], delay="1h") for _ in range(3)]
        done = await api.trigger(
            "console.order", payload={"customer": "a", "amount": 1}, tags=["batch"]
        )
        await api.wait_status(done, "completed")

        preview = await api.ok("/api/runs/bulk", action="cancel", tag="batch")
        assert preview == {"action": "cancel", "matching": 4, "capped": False, "estimated": False}
        assert (await api.ok("/api/runs/bulk", action="replay", tag="batch"))["matching"] == 5

        body = {"action": "cancel", "filter": {"tag": "batch"}, "expected": 4}
        status, result = await api.call("POST", "/api/runs/bulk", json=body)
        assert status == 200, result
        assert result["matched"] == 4 and result["done"] == 4 and result["skipped"] == 0
        assert set(result["runs"]) == {executing, *queued}
        for run_id in queued:
            assert await api.status_of(run_id) == "canceled"
        # the executing run is canceled through its daemon, as a single cancel is
        await api.wait_status(executing, "canceled")
        assert await api.status_of(done) == "completed"

        # nothing left to cancel: a second request touches nothing
        status, result = await api.call("POST", "/api/runs/bulk", json=body)
        assert status == 200 and result["matched"] == 0 and result["done"] == 0


async def test_bulk_replay_by_filter_and_the_confirmation_guard(
    database: str, db: asyncpg.Connection
) -> None:
    await insert_runs(
        db,
        30,
        task_id="console.order",
        status=each(["failed", "completed", "failed"] * 10),
        payload='{"customer": "old", "amount": 1}',
        finished_at=sql_now(),
    )
    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        failed = {"status": ["failed"], "task": "console.order"}
        preview = await api.ok("/api/runs/bulk", action="replay", status="failed")
        assert preview["matching"] == 20 and not preview["capped"]

        # the confirmation said 5: 20 runs now is more than 10% + 10 over it
        status, body = await api.call(
            "POST", "/api/runs/bulk", json={"action": "replay", "filter": failed, "expected": 5}
        )
        assert status == 409 and "20 runs match" in body["error"]
        assert (await api.ok("/api/runs/counts", status="queued"))["counts"]["queued"] == 0

        status, body = await api.call(
            "POST", "/api/runs/bulk", json={"action": "replay", "filter": failed, "expected": 20}
        )
        assert status == 200, body
        assert (body["matched"], body["done"], body["skipped"]) == (20, 20, 0)
        assert len(body["runs"]) == 20
        queued = await api.ok("/api/runs", status="queued", limit=100)
        assert sorted(ids(queued)) == sorted(body["runs"])
        assert {run["replayed_from"] is not None for run in queued["runs"]} == {True}

        status, body = await api.call(
            "POST", "/api/runs/bulk", json={"action": "explode", "filter": {}, "expected": 0}
        )
        assert status == 422


def sql_now() -> Any:
    from tests.support.runs import sql

    return sql("now()")


async def test_failures_are_grouped_and_a_group_lists_its_runs(database: str) -> None:
    async with admin_daemon(database, [broken, order]) as daemon, api_of(daemon) as api:
        runs = [await api.trigger("console.broken", payload={"order": n}) for n in (17, 4242)]
        for run_id in runs:
            await api.wait_status(run_id, "failed")
        fine = await api.trigger("console.order", payload={"customer": "a", "amount": 1})
        await api.wait_status(fine, "completed")

        groups = (await api.ok("/api/errors"))["groups"]
        assert len(groups) == 1
        group = groups[0]
        assert group["type"] == "LookupError"
        assert group["message"] == "no rate for order <num>"
        assert group["frame"].startswith("daemon/test_admin_runs_console.py:")
        assert group["frame"].endswith(" in broken")
        assert (group["count"], group["runs"]) == (4, 2)  # two attempts each
        assert group["tasks"] == ["console.broken"]
        assert len(group["series"]) == 24 and sum(b["count"] for b in group["series"]) == 4
        assert group["first_seen"] <= group["last_seen"]

        page = await api.ok("/api/runs", error_group=group["fingerprint"])
        assert ids(page) == runs[::-1] and page["search_complete"]
        counts = await api.ok("/api/runs/counts", error_group=group["fingerprint"])
        assert counts["counts"]["failed"] == 2 and counts["estimated"] == []

        assert (await api.ok("/api/errors", task="console.order"))["groups"] == []
        assert (
            await api.ok("/api/errors", since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00Z")
        )["groups"] == []
        status, body = await api.call("GET", "/api/errors", params={"since": "soon"})
        assert status == 400 and "since" in body["error"]

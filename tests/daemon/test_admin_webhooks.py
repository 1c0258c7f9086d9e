"""The status webhook routes of the admin API: a subscription created (its secret answered
once), listed without secrets, paused, resumed, rotated, deleted; its deliveries listed, shown
and sent again; bad input answered 4xx with the ErrorBody; the read-only token refused."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from taskd import Client, Context, task
from tests.support.admin import TOKEN
from tests.support.in_process import StartDaemon, admin_url
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
READ = "read-only-token"


@task(id="wha-ok")
async def ok(payload: None, ctx: Context) -> str:
    return "done"


async def call(
    session: aiohttp.ClientSession, method: str, url: str, token: str = TOKEN, **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, headers=headers, **kw) as response:
        return response.status, await response.json()


async def test_webhook_routes(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    def configure(settings: Any) -> None:
        settings.admin.token = TOKEN
        settings.admin.read_token = READ

    async with (
        webhook_receiver(SECRET) as receiver,
        start_daemon([ok], configure) as daemon,
        aiohttp.ClientSession() as http,
    ):
        base = admin_url(daemon) + "/api/webhooks"
        status, created = await call(
            http,
            "POST",
            base,
            json={"name": "jobs", "url": receiver.url, "events": ["run.completed"]},
        )
        assert status == 201 and created["secret"].startswith("whsec_")
        receiver.secrets = [created["secret"]]
        assert (await call(http, "POST", base, json={**created, "url": "x", "events": []}))[
            0
        ] == 422
        status, taken = await call(
            http, "POST", base, json={"name": "jobs", "url": receiver.url, "events": ["run.failed"]}
        )
        assert status == 409 and "exists" in taken["error"]
        status, bad = await call(
            http, "POST", base, json={"name": "b", "url": receiver.url, "events": ["run.nope"]}
        )
        assert status == 422 and "unknown webhook event" in bad["error"]
        status, listed = await call(http, "GET", base, token=READ)
        assert status == 200 and [w["name"] for w in listed["webhooks"]] == ["jobs"]
        assert "secret" not in listed["webhooks"][0]
        assert (await call(http, "POST", f"{base}/jobs/pause", token=READ))[0] == 403
        status, paused = await call(http, "POST", f"{base}/jobs/pause")
        assert status == 200 and paused["paused"] is True
        status, resumed = await call(http, "POST", f"{base}/jobs/resume")
        assert status == 200 and resumed["paused"] is False
        assert (await call(http, "GET", f"{base}/nope"))[0] == 404

        run_id = await ok.trigger(None)
        await wait_for(lambda: _delivered(db))
        status, page = await call(http, "GET", f"{base}/jobs/deliveries?status=delivered")
        assert status == 200
        (delivery,) = page["deliveries"]
        assert delivery["run_id"] == str(run_id) and delivery["event"] == "run.completed"
        status, shown = await call(http, "GET", f"{base}/jobs/deliveries/{delivery['id']}")
        assert status == 200 and shown["payload"]["data"]["output"] == "done"
        assert (await call(http, "GET", f"{base}/jobs/deliveries/not-an-id"))[0] == 404
        assert (await call(http, "GET", f"{base}/jobs/deliveries?limit=0"))[0] == 400

        status, rotated = await call(http, "POST", f"{base}/jobs/rotate", json={})
        assert status == 200 and rotated["secret"] != created["secret"]
        receiver.secrets.append(rotated["secret"])
        status, again = await call(
            http, "POST", f"{base}/jobs/deliveries/{delivery['id']}/redeliver"
        )
        assert status == 200 and len(again["runs"]) == 1
        await wait_for(lambda: _delivered(db))
        assert [d.webhook_id for d in receiver.received] == [delivery["id"]] * 2
        assert receiver.verified_by[delivery["id"]] == {created["secret"], rotated["secret"]}
        status, none = await call(http, "POST", f"{base}/jobs/redeliver")
        assert status == 200 and none["runs"] == []

        status, deleted = await call(http, "DELETE", f"{base}/jobs")
        assert status == 200 and deleted == {"name": "jobs", "deleted": True}
        assert (await call(http, "DELETE", f"{base}/jobs"))[0] == 404


async def _delivered(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries")
        and not await db.fetchval(
            "SELECT count(*) FROM taskd.webhook_deliveries WHERE status <> 'delivered'"
        )
    )

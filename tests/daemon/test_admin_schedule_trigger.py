"""POST /api/schedules/{id}/trigger on a live daemon: a schedule fired on demand (seed 001 tests
its daily report by firing it), over real HTTP with the bearer token."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import jsonschema_rs

from taskd import Client, Context, RunStatus, ScheduledRun, schedules, task
from tests.support.admin import TOKEN, admin_daemon
from tests.support.in_process import admin_url
from tests.support.waiting import wait_for_run

SEEN: list[ScheduledRun] = []


@schedules.task(id="sched.daily-report", cron="0 9 * * *", timezone="Europe/Paris")
async def daily_report(payload: ScheduledRun, ctx: Context) -> str:
    SEEN.append(payload)
    return f"report for {payload.timestamp.date().isoformat()}"


@task(id="sched.digest")
async def digest(payload: ScheduledRun, ctx: Context) -> Any:
    return {"plan": payload.payload["plan"], "user": payload.external_id}


async def post(http: aiohttp.ClientSession, url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, headers=headers) as response:
        return response.status, await response.json()


async def test_trigger_a_declared_and_a_created_schedule(database: str, client: Client) -> None:
    async with (
        admin_daemon(database, [daily_report, digest], token=TOKEN) as daemon,
        aiohttp.ClientSession() as http,
    ):
        base = admin_url(daemon)
        declared = await client.get_schedule("sched.daily-report")
        status, body = await post(http, f"{base}/api/schedules/sched.daily-report/trigger")
        assert status == 201, body
        assert body["schedule_id"] == "sched.daily-report"
        run = await wait_for_run(client, uuid.UUID(body["id"]))
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.output.startswith("report for ")
        assert run.schedule_id == "sched.daily-report" and run.scheduled_for is None
        assert SEEN[-1].manual and SEEN[-1].timezone == "Europe/Paris"
        after = await client.get_schedule("sched.daily-report")
        assert (after.next_fire_at, after.last_fired_at) == (
            declared.next_fire_at,
            declared.last_fired_at,
        )

        created = await client.create_schedule(
            "sched.digest", "0 8 * * 1", external_id="user-42", payload={"plan": "pro"}
        )
        await client.deactivate_schedule(created.id)  # paused: fired on demand all the same
        status, body = await post(http, f"{base}/api/schedules/{created.id}/trigger")
        assert status == 201, body
        run = await wait_for_run(client, uuid.UUID(body["id"]))
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.output == {"plan": "pro", "user": "user-42"}

        status, body = await post(http, f"{base}/api/schedules/no-such/trigger")
        assert status == 404
        assert body["error"] == "no schedule with id 'no-such'"

        status, body = await post(
            http, f"{base}/api/schedules/sched.daily-report/trigger", token=None
        )
        assert status == 401
        async with http.get(
            f"{base}/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            document = await response.json()
    operation = document["paths"]["/api/schedules/{id}/trigger"]["post"]
    assert {"201", "401", "404"} <= set(operation["responses"])
    assert "security" in operation
    schema = operation["responses"]["201"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    )
    assert list(validator.iter_errors({"id": str(run.id), "schedule_id": created.id})) == []
    assert not validator.is_valid({"schedule_id": created.id})
    assert len(await client.list_runs(schedule="sched.daily-report")) == 1


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    async with http.request(method, url, headers=headers, json=body) as response:
        return response.status, await response.json()


async def test_create_update_delete_through_the_api(database: str, client: Client) -> None:
    async with (
        admin_daemon(database, [daily_report, digest], token=TOKEN) as daemon,
        aiohttp.ClientSession() as http,
    ):
        base = admin_url(daemon) + "/api/schedules"
        status, created = await call(
            http,
            "POST",
            base,
            {
                "task_id": "sched.digest",
                "cron": "0 8 * * 1",
                "timezone": "America/New_York",
                "payload": {"plan": "pro"},
                "external_id": "user-42",
                "dedup_key": "digest-user-42",
            },
        )
        assert status == 201, created
        assert created["id"].startswith("sched_") and created["next_fire_at"] is not None
        stored = await client.get_schedule(created["id"])
        assert (stored.cron, stored.timezone, stored.payload, stored.external_id) == (
            "0 8 * * 1",
            "America/New_York",
            {"plan": "pro"},
            "user-42",
        )
        # the same dedup_key: the same schedule, updated
        status, again = await call(
            http,
            "POST",
            base,
            {"task_id": "sched.digest", "cron": "0 9 * * 1", "dedup_key": "digest-user-42"},
        )
        assert status == 201 and again["id"] == created["id"] and again["cron"] == "0 9 * * 1"

        status, updated = await call(
            http,
            "PATCH",
            f"{base}/{created['id']}",
            {"cron": "30 7 * * 1-5", "external_id": None, "active": False},
        )
        assert status == 200, updated
        assert (updated["cron"], updated["external_id"], updated["active"]) == (
            "30 7 * * 1-5",
            None,
            False,
        )
        assert updated["payload"] is None, "the dedup_key create set no payload"
        status, kept = await call(http, "PATCH", f"{base}/{created['id']}", {"active": True})
        assert status == 200 and kept["active"] and kept["cron"] == "30 7 * * 1-5"

        for method, url, body, expected, message in (
            ("POST", base, {"task_id": "sched.digest", "cron": "0 0 30 2 *"}, 422, "never fires"),
            (
                "POST",
                base,
                {"task_id": "sched.digest", "cron": "@daily", "timezone": "Mars/Base"},
                422,
                "unknown timezone 'Mars/Base'",
            ),
            ("POST", base, {"task_id": "nobody", "cron": "@daily"}, 404, "no task with id"),
            ("PATCH", f"{base}/{created['id']}", {"cron": "61 * * * *"}, 422, "cron '61 * * * *'"),
            ("PATCH", f"{base}/nope", {"cron": "@daily"}, 404, "no schedule with id 'nope'"),
        ):
            status, reply = await call(http, method, url, body)
            assert status == expected and message in reply["error"], (url, body, reply)

        status, deleted = await call(http, "DELETE", f"{base}/{created['id']}")
        assert (status, deleted) == (200, {"id": created["id"], "deleted": True})
        status, reply = await call(http, "DELETE", f"{base}/{created['id']}")
        assert status == 404
    assert [s.id for s in await client.list_schedules()] == ["sched.daily-report"]

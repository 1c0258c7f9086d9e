"""The admin HTTP API of a live daemon, over real HTTP (aiohttp.ClientSession): every endpoint,
the bearer token, every error status, keyset pagination under concurrent inserts, metrics after
a known workload, and the OpenAPI document."""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
import jsonschema_rs
import pytest
import schemathesis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from taskd import Client, Context, Retry, RunStatus, schedules, task
from taskd.admin.api import ROUTES
from taskd.app import Daemon
from taskd.config import load_settings
from taskd.errors import ConfigError
from tests.support.admin import TOKEN, admin_daemon
from tests.support.in_process import admin_url
from tests.support.runs import insert_run, sql
from tests.support.waiting import wait_for, wait_for_run


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, else the text
    headers: Any

    @property
    def error(self) -> str:
        assert isinstance(self.body, dict) and set(self.body) == {"error", "detail"}, self.body
        assert isinstance(self.body["error"], str) and self.body["error"]
        return self.body["error"]


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.http.request(method, self.url + path, **kwargs) as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.text()
            return Reply(response.status, body, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("POST", path, **kwargs)

    async def ok(self, path: str, **kwargs: Any) -> Any:
        """GET that must answer 200: its JSON."""
        reply = await self.get(path, **kwargs)
        assert reply.status == 200, reply
        return reply.body

    async def trigger(self, task_id: str, **body: Any) -> str:
        reply = await self.post(f"/api/tasks/{task_id}/trigger", json=body)
        assert reply.status == 201, reply
        run_id: str = reply.body["id"]
        return run_id

    async def run(self, run_id: str, **params: Any) -> dict[str, Any]:
        detail: dict[str, Any] = await self.ok(f"/api/runs/{run_id}", params=params)
        return detail

    async def run_ids(self, **params: Any) -> list[str]:
        page = await self.ok("/api/runs", params=params)
        return [run["id"] for run in page["runs"]]


@asynccontextmanager
async def api_of(daemon: Daemon, token: str | None = None) -> AsyncIterator[Api]:
    # every POST as JSON, as the endpoint requires of a request that changes state
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession(headers=headers) as http:
        yield Api(http, admin_url(daemon))


async def wait_status(api: Api, run_id: str, *statuses: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        detail = await api.run(run_id)
        return detail if detail["run"]["status"] in statuses else None

    result: dict[str, Any] = await wait_for(check)
    return result


# tasks --------------------------------------------------------------------------------------------


class Numbers(BaseModel):
    a: int
    b: int


@task(id="adm.ok")
async def ok_task(payload: Any, ctx: Context) -> Any:
    return {"echo": payload}


@task(id="adm.add")
async def add(payload: Numbers, ctx: Context) -> dict[str, int]:
    return {"sum": payload.a + payload.b}


@task(id="adm.fail", retry=Retry(max_attempts=1))
async def fail(payload: Any, ctx: Context) -> None:
    raise RuntimeError("it broke for good")


@task(id="adm.flaky", retry=Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False))
async def flaky(payload: Any, ctx: Context) -> dict[str, int]:
    ctx.log.info("attempt begins", n=ctx.attempt)
    await ctx.set_metadata(stage=f"attempt {ctx.attempt}", progress=ctx.attempt / 2)
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    ctx.log.warning("second time lucky")
    return {"attempts": ctx.attempt}


GATES: dict[str, anyio.Event] = {}


@task(id="adm.block", retry=Retry(max_attempts=1))
async def block(payload: dict[str, str], ctx: Context) -> str:
    """Runs until the test sets its gate (payload: {"gate": name})."""
    await GATES[payload["gate"]].wait()
    return "released"


@task(id="adm.signup", on_event="user.signup")
async def signup(payload: Any, ctx: Context) -> None:
    return None


@task(id="adm.cron")
async def cron_task(payload: Any, ctx: Context) -> None:
    return None


@schedules.task(id="adm.yearly", cron="0 0 1 1 *", timezone="Europe/Paris")
async def yearly(payload: Any, ctx: Context) -> None:
    return None


ALL = [ok_task, add, fail, flaky, block, signup, cron_task, yearly]


# health, readiness --------------------------------------------------------------------------------


async def test_healthz_and_readyz_when_ready(database: str) -> None:
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        health = await api.get("/healthz")
        assert (health.status, health.body) == (200, {"status": "ok"})
        ready = await api.get("/readyz")
        assert ready.status == 200
        assert ready.body == {
            "ready": True,
            "database": True,
            "listener": True,
            "worker_lock": True,
            "reconciled": True,
            "draining": False,
        }


async def test_readyz_is_503_while_the_daemon_drains(database: str, client: Client) -> None:
    GATES["drain"] = gate = anyio.Event()
    async with admin_daemon(database, [block], shutdown_grace=30) as daemon, api_of(daemon) as api:
        run_id = await api.trigger("adm.block", payload={"gate": "drain"})
        await wait_status(api, run_id, "executing")
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.stop)  # drains: waits for the blocked attempt

            async def not_ready() -> Reply | None:
                reply = await api.get("/readyz")
                return reply if reply.status == 503 else None

            reply = await wait_for(not_ready)
            assert "draining" in reply.error
            assert reply.body["detail"]["draining"] is True
            assert reply.body["detail"]["ready"] is False
            health = await api.get("/healthz")  # alive all the same
            assert health.status == 200
            gate.set()
            released = time.monotonic()
        # the group waited for stop(): the drain ended with the attempt, not with its grace
        assert time.monotonic() - released < 5
        run = await wait_for_run(client, uuid.UUID(run_id))
    assert run.status is RunStatus.COMPLETED and run.output == "released"


# runs: list, filters, pagination ------------------------------------------------------------------


async def test_list_runs_by_every_filter(database: str, client: Client) -> None:
    async with admin_daemon(database, ALL) as daemon, api_of(daemon) as api:
        done_ab = await api.trigger("adm.ok", payload=1, tags=["a", "b"])
        done_b = await api.trigger("adm.ok", payload=2, tags=["b"], queue="special")
        failed = await api.trigger("adm.fail")
        delayed = await api.trigger("adm.ok", delay="1h")
        canceled = await api.trigger("adm.ok", delay="1h")
        assert (await api.post(f"/api/runs/{canceled}/cancel")).body["status"] == "canceled"
        for run_id in (done_ab, done_b):
            await wait_status(api, run_id, "completed")
        await wait_status(api, failed, "failed")
        await client.send_event("user.signup", {"user": 7})
        [from_event] = await wait_for(lambda: api.run_ids(event="user.signup"))
        await wait_status(api, from_event, "completed")

        async def ids(*args: tuple[str, str], **params: str) -> set[str]:
            page = await api.ok("/api/runs", params=[*args, *params.items()])
            # listings stay small: payload and output only on /api/runs/{id}
            assert all("payload" not in run and "output" not in run for run in page["runs"])
            return {run["id"] for run in page["runs"]}

        assert await ids(status="completed,failed") == {done_ab, done_b, failed, from_event}
        assert await ids(("status", "queued"), ("status", "canceled")) == {delayed, canceled}
        assert await ids(status="canceled") == {canceled}
        assert await ids(task="adm.fail") == {failed}
        assert await ids(tag="b") == {done_ab, done_b}
        assert await ids(tag="a") == {done_ab}
        assert await ids(tag="nope") == set()
        assert await ids(queue="special") == {done_b}
        assert await ids(event="user.signup") == {from_event}
        assert await ids(task="adm.ok", status="queued", tag="b") == set()
        assert await ids(task="adm.ok", tag="b", queue="default") == {done_ab}
        detail = await api.run(from_event)
        assert detail["run"]["task_id"] == "adm.signup"
        assert detail["run"]["event_id"] is not None

        # a schedule's runs
        schedule = await client.create_schedule("adm.cron", "* * * * * *")
        fired = await wait_for(lambda: ids(schedule=schedule.id))
        await client.delete_schedule(schedule.id)
        for run_id in fired:
            assert (await api.run(run_id))["run"]["schedule_id"] == schedule.id
        assert await ids(schedule="sched_none") == set()
        assert not fired & {done_ab, done_b, failed, delayed, canceled, from_event}


async def test_list_runs_created_after_and_before(database: str) -> None:
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        before = {await api.trigger("adm.ok", delay="1h") for _ in range(3)}
        moment = datetime.now(UTC) + timedelta(milliseconds=2)

        async def past_moment() -> bool:  # ids carry the millisecond they were made in
            return datetime.now(UTC) > moment + timedelta(milliseconds=2)

        await wait_for(past_moment)
        after = {await api.trigger("adm.ok", delay="1h") for _ in range(2)}
        assert set(await api.run_ids(created_after=moment.isoformat())) == after
        assert set(await api.run_ids(created_before=moment.isoformat())) == before
        paris = moment.astimezone(timezone(timedelta(hours=1)))  # same instant, other offset
        assert set(await api.run_ids(created_after=paris.isoformat())) == after
        window = {
            "created_after": (moment - timedelta(days=1)).isoformat(),
            "created_before": (moment + timedelta(days=1)).isoformat(),
        }
        assert set(await api.run_ids(**window)) == before | after
        zulu = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert set(await api.run_ids(created_before=zulu)) == before


async def test_keyset_pagination_walks_every_run_newest_first(database: str) -> None:
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        made = [await api.trigger("adm.ok", delay="1h") for _ in range(11)]
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params = {"limit": "4"} if cursor is None else {"limit": "4", "cursor": cursor}
            page = await api.ok("/api/runs", params=params)
            pages += 1
            seen += [run["id"] for run in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert cursor == page["runs"][-1]["id"]
        assert pages == 3
        assert seen == list(reversed(made))
        full = await api.ok("/api/runs", params={"limit": "11"})
        assert full["next_cursor"] is None and len(full["runs"]) == 11


async def test_pagination_is_stable_under_concurrent_inserts(database: str) -> None:
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        existing = {await api.trigger("adm.ok", delay="1h") for _ in range(40)}
        inserted: list[str] = []
        paging_done = anyio.Event()

        async def keep_inserting() -> None:
            while not paging_done.is_set():
                inserted.append(await api.trigger("adm.ok", delay="1h"))

        seen: list[str] = []
        async with anyio.create_task_group() as group:
            group.start_soon(keep_inserting)
            cursor: str | None = None
            while True:
                # new runs arrive between every two pages
                count = len(inserted)
                await wait_for(partial(_more, inserted, count))
                params = {"limit": "6", **({"cursor": cursor} if cursor else {})}
                page = await api.ok("/api/runs", params=params)
                ids = [run["id"] for run in page["runs"]]
                assert ids == sorted(ids, reverse=True), "newest first on every page"
                seen += ids
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            paging_done.set()
        assert len(inserted) >= 7  # at least one before each of the 7+ pages
        duplicates = [run_id for run_id, n in Counter(seen).items() if n > 1]
        assert duplicates == []
        assert existing <= set(seen), "every run that existed at the start is listed"
        assert set(seen) - existing <= set(inserted)


async def _more(items: list[str], count: int) -> bool:
    return len(items) > count


# one run ------------------------------------------------------------------------------------------


async def test_run_detail_attempts_error_output_metadata_logs(database: str) -> None:
    async with admin_daemon(database, ALL) as daemon, api_of(daemon) as api:
        flaky_id = await api.trigger("adm.flaky", payload={"x": 1})
        failed_id = await api.trigger("adm.fail")
        detail = await wait_status(api, flaky_id, "completed")
        failed = await wait_status(api, failed_id, "failed")
        truncated = await api.run(flaky_id, log_limit="1")
    run = detail["run"]
    assert run["output"] == {"attempts": 2}
    assert run["payload"] == {"x": 1}
    assert run["attempt"] == 2 and run["max_attempts"] == 2
    assert run["error"] is None  # the last attempt's
    assert run["metadata"] == {"stage": "attempt 2", "progress": 1.0}
    first, second = run["attempts"]
    assert (first["attempt"], first["outcome"]) == (1, "failed")
    assert first["error"]["type"] == "ValueError"
    assert "first attempt fails" in first["error"]["message"]
    assert (second["attempt"], second["outcome"]) == (2, "completed")
    assert second["error"] is None
    assert first["worker_id"] == second["worker_id"] == str(daemon.worker_id)
    messages = [(line["attempt"], line["level"], line["message"]) for line in detail["logs"]]
    assert messages == [
        (1, "info", "attempt begins"),
        (2, "info", "attempt begins"),
        (2, "warning", "second time lucky"),
    ]
    assert detail["logs"][0]["fields"] == {"n": 1}
    assert detail["logs_truncated"] is False
    assert len(truncated["logs"]) == 1 and truncated["logs_truncated"] is True
    assert detail["parent"] is None and detail["children"] == []

    bad = failed["run"]
    assert bad["status"] == "failed" and bad["output"] is None
    assert bad["error"]["type"] == "RuntimeError"
    assert "it broke for good" in bad["error"]["message"]
    assert [a["outcome"] for a in bad["attempts"]] == ["failed"]


async def test_run_detail_links_parent_and_children(database: str, db: asyncpg.Connection) -> None:
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        parent_id = await api.trigger("adm.ok", delay="1h")
        # child runs come with a later issue: made here as their producer will write them
        children = [
            str(
                await insert_run(
                    db,
                    task_id="adm.ok",
                    parent_id=uuid.UUID(parent_id),
                    status="queued",
                    run_at=sql("now() + interval '1 day'"),
                )
            )
            for _ in range(2)
        ]
        parent = await api.run(parent_id)
        child = await api.run(children[1])
    assert parent["children"] == [
        {"id": child_id, "task_id": "adm.ok", "status": "queued"} for child_id in children
    ]
    assert parent["parent"] is None
    assert child["parent"] == {"id": parent_id, "task_id": "adm.ok", "status": "queued"}
    assert child["run"]["parent_id"] == parent_id
    assert child["children"] == []


# cancel, replay, trigger --------------------------------------------------------------------------


async def test_cancel_queued_and_executing_runs_and_replay(database: str) -> None:
    GATES["cancel"] = anyio.Event()  # never set: the run ends only through the cancel
    async with admin_daemon(database, [ok_task, block]) as daemon, api_of(daemon) as api:
        queued = await api.trigger("adm.ok", payload={"n": 1}, delay="1h", tags=["t"])
        reply = await api.post(f"/api/runs/{queued}/cancel")
        assert (reply.status, reply.body) == (200, {"id": queued, "status": "canceled"})
        assert (await api.run(queued))["run"]["status"] == "canceled"

        running = await api.trigger("adm.block", payload={"gate": "cancel"})
        await wait_status(api, running, "executing")
        reply = await api.post(f"/api/runs/{running}/cancel")
        assert (reply.status, reply.body) == (200, {"id": running, "status": "executing"})
        detail = await wait_status(api, running, "canceled")
        assert [a["outcome"] for a in detail["run"]["attempts"]] == ["canceled"]

        reply = await api.post(f"/api/runs/{queued}/replay")
        assert reply.status == 201
        assert reply.body["replayed_from"] == queued
        copy_id = reply.body["id"]
        assert copy_id != queued
        replayed = await wait_status(api, copy_id, "completed")
    assert replayed["run"]["replayed_from"] == queued
    assert replayed["run"]["payload"] == {"n": 1}
    assert replayed["run"]["tags"] == ["t"]
    assert replayed["run"]["output"] == {"echo": {"n": 1}}


async def test_trigger_with_every_option(database: str) -> None:
    async with admin_daemon(database, [ok_task, add]) as daemon, api_of(daemon) as api:
        now = datetime.now(UTC)
        first = await api.trigger(
            "adm.ok",
            payload={"k": [1, "two", None]},
            delay="1h",
            priority=7,
            max_attempts=5,
            tags=["x", "y"],
            queue="special",
            ttl="2h",
        )
        at = (now + timedelta(days=1)).astimezone(timezone(timedelta(hours=2)))
        second = await api.trigger("adm.ok", run_at=at.isoformat(), ttl=90)
        third = await api.trigger("adm.ok", delay=3600.5)
        typed = await api.trigger("adm.add", payload={"a": 2, "b": 3})
        one = (await api.run(first))["run"]
        two = (await api.run(second))["run"]
        three = (await api.run(third))["run"]
        added = await wait_status(api, typed, "completed")
    later = datetime.now(UTC)
    assert one["status"] == "queued"
    assert one["payload"] == {"k": [1, "two", None]}
    assert one["priority"] == 7 and one["max_attempts"] == 5
    assert one["tags"] == ["x", "y"] and one["queue"] == "special"
    run_at = datetime.fromisoformat(one["run_at"])
    assert now + timedelta(hours=1) <= run_at + timedelta(seconds=1)
    assert run_at <= later + timedelta(hours=1, seconds=1)
    expires = datetime.fromisoformat(one["expires_at"])
    assert now + timedelta(hours=2) <= expires + timedelta(seconds=1)
    assert expires <= later + timedelta(hours=2, seconds=1)
    assert datetime.fromisoformat(two["run_at"]) == at
    assert two["queue"] == "default" and two["priority"] == 0 and two["tags"] == []
    assert two["max_attempts"] == 3  # the task's retry policy
    assert datetime.fromisoformat(two["expires_at"]) <= later + timedelta(seconds=91)
    three_at = datetime.fromisoformat(three["run_at"])
    assert now + timedelta(seconds=3600) <= three_at + timedelta(seconds=1)
    assert added["run"]["output"] == {"sum": 5}


# the lists ----------------------------------------------------------------------------------------


async def test_tasks_queues_schedules_workers(database: str, client: Client) -> None:
    async with admin_daemon(database, ALL, concurrency=3) as daemon, api_of(daemon) as api:
        for _ in range(2):
            await api.trigger("adm.ok", delay="1h", queue="later")
        created = await client.create_schedule("adm.cron", "0 9 * * 1-5", timezone="UTC")
        tasks = {t["id"]: t for t in (await api.ok("/api/tasks"))["tasks"]}
        queues = {q["queue"]: q for q in (await api.ok("/api/queues"))["queues"]}
        schedule_list = (await api.ok("/api/schedules"))["schedules"]
        workers = (await api.ok("/api/workers"))["workers"]
    assert set(tasks) == {t.id for t in ALL} | {"taskd.webhook"}  # every daemon sends webhooks
    assert all(t["served_here"] for t in tasks.values())
    assert tasks["adm.fail"]["max_attempts"] == 1 and tasks["adm.ok"]["max_attempts"] == 3
    assert tasks["adm.ok"]["queue"] == "default"
    assert tasks["adm.signup"]["events"] == ["user.signup"]
    assert tasks["adm.yearly"]["schedule"] == {
        "cron": "0 0 1 1 *",
        "timezone": "Europe/Paris",
        "catch_up": "latest",
    }
    assert tasks["adm.ok"]["schedule"] is None
    assert queues["later"]["delayed"] == 2 and queues["later"]["due"] == 0
    assert queues["later"]["oldest_due"] is None
    by_id = {s["id"]: s for s in schedule_list}
    assert by_id[created.id]["task_id"] == "adm.cron"
    assert by_id[created.id]["cron"] == "0 9 * * 1-5"
    assert by_id[created.id]["active"] is True and by_id[created.id]["declared"] is False
    declared = [s for s in schedule_list if s["task_id"] == "adm.yearly"]
    assert len(declared) == 1 and declared[0]["declared"] is True
    assert declared[0]["next_fire_at"] is not None
    [worker] = workers
    assert worker["id"] == str(daemon.worker_id)
    assert worker["concurrency"] == 3
    assert set(worker["tasks"]) == {t.id for t in ALL} | {"taskd.webhook"}


# metrics ------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_after_a_known_workload(database: str) -> None:
    async with (
        admin_daemon(database, [ok_task, fail, flaky], concurrency=4) as daemon,
        api_of(daemon) as api,
    ):
        ids = [await api.trigger("adm.ok", payload=n) for n in range(5)]
        ids += [await api.trigger("adm.fail") for _ in range(2)]
        ids.append(await api.trigger("adm.flaky"))
        for _ in range(3):
            await api.trigger("adm.ok", delay="1h", queue="later")
        for run_id in ids:
            await wait_status(api, run_id, "completed", "failed")

        expected = {
            ("taskd_runs_started_total", "adm.ok"): 5,
            ("taskd_runs_started_total", "adm.fail"): 2,
            ("taskd_runs_started_total", "adm.flaky"): 2,
            ("taskd_runs_completed_total", "adm.ok"): 5,
            ("taskd_runs_completed_total", "adm.flaky"): 1,
            ("taskd_runs_failed_total", "adm.fail"): 2,
            ("taskd_runs_retried_total", "adm.flaky"): 1,
            ("taskd_attempt_duration_seconds_count", "adm.ok"): 5,
            ("taskd_attempt_duration_seconds_count", "adm.fail"): 2,
            ("taskd_attempt_duration_seconds_count", "adm.flaky"): 2,
        }

        async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            reply = await api.get("/metrics")
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            samples = parse_metrics(reply.body)
            counted = {key: samples.get((key[0], (("task", key[1]),))) for key in expected}
            return samples if counted == expected else None

        samples = await wait_for(scrape)
    assert ("taskd_runs_failed_total", (("task", "adm.ok"),)) not in samples
    assert ("taskd_runs_retried_total", (("task", "adm.ok"),)) not in samples
    assert samples[("taskd_pool_limit", ())] == 4
    assert samples[("taskd_ready", ())] == 1
    depth = {
        state: samples[("taskd_queue_depth", (("queue", "later"), ("state", state)))]
        for state in ("due", "delayed", "executing")
    }
    assert depth == {"due": 0, "delayed": 3, "executing": 0}
    assert samples[("taskd_queue_oldest_age_seconds", (("queue", "later"),))] == 0
    buckets = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "taskd_attempt_duration_seconds_bucket" and ("task", "adm.ok") in labels
    }
    assert buckets[(("le", "+Inf"), ("task", "adm.ok"))] == 5


# auth ---------------------------------------------------------------------------------------------


def concrete(path: str) -> str:
    return path.replace("{id}", "adm.ok" if "/tasks/" in path else str(uuid.uuid4()))


async def test_every_route_but_healthz_needs_the_token(database: str) -> None:
    # /api/session is public (the console's login); tests/daemon/test_admin_session.py
    routes = [(r.method, r.path) for r in ROUTES if r.path != "/api/session"]
    routes.append(("GET", "/api/openapi.json"))
    async with admin_daemon(database, [ok_task], token=TOKEN) as daemon:
        async with api_of(daemon) as anonymous, api_of(daemon, "wrong-token") as wrong:
            for method, path in routes:
                kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
                if path == "/healthz":
                    assert (await anonymous.get(path)).status == 200
                    continue
                for api in (anonymous, wrong):
                    reply = await api.call(method, concrete(path), **kwargs)
                    assert reply.status == 401, (method, path, reply)
                    assert reply.error == "missing or wrong bearer token"
                    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            # other schemes and near misses
            for value in (TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"bearer{TOKEN}"):
                reply = await anonymous.get("/api/runs", headers={"Authorization": value})
                assert reply.status == 401, value
            reply = await anonymous.get("/api/nothing/here")
            assert reply.status == 401  # unknown paths tell nothing either
        async with api_of(daemon, TOKEN) as api:
            for method, path in routes:
                if path == "/api/stream":
                    continue  # never ends; its auth is checked above
                kwargs = {"json": {}} if method == "POST" else {}
                reply = await api.call(method, concrete(path), **kwargs)
                # an empty body creates no schedule: refused after the token let it through
                refused = (method, path) == ("POST", "/api/schedules") and reply.status == 422
                # nor does a bulk action name its action (and the count its page confirmed)
                refused |= path == "/api/runs/bulk" and reply.status in (400, 422)
                # nor a webhook without its name, url and events
                refused |= (method, path) == ("POST", "/api/webhooks") and reply.status == 422
                assert reply.status in (200, 201, 404) or refused, (method, path, reply)
        url = admin_url(daemon)
        raw = await raw_request(url, b"GET /api/runs", b"Authorization: Bearer \xed\xa0\x80\xff")
    assert raw.startswith(b"HTTP/1.1 401"), raw


async def raw_request(url: str, request_line: bytes, header: bytes) -> bytes:
    """A request whose header bytes no HTTP client would send (not UTF-8)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(
            request_line + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n"
        )
        data = b""
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    return data


def test_binding_beyond_loopback_needs_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKD_ADMIN__TOKEN", raising=False)
    monkeypatch.delenv("TASKD_ADMIN__LISTEN", raising=False)
    for listen in ("0.0.0.0:8787", "192.168.1.10:8787", "[::]:8787", "example.org:80"):
        with pytest.raises(ConfigError, match=r"admin\.token"):
            load_settings(None, admin={"listen": listen})
        settings = load_settings(None, admin={"listen": listen, "token": "t"})
        assert settings.admin.listen == listen
    for listen in ("127.0.0.1:8787", "[::1]:0", "localhost:8787"):
        assert load_settings(None, admin={"listen": listen}).admin.token == ""
    config = tmp_path / "taskd.toml"
    config.write_text('[admin]\nlisten = "0.0.0.0:8787"\n')
    with pytest.raises(ConfigError, match=r"admin\.token"):
        load_settings(config)


# errors -------------------------------------------------------------------------------------------


async def test_error_statuses(database: str) -> None:
    async with admin_daemon(database, [ok_task, add], max_payload_bytes=200) as daemon:
        async with api_of(daemon) as api:
            done = await api.trigger("adm.ok", payload="x")
            await wait_status(api, done, "completed")

            # 400: a filter that is not valid
            for params in (
                {"status": "bogus"},
                {"status": "queued,bogus"},
                {"cursor": "not-a-uuid"},
                {"created_after": "2026-11-23T09:00:00"},  # naive
                {"created_before": "yesterday"},
                {"limit": "0"},
                {"limit": "501"},
                {"limit": "ten"},
                {"unknown": "1"},
            ):
                reply = await api.get("/api/runs", params=params)
                assert reply.status == 400, (params, reply)
                assert next(iter(params)) in reply.error
                assert isinstance(reply.body["detail"], list)
            reply = await api.get(f"/api/runs/{done}", params={"log_limit": "-1"})
            assert reply.status == 400 and "log_limit" in reply.error

            # 404: no such run (or not a run id), no such task
            for run_path in (f"/api/runs/{uuid.uuid4()}", "/api/runs/not-a-run-id"):
                reply = await api.get(run_path)
                assert reply.status == 404 and "no run" in reply.error
                for action in ("cancel", "replay"):
                    reply = await api.post(f"{run_path}/{action}")
                    assert reply.status == 404 and "no run" in reply.error
            reply = await api.post("/api/tasks/adm.nope/trigger", json={})
            assert reply.status == 404 and "adm.nope" in reply.error
            reply = await api.get("/api/nothing/here")
            assert reply.status == 404 and reply.error

            # 405: a route with another method
            reply = await api.call("DELETE", "/api/runs")
            assert reply.status == 405 and reply.error

            # 409: cancel of a finished run
            reply = await api.post(f"/api/runs/{done}/cancel")
            assert reply.status == 409 and reply.error

            # 413: a payload over [tasks] max_payload_bytes (200 here)
            reply = await api.post("/api/tasks/adm.ok/trigger", json={"payload": "x" * 300})
            assert reply.status == 413 and "over the limit of 200 bytes" in reply.error
            big = b'{"payload": "' + b"x" * 70_000 + b'"}'
            reply = await api.post("/api/tasks/adm.ok/trigger", data=big)
            assert reply.status == 413 and reply.error  # refused before it is read whole

            # 422: the payload does not fit the task's model
            reply = await api.post("/api/tasks/adm.add/trigger", json={"payload": {"a": 1}})
            assert reply.status == 422 and "adm.add" in reply.error
            assert reply.body["detail"][0]["loc"] == ["b"]
            reply = await api.post("/api/tasks/adm.add/trigger", json={"payload": "1+1"})
            assert reply.status == 422

            # 422: options that do not fit
            for body, where in (
                ({"delay": "soon"}, "delay"),
                ({"ttl": "-5s"}, "ttl"),
                ({"run_at": "2026-11-23T09:00:00"}, "run_at"),
                ({"run_at": "tomorrow"}, "run_at"),
                ({"priority": 2**31}, "priority"),
                ({"max_attempts": 0}, "max_attempts"),
                ({"tags": "a,b"}, "tags"),
                ({"queue": ""}, "queue"),
                ({"retries": 3}, "retries"),
            ):
                reply = await api.post("/api/tasks/adm.ok/trigger", json=body)
                assert reply.status == 422, (body, reply)
                assert reply.error.startswith(where), (body, reply.error)

            # 400: a body that is not JSON
            reply = await api.post("/api/tasks/adm.ok/trigger", data=b"{nope")
            assert reply.status == 400 and "not JSON" in reply.error
            # nothing above made a run
            assert await api.run_ids() == [done]


async def test_values_postgresql_refuses_are_4xx_not_5xx(database: str) -> None:
    """Found by schemathesis: each of these was a 503 ("database unavailable") or a 500."""
    async with admin_daemon(database, [ok_task]) as daemon, api_of(daemon) as api:
        for name in ("task", "tag", "queue", "schedule", "event"):
            reply = await api.get("/api/runs", params={name: "a\x00b"})
            assert reply.status == 400 and reply.error.startswith(name), reply
        for body in (
            {"payload": "a\x00b"},
            {"payload": {"nested": [{"k\x00": 1}]}},
            {"tags": ["ok", "a\x00"]},
            {"queue": "q\x00"},
            {"delay": 1e300},
            {"delay": "nan"},
            {"delay": "inf"},
            {"delay": 3e11},  # year 11000: a run no datetime can read back
            {"ttl": "1000000w"},
            {"run_at": "9999-12-31T23:00:00-05:00"},
            {"run_at": "0001-01-01T00:00:00+05:00"},
        ):
            reply = await api.post("/api/tasks/adm.ok/trigger", json=body)
            assert reply.status == 422, (body, reply)
            assert reply.error.startswith(next(iter(body))), (body, reply.error)
        deep: Any = None
        for _ in range(300):
            deep = [deep]
        reply = await api.post("/api/tasks/adm.ok/trigger", json={"payload": deep})
        assert reply.status == 422
        # past the year 9000 is refused; the edges that fit are taken
        late = await api.post("/api/tasks/adm.ok/trigger", json={"run_at": "9999-12-31T00:00:00Z"})
        assert late.status == 422 and "year 9000" in late.error
        edge = await api.trigger("adm.ok", run_at="8999-12-31T00:00:00Z", delay="100d")
        assert (await api.run(edge))["run"]["run_at"].startswith("8999-12-31")
        assert (await api.ok("/api/runs"))["runs"][0]["id"] == edge


# OpenAPI ------------------------------------------------------------------------------------------


def component_validator(document: dict[str, Any], name: str) -> Any:
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


async def test_openapi_document_lists_every_route_and_responses_fit_it(database: str) -> None:
    async with admin_daemon(database, [ok_task, flaky], token=TOKEN) as daemon:
        async with api_of(daemon, TOKEN) as api:
            document = await api.ok("/api/openapi.json")
            flaky_id = await api.trigger("adm.flaky", tags=["t"])
            await wait_status(api, flaky_id, "completed")
            await api.trigger("adm.ok", delay="1h")
            responses = {
                "RunPage": await api.ok("/api/runs"),
                "RunDetail": await api.run(flaky_id),
                "TaskList": await api.ok("/api/tasks"),
                "QueueList": await api.ok("/api/queues"),
                "WorkerList": await api.ok("/api/workers"),
                "ScheduleList": await api.ok("/api/schedules"),
                "Readiness": await api.ok("/readyz"),
                "ErrorBody": (await api.get("/api/runs", params={"limit": "0"})).body,
            }
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    broken = copy.deepcopy(document)
    broken["paths"]["/healthz"]["get"]["responses"] = "none"
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()

    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert listed == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        assert ("security" in operation) == (not route.public)
        if not route.public:
            assert "401" in operation["responses"]
    runs = document["paths"]["/api/runs"]["get"]
    assert {p["name"] for p in runs["parameters"]} == {
        "status",
        "task",
        "tag",
        "queue",
        "schedule",
        "event",
        "created_after",
        "created_before",
        "cursor",
        "limit",
        "key",
        "error_group",
        "version",
        "search",
        "search_in",
    }
    assert all("null" not in str(p["schema"]) for p in runs["parameters"]), (
        "a query string has no null"
    )
    trigger = document["paths"]["/api/tasks/{id}/trigger"]["post"]
    assert set(trigger["responses"]) == {"201", "400", "401", "403", "404", "413", "415", "422"}

    for name, body in responses.items():
        errors = [str(e) for e in component_validator(document, name).iter_errors(body)]
        assert errors == [], (name, errors)
    assert len(responses["RunDetail"]["run"]["attempts"]) == 2
    assert responses["RunPage"]["runs"], "the lists hold data to check"

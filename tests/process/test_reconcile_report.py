"""The reconciliation report (issue 12, item 11): each daemon's start-up reconciliation and each
rescue that finds something write one log line with counts and the worker's last_report, which
`taskd status` and /api/workers show."""

from __future__ import annotations

import signal
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson

from taskd import Client, Context, task
from taskd.worker.report import MAX_IDS, MAX_TASKS, Report
from tests.support.cli import taskd
from tests.support.daemon_process import daemons
from tests.support.in_process import admin_url
from tests.support.paths import ROOT
from tests.support.tasks.failure_hook import CREATE_HOOK_CALLS
from tests.support.waiting import wait_for

MODULE = {"TASKD_TASKS__MODULES": '["tests.support.tasks.failure_hook"]'}


async def taskd_status(dsn: str, *args: str) -> str:
    done = await taskd(dsn, "status", *args, cwd=ROOT, timeout=60)
    assert done.code == 0, str(done)
    return done.out


async def test_startup_after_a_sigkill_reports_the_runs_it_handed_back(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    await db.execute(CREATE_HOOK_CALLS)
    async with daemons() as group:
        first = await group.start(database, **MODULE)
        await first.ready()
        ids = [await client.trigger("hook.slow", {"seconds": 600}) for _ in range(5)]

        async def executing() -> bool:
            count = await db.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE status = 'executing' AND id = ANY($1)",
                ids,
            )
            return bool(count == len(ids))

        await wait_for(executing, timeout=15)
        first.process.send_signal(signal.SIGKILL)
        await first.stop(signum=None)

        second = await group.start(database, **MODULE)
        await second.ready()
        [line] = second.find(lambda r: r["msg"].startswith("reconciled:"))
        assert line["rescued"] == 5 and line["trigger"] == "startup", line
        assert line["counts"] == {
            "handed_back": 5,
            "failed": 0,
            "canceled": 0,
            "expired": 0,
            "unknown_task": 0,
            "version_unavailable": 0,
        }
        assert line["by_task"] == {"handed_back": {"hook.slow": 5}}
        assert sorted(line["run_ids"]["handed_back"]["hook.slow"]) == sorted(str(i) for i in ids)
        assert line["gone_worker_count"] == 1 and first.worker_id in line["gone_workers"][0]
        assert "5 handed back" in line["msg"]

        stored = await db.fetchval(
            "SELECT last_report FROM taskd.workers WHERE id = $1::text::uuid", second.worker_id
        )
        report = orjson.loads(stored)
        assert report["counts"]["handed_back"] == 5 and report["trigger"] == "startup"

        # taskd status, as text and JSON
        text = await taskd_status(database)
        assert "last reconciliation report of each worker" in text, text
        reports = text.split("last reconciliation report of each worker", 1)[1]
        [row] = [ln for ln in reports.splitlines() if ln.startswith(second.worker_id)]
        assert "startup" in row and "5 handed back" in row and "hook.slow 5" in row, text
        health = orjson.loads(await taskd_status(database, "--json"))
        [worker] = [w for w in health["workers"] if w["id"] == second.worker_id]
        assert worker["last_report"]["counts"]["handed_back"] == 5

        # /api/workers of the second daemon
        [announce] = second.find(lambda r: r["msg"].startswith("admin endpoint on "))
        url = announce["msg"].removeprefix("admin endpoint on ")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/workers") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
        [listed] = [w for w in body["workers"] if w["id"] == second.worker_id]
        assert listed["last_report"]["counts"]["handed_back"] == 5
        assert sorted(listed["last_report"]["run_ids"]["handed_back"]["hook.slow"]) == sorted(
            str(i) for i in ids
        )


@task(id="report.echo")
async def echo(payload: dict, ctx: Context) -> dict:
    return payload


async def test_a_rescue_that_finds_something_replaces_the_report(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([echo], heartbeat=0.2, lease=1) as daemon:
        # started on an empty database: the start-up report says so
        stored = await db.fetchval(
            "SELECT last_report FROM taskd.workers WHERE id = $1", daemon.worker_id
        )
        assert orjson.loads(stored)["trigger"] == "startup"
        assert orjson.loads(stored)["counts"]["handed_back"] == 0

        # a run of a task nobody serves, past its ttl: the expirer ends it, the next rescue
        # pass reports it
        run_id = await client.trigger("report.nobody", {}, ttl="1h")
        await db.execute(
            "UPDATE taskd.runs SET expires_at = now() - interval '1 second' WHERE id = $1", run_id
        )

        async def reported() -> dict[str, Any] | None:
            value = await db.fetchval(
                "SELECT last_report FROM taskd.workers WHERE id = $1", daemon.worker_id
            )
            report: dict[str, Any] = orjson.loads(value)
            return report if report["trigger"] == "rescue" else None

        report = await wait_for(reported, timeout=10)
        assert report["counts"]["expired"] == 1
        assert report["by_task"] == {"expired": {"report.nobody": 1}}
        assert report["run_ids"] == {"expired": {"report.nobody": [str(run_id)]}}

        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{admin_url(daemon)}/api/workers") as response,
        ):
            body = await response.json()
        [listed] = [w for w in body["workers"] if w["id"] == str(daemon.worker_id)]
        assert listed["last_report"]["counts"]["expired"] == 1


def test_a_report_stays_small_whatever_it_found() -> None:
    report = Report("rescue")
    for n in range(5000):
        report.add("handed_back", uuid.uuid4(), f"task-{n % 100}")
    fields = report.fields()
    assert fields["counts"]["handed_back"] == 5000  # exact
    assert sum(len(ids) for ids in fields["run_ids"]["handed_back"].values()) == MAX_IDS
    per_task = fields["by_task"]["handed_back"]
    assert len(per_task) == MAX_TASKS + 1 and sum(per_task.values()) == 5000
    assert per_task["(other tasks)"] == 5000 - 50 * MAX_TASKS
    assert len(orjson.dumps(report.stored())) < 4096

"""Versions in the admin API and the metrics (README: "Versions: runs pinned to their code"):
a run shows the version that started it, ``/api/runs?version=`` filters by it, an empty
version is a 400, and ``/metrics`` names the version of each task the daemon serves."""

from __future__ import annotations

from typing import Any

import aiohttp

from taskd import Client, Context, RunStatus, task
from tests.support.in_process import admin_url
from tests.support.waiting import wait_for_run


@task(id="versioned.own", version="3.1.4")
async def own(payload: Any, ctx: Context) -> Any:
    return payload


@task(id="versioned.deployed")
async def deployed(payload: Any, ctx: Context) -> Any:
    return payload


async def test_runs_carry_their_version_and_the_api_filters_by_it(
    start_daemon: Any, client: Client
) -> None:
    async with start_daemon([own, deployed], version="2026.12.2") as daemon:
        url = admin_url(daemon)
        first = await client.trigger("versioned.own", {"n": 1})
        second = await client.trigger("versioned.deployed", {"n": 2})
        for run_id in (first, second):
            run = await wait_for_run(client, run_id)
            assert run.status is RunStatus.COMPLETED, run
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/runs", params={"version": "3.1.4"}) as reply:
                assert reply.status == 200, await reply.text()
                listed = (await reply.json())["runs"]
            async with http.get(f"{url}/api/runs/{second}") as reply:
                shown = (await reply.json())["run"]
            async with http.get(f"{url}/api/runs", params={"version": ""}) as reply:
                refused = (reply.status, await reply.json())
            async with http.get(f"{url}/metrics") as reply:
                metrics = await reply.text()
    assert [(r["id"], r["version"]) for r in listed] == [(str(first), "3.1.4")]
    assert shown["version"] == "2026.12.2"
    assert refused[0] == 400 and refused[1]["error"].startswith("version: "), refused
    assert 'taskd_task_version_info{task="versioned.own",version="3.1.4"} 1.0' in metrics
    assert 'taskd_task_version_info{task="versioned.deployed",version="2026.12.2"} 1.0' in metrics

"""The admin API takes a trigger's retry and max_duration and shows them in the run."""

from __future__ import annotations

import aiohttp

from taskd import Context, Retry, task
from tests.support.in_process import admin_url


@task(id="adm-retry", retry=Retry(max_attempts=2, min_delay=3600, max_delay=3600))
async def fails(payload: None, ctx: Context) -> None:
    raise ConnectionError("down")


async def test_the_api_triggers_with_a_retry_and_shows_it(start_daemon) -> None:
    headers = {"Content-Type": "application/json"}
    async with start_daemon([fails]) as daemon, aiohttp.ClientSession(headers=headers) as http:
        url = admin_url(daemon)
        body = {"retry": {"max_attempts": 4, "min_delay": "10s", "jitter": False}}
        async with http.post(
            f"{url}/api/tasks/adm-retry/trigger", json={**body, "max_duration": "2m"}
        ) as reply:
            assert reply.status == 201, await reply.text()
            run_id = (await reply.json())["id"]
        async with http.get(f"{url}/api/runs/{run_id}") as reply:
            run = (await reply.json())["run"]
        async with http.post(
            f"{url}/api/tasks/adm-retry/trigger", json={"retry": {"min_delay": "soon"}}
        ) as reply:
            refused = (reply.status, await reply.json())
    assert run["max_attempts"] == 4
    assert run["retry"] == {"min_delay": 10.0, "jitter": False}
    assert run["max_duration"] == 120.0
    assert refused[0] == 422 and "retry.min_delay: not a duration" in refused[1]["error"]

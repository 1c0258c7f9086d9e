"""Every admin response is bounded (review L13): a run's detail carries at most 1,000 log
lines, children and steps, and the unpaginated lists at most 1,000 entries, each saying when
there are more; asking for more log lines is refused.

The rows are seeded by SQL, in exact numbers, for a task no daemon serves (nothing runs them).
"""

from __future__ import annotations

import uuid

import aiohttp
import asyncpg

from taskd import Context, task
from tests.support.in_process import admin_url, running_daemon
from tests.support.runs import insert_run, insert_runs, sql


@task(id="bounds.echo")
async def echo(payload: object, ctx: Context) -> object:
    return payload


async def test_run_detail_and_lists_are_capped(database: str, db: asyncpg.Connection) -> None:
    parent = uuid.uuid4()
    await insert_run(db, id=parent, task_id="bounds.unserved", status="waiting")
    # 1,001 children, in 1,001 queues, and 1,001 recorded steps of the parent
    await insert_runs(
        db,
        1001,
        task_id="bounds.unserved",
        queue=sql("'q' || n"),
        parent_id=parent,
        run_at=sql("now() + interval '1 day'"),
    )
    await db.execute(
        """INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt,
                                    started_at, finished_at)
           SELECT $1, 'step ' || n, 'completed', to_jsonb(n), 1, 1,
                  now() + n * interval '1 ms', now() + n * interval '1 ms'
             FROM generate_series(1, 1001) n""",
        parent,
    )
    async with running_daemon(database, [echo]) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)

        async def get(path: str, **params: str) -> tuple[int, dict]:
            async with http.get(url + path, params=params) as response:
                return response.status, await response.json()

        status, detail = await get(f"/api/runs/{parent}")
        assert status == 200
        assert (len(detail["children"]), detail["children_truncated"]) == (1000, True)
        assert (len(detail["run"]["steps"]), detail["steps_truncated"]) == (1000, True)
        assert detail["run"]["steps"][0]["name"] == "step 1", "the first steps, in order"

        status, queues = await get("/api/queues")
        assert status == 200
        assert (len(queues["queues"]), queues["truncated"]) == (1000, True)

        status, most = await get(f"/api/runs/{parent}", log_limit="1000")
        assert status == 200 and most["logs_truncated"] is False
        status, refused = await get(f"/api/runs/{parent}", log_limit="1001")
        assert status == 400 and refused["error"].startswith("log_limit"), refused

        child = detail["children"][0]["id"]
        status, small = await get(f"/api/runs/{child}")
        assert status == 200
        assert (small["children_truncated"], small["steps_truncated"]) == (False, False)
        status, tasks = await get("/api/tasks")
        assert status == 200 and tasks["truncated"] is False
        status, schedules = await get("/api/schedules")
        assert status == 200 and schedules["truncated"] is False

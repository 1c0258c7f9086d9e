"""/metrics stays bounded whatever queue names producers choose (review L13)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import asyncpg

from taskd import Context, Queue, task
from taskd.admin.metrics import MAX_QUEUE_SERIES, OTHER_QUEUES
from tests.support.in_process import admin_url
from tests.support.runs import each, insert_runs


@task(id="metrics.declared", queue=Queue("declared-quiet"))
async def declared(payload: object, ctx: Context) -> None:
    return None


DEPTH = re.compile(r'^taskd_queue_depth\{queue="([^"]*)",state="(\w+)"\} ([0-9.e+]+)$', re.M)


async def test_queue_series_are_capped_and_the_rest_summed(
    db: asyncpg.Connection, start_daemon: Any
) -> None:
    # 150 producer-chosen queues (no daemon serves their task, so the runs stay queued), the
    # busiest with the most runs; one declared queue with no run at all
    queues = [f"q-{q}" for q in range(1, 151) for _ in range(q)]
    await insert_runs(db, len(queues), task_id="unserved", queue=each(queues))
    total = await db.fetchval("SELECT count(*) FROM taskd.runs")
    async with start_daemon([declared]) as daemon:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{admin_url(daemon)}/metrics") as reply,
        ):
            assert reply.status == 200
            text = await reply.text()
    due = {queue: float(v) for queue, state, v in DEPTH.findall(text) if state == "due"}
    assert len(due) == MAX_QUEUE_SERIES, sorted(due)
    assert "declared-quiet" in due, "a queue declared in code keeps its series"
    assert "q-150" in due and "q-1" not in due, "the busiest keep theirs"
    assert OTHER_QUEUES in due and due[OTHER_QUEUES] > 0
    assert sum(due.values()) == total, "the runs of the queues past the cap are summed, not lost"

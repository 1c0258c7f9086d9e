"""Tasks for the fleet limit tests (loaded by `taskd run` subprocesses through
``TASKD_TASKS__MODULES``): each records when its function ran in ``limit_spans``, created by the
test, so that the test can measure how many ran at once.

A function's span lies inside the slot its run held (claimed before, released after), so the
overlap of spans can only understate the overlap of slots: a test that finds spans over the
limit has found a real breach.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import anyio

from taskd import Context, Queue, Rate, task
from taskd.sdk.current import current_client

CREATE_SPANS = """
CREATE TABLE IF NOT EXISTS limit_spans (
    run_id     uuid NOT NULL,
    key        text,
    worker_pid int NOT NULL,
    started    float8 NOT NULL,
    ended      float8 NOT NULL
)
"""

KEYED = Queue("limits-keyed", concurrency=3, concurrency_limit_per_key=1)
RATED = Queue("limits-rated", rate_limit=Rate(20, per="1s"))

_random = random.Random(os.getpid())


async def _span(ctx: Context, key: str | None, seconds: float) -> None:
    started = time.time()
    await anyio.sleep(seconds)
    ended = time.time()
    await current_client().pool.execute(
        "INSERT INTO limit_spans VALUES ($1, $2, $3, $4, $5)",
        ctx.run_id,
        key,
        os.getpid(),
        started,
        ended,
    )


@task(id="limits.keyed", queue=KEYED)
async def keyed(payload: dict[str, Any], ctx: Context) -> None:
    await _span(ctx, payload["key"], _random.uniform(0.002, 0.015))


@task(id="limits.rated", queue=RATED)
async def rated(payload: Any, ctx: Context) -> None:
    await _span(ctx, None, 0.001)

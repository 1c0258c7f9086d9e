"""Tasks for tests/process/test_fleet_four_daemons.py (loaded by `taskd run` subprocesses through
``TASKD_TASKS__MODULES``): each writes one row per execution of its function in ``fleet_effects``,
created by the test, so that the test can count how many times each run's body ran.

Three kinds of run drained by four daemons at once: ``fleet.free`` (the default queue, no
limit), ``fleet.keyed`` (a queue of concurrency 8, at most 2 at a time per concurrency key) and
``fleet.rated`` (a queue of 100 starts per second).
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio

from taskd import Context, Queue, Rate, task
from taskd.sdk.current import current_client

CREATE_EFFECTS = """
CREATE TABLE IF NOT EXISTS fleet_effects (
    run_id     uuid NOT NULL,
    attempt    int NOT NULL,
    worker_pid int NOT NULL
)
"""

KEYED = Queue("fleet-keyed", concurrency=8, concurrency_limit_per_key=2)
RATED = Queue("fleet-rated", rate_limit=Rate(100, per="1s"))

_random = random.Random(os.getpid())


async def _effect(ctx: Context) -> None:
    await current_client().pool.execute(
        "INSERT INTO fleet_effects VALUES ($1, $2, $3)", ctx.run_id, ctx.attempt, os.getpid()
    )


@task(id="fleet.free")
async def free(payload: Any, ctx: Context) -> None:
    await _effect(ctx)


@task(id="fleet.keyed", queue=KEYED)
async def keyed(payload: Any, ctx: Context) -> None:
    # a few milliseconds of work, so that slots are held long enough to overlap
    await anyio.sleep(_random.uniform(0.001, 0.004))
    await _effect(ctx)


@task(id="fleet.rated", queue=RATED)
async def rated(payload: Any, ctx: Context) -> None:
    await _effect(ctx)

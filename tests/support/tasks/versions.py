"""Tasks for tests/process/test_versions.py, loaded by two `taskd run` processes of different
versions (``TASKD_WORKER__VERSION``): ``versions.waits`` records which process started it (a
step), waits ``payload["seconds"]`` (durably: the tests set ``wait_threshold`` 0, and skip the
wait by moving its wake-up), and returns which process started it and which one resumed it."""

from __future__ import annotations

import os
from typing import Any

from taskd import Context, task, wait


def _here() -> dict[str, Any]:
    return {"pid": os.getpid(), "version": os.environ.get("TASKD_WORKER__VERSION")}


@task(id="versions.waits")
async def waits(payload: Any, ctx: Context) -> Any:
    started = await ctx.step("started", _started)
    await wait.for_(seconds=payload.get("seconds", 1))
    return {"started": started, "resumed": _here()}


async def _started() -> dict[str, Any]:
    return _here()

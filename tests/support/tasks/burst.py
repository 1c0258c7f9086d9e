"""Tasks for tests/process/test_burst.py, loaded by `taskd run --until-empty` processes
(``TASKD_TASKS__MODULES``): ``burst.ok`` returns its payload, ``burst.fails`` raises on its
only attempt."""

from __future__ import annotations

from typing import Any

from taskd import Context, Retry, task


@task(id="burst.ok")
async def ok(payload: Any, ctx: Context) -> Any:
    return payload


@task(id="burst.fails", retry=Retry(max_attempts=1))
async def fails(payload: Any, ctx: Context) -> None:
    raise ValueError("this run fails")

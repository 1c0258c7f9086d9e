"""Polling until the database or the daemon shows what a test waits for, with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from taskd import Client, RunStatus
from taskd.models import Run


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.01
) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``.

    30 s by default: a deadline for progress on a slow, shared machine, not a wait (a condition
    that holds returns at once)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await anyio.sleep(interval)


async def wait_for_run(
    client: Client,
    run_id: uuid.UUID,
    statuses: Sequence[RunStatus] = (RunStatus.COMPLETED, RunStatus.FAILED),
    timeout: float = 30.0,
) -> Run:
    async def check() -> Run | None:
        run = await client.get_run(run_id)
        return run if run.status in statuses else None

    result: Run = await wait_for(check, timeout=timeout)
    return result

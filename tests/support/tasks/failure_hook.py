"""Tasks for tests/process/test_failure_hook.py and tests/process/test_reconcile_report.py,
loaded by real `taskd run` processes (``TASKD_TASKS__MODULES``).

``hook.exits`` kills its daemon (``os._exit``) on its only attempt; its ``on_failure`` hook
leaves a row in ``hook_calls`` (created by the test): ``(run_id, error_type, attempts, pid)``.
``hook.slow`` sleeps ``seconds`` (60 by default): runs a test catches executing.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from taskd import Context, Retry, task
from taskd.sdk.current import current_client

CREATE_HOOK_CALLS = """
CREATE TABLE IF NOT EXISTS hook_calls (
    run_id     uuid NOT NULL,
    error_type text NOT NULL,
    attempts   int NOT NULL,
    pid        int NOT NULL
)
"""


async def record_failure(payload: Any, error: BaseException, attempts: int, ctx: Context) -> None:
    await current_client().pool.execute(
        "INSERT INTO hook_calls (run_id, error_type, attempts, pid) VALUES ($1, $2, $3, $4)",
        ctx.run_id,
        getattr(error, "type", type(error).__name__),
        attempts,
        os.getpid(),
    )


@task(id="hook.exits", retry=Retry(max_attempts=1), on_failure=record_failure)
async def exits(payload: Any, ctx: Context) -> None:
    os._exit(1)  # an OOM kill, a segfault in a C extension: the daemon dies with the attempt


@task(id="hook.slow", retry=Retry(max_attempts=3, min_delay=0, max_delay=0, jitter=False))
async def slow(payload: Any, ctx: Context) -> None:
    seconds = payload.get("seconds", 60.0) if isinstance(payload, dict) else 60.0
    await anyio.sleep(seconds)

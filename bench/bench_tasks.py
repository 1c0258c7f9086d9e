"""taskd tasks used by bench/throughput.py (loaded by the daemon via [tasks] modules)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench._record import record_resume, record_start
from taskd import Context, task, wait


@task(id="bench.noop")
async def noop(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    # Drain phase: no-op. Latency phase: payload carries the trigger time, record the start.
    record_start(payload)
    return None


@task(id="bench.sleeper")
async def sleeper(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    # Resume phase (bench/resume.py): suspend until payload["until"], then record the restart.
    await wait.until(datetime.fromtimestamp(payload["until"], UTC))
    record_resume(payload["until"])

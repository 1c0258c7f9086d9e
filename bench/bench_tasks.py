"""taskd tasks used by bench/throughput.py (loaded by the daemon via [tasks] modules)."""

from __future__ import annotations

from bench._record import record_start
from daemon import Context, task


@task(id="bench.noop")
async def noop(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    # Drain phase: no-op. Latency phase: payload carries the trigger time, record the start.
    record_start(payload)
    return None

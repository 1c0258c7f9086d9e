"""taskd tasks used by bench/throughput.py (loaded by the daemon via [tasks] modules)."""

from __future__ import annotations

from daemon import Context, task

from bench._record import record_start


@task(id="bench.noop")
async def noop(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    # Drain phase: no-op. Latency phase: payload carries the trigger time, record the start.
    record_start(payload)
    return None

"""taskd tasks used by bench/limits.py (loaded by the daemon next to bench.bench_tasks).

Two no-op tasks, each in a queue with global limits; the unlimited baseline is
``bench.noop`` (bench/bench_tasks.py) in the default queue. Both modules are loaded in every
drain of bench/limits.py, so the daemon registers the same tasks and queues whichever variant
it drains.
"""

from __future__ import annotations

from taskd import Context, Queue, task

# The case: a queue limit and a per-key limit (the runs are spread over 100 keys).
LIMITED = Queue("bench-limited", concurrency=100, concurrency_limit_per_key=2)
# The queue limit alone (no keys): the cost of the locked, counted claim without the key walk.
CAPPED = Queue("bench-capped", concurrency=100)


@task(id="bench.limited_noop", queue=LIMITED)
async def limited_noop(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    return None


@task(id="bench.capped_noop", queue=CAPPED)
async def capped_noop(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    return None

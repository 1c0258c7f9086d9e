"""Tasks for the crash tests (loaded by `taskd run` with ``TASKD_TASKS__MODULES``).

Each one leaves a side-effect row in ``crash_effects`` (created by the test) in the daemon's
own database, through the daemon's pool, so a test can tell which attempts reached their side
effect: ``(run_id, attempt, worker_pid, at)``.

``crash.work``: a short run (5-40 ms, random). ``crash.slow``: a long one (``seconds`` in the
payload, 2 s by default); it writes its effect after the sleep, so an attempt interrupted by a
kill or a drain leaves none. ``crash.fail``: like ``crash.work``, then raises (two attempts).
``crash.hold``: sleeps until canceled.

No backoff between attempts: a rescued run is due again at once, so what the tests time is the
engine's rescue, not a retry delay.
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio

from taskd import Context, Retry, task
from taskd.sdk.current import current_client

CREATE_EFFECTS = """
CREATE TABLE IF NOT EXISTS crash_effects (
    run_id     uuid NOT NULL,
    attempt    int NOT NULL,
    worker_pid int NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

NO_BACKOFF = Retry(max_attempts=20, min_delay=0, max_delay=0, jitter=False)

# CRASH_TASKS_SEED makes the sleeps of one process reproducible (the pid keeps two daemons
# started with the same seed from sleeping in lockstep).
_random = random.Random(f"{os.environ.get('CRASH_TASKS_SEED', '')}:{os.getpid()}")


async def _effect(ctx: Context) -> None:
    await current_client().pool.execute(
        "INSERT INTO crash_effects (run_id, attempt, worker_pid, at)"
        " VALUES ($1, $2, $3, clock_timestamp())",
        ctx.run_id,
        ctx.attempt,
        os.getpid(),
    )


@task(id="crash.work", retry=NO_BACKOFF)
async def work(payload: Any, ctx: Context) -> dict[str, int]:
    await anyio.sleep(_random.uniform(0.005, 0.040))
    await _effect(ctx)
    return {"attempt": ctx.attempt}


# crash.fail: always raises after its side effect, two attempts (a kill may spend one).
# crash.hold: sleeps until it is canceled (tests/process/test_crash.py cancels it).
TWO_ATTEMPTS = Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False)


class AlwaysFails(Exception):
    pass


@task(id="crash.fail", retry=TWO_ATTEMPTS)
async def fail(payload: Any, ctx: Context) -> None:
    await anyio.sleep(_random.uniform(0.005, 0.040))
    await _effect(ctx)
    raise AlwaysFails(f"attempt {ctx.attempt} fails, as every one does")


@task(id="crash.hold", retry=NO_BACKOFF)
async def hold(payload: Any, ctx: Context) -> None:
    await anyio.sleep(3600)


# crash.gated: waits for a row in crash_gate (another process writes it: polled), then
# writes its effect; its runs stay executing for as long as a test needs them to.
CREATE_GATE = "CREATE TABLE IF NOT EXISTS crash_gate (open boolean)"


@task(id="crash.gated", retry=NO_BACKOFF)
async def gated(payload: Any, ctx: Context) -> dict[str, int]:
    pool = current_client().pool
    while True:
        if await pool.fetchval("SELECT count(*) FROM crash_gate"):
            break
        await anyio.sleep(0.02)
    await _effect(ctx)
    return {"attempt": ctx.attempt}


@task(id="crash.slow", retry=NO_BACKOFF)
async def slow(payload: Any, ctx: Context) -> dict[str, int]:
    seconds = payload.get("seconds", 2.0) if isinstance(payload, dict) else 2.0
    await anyio.sleep(seconds)
    await _effect(ctx)
    return {"attempt": ctx.attempt}


# crash.steps: five durable steps, each leaving one row in step_effects when its function is
# called; step 4 first waits for a row in step_gate (the test kills the daemon meanwhile).
CREATE_STEP_TABLES = """
CREATE TABLE IF NOT EXISTS step_effects (run_id uuid, step int, pid int);
CREATE TABLE IF NOT EXISTS step_gate (open boolean);
"""


async def _step_effect(ctx: Context, step: int) -> int:
    pool = current_client().pool
    # the gate is a row another process writes: polled (no in-process event can see it)
    while step == 4:
        if await pool.fetchval("SELECT count(*) FROM step_gate"):
            break
        await anyio.sleep(0.02)
    await pool.execute(
        "INSERT INTO step_effects (run_id, step, pid) VALUES ($1, $2, $3)",
        ctx.run_id,
        step,
        os.getpid(),
    )
    return step * 10


@task(id="crash.steps", retry=NO_BACKOFF)
async def five_steps(payload: Any, ctx: Context) -> list[int]:
    return [await ctx.step(f"step-{n}", _step_effect, ctx, n) for n in range(1, 6)]


# crash.parent / crash.child (tests/process/test_child_runs_crash.py): the parent records a step
# ("before", one child_effects row with its pid), then waits on crash.child runs, a batch
# (payload "batch") or one (payload "single", with an optional "queue" for the child); a child
# leaves a "started" row, waits for a row in child_gate when its payload says "gated", then a
# "finished" row, and returns n squared.
CREATE_CHILD_TABLES = """
CREATE TABLE IF NOT EXISTS child_effects (run_id uuid, attempt int, kind text, n int, pid int);
CREATE TABLE IF NOT EXISTS child_gate (open boolean);
"""


async def _child_effect(ctx: Context, kind: str, n: int | None = None) -> int:
    await current_client().pool.execute(
        "INSERT INTO child_effects (run_id, attempt, kind, n, pid) VALUES ($1, $2, $3, $4, $5)",
        ctx.run_id,
        ctx.attempt,
        kind,
        n,
        os.getpid(),
    )
    return os.getpid()


@task(id="crash.child", retry=NO_BACKOFF)
async def gated_child(payload: dict[str, Any], ctx: Context) -> int:
    n = int(payload["n"])
    await _child_effect(ctx, "started", n)
    pool = current_client().pool
    # like step_gate: a row another process writes, polled
    while payload.get("gated"):
        if await pool.fetchval("SELECT count(*) FROM child_gate"):
            break
        await anyio.sleep(0.02)
    await _child_effect(ctx, "finished", n)
    return n * n


@task(id="crash.parent", retry=NO_BACKOFF)
async def waiting_parent(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    before = await ctx.step("before", _child_effect, ctx, "parent-before")
    if "single" in payload:
        child = await gated_child.trigger_and_wait(payload["single"], queue=payload.get("queue"))
        return {"before": before, "child": child}
    return {
        "before": before,
        "children": await gated_child.batch_trigger_and_wait(payload["batch"]),
    }

"""taskd tasks used by bench/startup.py (loaded by the daemon via [tasks] modules).

A task that records its own start, plus a cron schedule and an event subscription, so that the
daemon's start-up syncs each kind of declaration, as an application's would.
"""

from __future__ import annotations

import asyncio
import os
import time

from taskd import Context, ScheduledRun, schedules, task

_RECORD_FD: int | None = None


@task(id="startup.work")
async def work(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    """Writes its start time (wall clock) and its process's CPU time so far to
    BENCH_STARTUP_FILE, then sleeps payload["sleep"]."""
    started = time.time()
    cpu = time.process_time()
    global _RECORD_FD
    path = os.environ.get("BENCH_STARTUP_FILE")
    if path:
        if _RECORD_FD is None:
            _RECORD_FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_RECORD_FD, f"{started!r} {cpu!r}\n".encode())
    if payload.get("sleep"):
        await asyncio.sleep(payload["sleep"])


@schedules.task(id="startup.nightly", cron="0 3 * * *")
async def nightly(payload: ScheduledRun, ctx: Context) -> None:
    return None


@task(id="startup.on_signup", on_event="startup.signup")
async def on_signup(payload: dict, ctx: Context) -> None:  # type: ignore[type-arg]
    return None

"""The wall clock the daemon decides WHEN by: real time, or a test's virtual time.

``now()`` is ``datetime.now(UTC)`` plus an offset that is zero in production;
``taskd.testing`` moves it forward (``tester.advance(hours=24)``) together with the test
database's ``now()``, so that waits, delays, retry backoffs, ttls and cron fire at once.

``sleep`` / ``sleep_until`` are the sleeps that wait for a wall time (a chore's next pass, a
step's retry delay, a short ``wait.for_``): in production they are ``anyio.sleep``; once a test
enabled time skipping, an advance of the clock ends them early, and they look at the new time
at once. Durations (timeouts, what a call took) stay on ``time.monotonic`` / ``perf_counter``.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import anyio

_offset = timedelta(0)
_skipping = False
# (the loop, the event set at the next advance): an asyncio event belongs to one loop
_advanced: tuple[asyncio.AbstractEventLoop, anyio.Event] | None = None
_sleeper_ids = itertools.count()
_run_sleepers: dict[int, datetime] = {}


def now() -> datetime:
    """The current time, aware, in UTC (real time plus the virtual clock's offset)."""
    if _offset:
        return datetime.now(UTC) + _offset
    return datetime.now(UTC)


def offset() -> timedelta:
    """How far the virtual clock is ahead of real time (zero unless a test moved it)."""
    return _offset


async def sleep(seconds: float, *, in_run: bool = False) -> None:
    """``anyio.sleep(seconds)``; under time skipping, over as soon as the clock passes the end
    (``in_run``: as for ``sleep_until``)."""
    if not _skipping:
        await anyio.sleep(seconds)
        return
    await sleep_until(now() + timedelta(seconds=seconds), in_run=in_run)


async def sleep_until(wake_at: datetime, *, in_run: bool = False) -> None:
    """Sleep until the clock reads ``wake_at`` (aware). ``in_run``: a run sleeps in its slot
    (a step's retry delay, a short wait): a test's drain counts it as idle, and its wake time
    is one the test's clock may skip to."""
    sleeper = next(_sleeper_ids)
    if in_run:
        _run_sleepers[sleeper] = wake_at
    try:
        while True:
            remaining = (wake_at - now()).total_seconds()
            if remaining <= 0:
                return
            if not _skipping:
                await anyio.sleep(remaining)
                continue
            with anyio.move_on_after(remaining):
                await _advance_event().wait()
    finally:
        _run_sleepers.pop(sleeper, None)


def run_sleepers() -> list[datetime]:
    """The wake times of the runs sleeping in their slots now (``sleep_until(in_run=True)``)."""
    return list(_run_sleepers.values())


def _advance_event() -> anyio.Event:
    global _advanced
    loop = asyncio.get_running_loop()
    if _advanced is None or _advanced[0] is not loop:
        _advanced = (loop, anyio.Event())
    return _advanced[1]


# the virtual clock (taskd.testing) --------------------------------------------------------------


def start_skipping() -> None:
    """Make the sleeps above end when the clock is advanced (the clock stays where it is)."""
    global _skipping
    _skipping = True


def advance_to(offset: timedelta) -> None:
    """Set the virtual clock's offset (never backwards) and end the sleeps it passed."""
    global _offset, _advanced
    if offset < _offset:
        raise ValueError(f"the clock only moves forward: offset {offset} < {_offset}")
    _offset = offset
    if _advanced is not None:
        event = _advanced[1]
        _advanced = None
        event.set()


def reset() -> None:
    """Back to real time, sleeps as in production (the end of a test)."""
    global _offset, _skipping, _advanced
    _offset = timedelta(0)
    _skipping = False
    if _advanced is not None:
        event = _advanced[1]
        _advanced = None
        event.set()

"""taskd.clock, the daemon's wall clock: real time until a test moves it; a sleep until a wall
time ends as soon as the clock passes it; back to real time after."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from taskd import clock


@pytest.fixture(autouse=True)
def real_time_after() -> Iterator[None]:
    yield
    clock.reset()


def test_real_time_until_moved() -> None:
    assert clock.offset() == timedelta(0)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)
    clock.advance_to(timedelta(hours=5))
    assert abs(clock.now() - datetime.now(UTC) - timedelta(hours=5)) < timedelta(seconds=1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance_to(timedelta(hours=1))
    clock.reset()
    assert clock.offset() == timedelta(0)


async def test_a_sleep_of_an_hour_ends_when_the_clock_passes_it() -> None:
    clock.start_skipping()
    woke: list[datetime] = []

    async def sleeper() -> None:
        await clock.sleep(3600, in_run=True)
        woke.append(clock.now())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            [wake_at] = clock.run_sleepers()
            clock.advance_to(timedelta(minutes=30))
            await anyio.wait_all_tasks_blocked()
            assert woke == [], "half way: still asleep"
            clock.advance_to(timedelta(hours=1, seconds=1))
    assert woke and woke[0] >= wake_at
    assert clock.run_sleepers() == []


async def test_without_skipping_a_sleep_is_a_plain_sleep() -> None:
    started = anyio.current_time()
    await clock.sleep(0.05)
    assert anyio.current_time() - started >= 0.05

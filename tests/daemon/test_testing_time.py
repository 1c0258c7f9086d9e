"""Time skipping with taskd.testing (``tester.advance``): a cron schedule fires at its time, a
delayed run starts when its delay is over, a ttl expires a run, a retry's backoff is skipped,
a run sleeping in its slot wakes; ``assert_triggered`` names what it found."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from taskd import AbortRun, Context, Retry, RunStatus, ScheduledRun, clock, schedules, task, wait
from taskd.testing import Tester, TesterError
from tasks.daily_report import daily_report


@task(id="testing-echo")
async def echo(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return payload


@task(
    id="testing-flaky",
    retry=Retry(max_attempts=3, min_delay=3600.0, max_delay=3600.0, jitter=False),
)
async def flaky(payload: dict[str, Any], ctx: Context) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("the API is down for an hour")
    return "done"


@task(id="testing-child")
async def child(payload: dict[str, Any], ctx: Context) -> None:
    return None


@task(id="testing-parent")
async def parent(payload: dict[str, Any], ctx: Context) -> None:
    for order in payload["orders"]:
        await child.trigger({"order": order})


@task(id="testing-nap")
async def nap(payload: dict[str, Any], ctx: Context) -> str:
    await ctx.step("remember", lambda: "before")
    await wait.for_(seconds=payload["seconds"])
    return "after"


@schedules.task(id="testing-every-15-minutes", cron="*/15 * * * *", timezone="UTC")
async def every_15_minutes(payload: ScheduledRun, ctx: Context) -> str:
    return payload.timestamp.isoformat()


step_tries: list[datetime] = []


@task(id="testing-step-retry")
async def step_retry(payload: dict[str, Any], ctx: Context) -> int:
    def call() -> int:
        step_tries.append(clock.now())
        if len(step_tries) == 1:
            raise ConnectionError("down for ten minutes")
        return len(step_tries)

    # the step's own retry sleeps in the run's slot, ten minutes of the virtual clock
    policy = Retry(max_attempts=2, min_delay=600.0, max_delay=600.0, jitter=False)
    tries: int = await ctx.step("call", call, retry=policy)
    return tries


@task(id="testing-refuses")
async def refuses(payload: dict[str, Any], ctx: Context) -> None:
    raise AbortRun("no")


async def status_of(tester: Tester, run_id: Any) -> RunStatus:
    return (await tester.client.get_run(run_id)).status


async def test_a_daily_cron_fires_once_when_the_day_is_skipped(taskd_tester: Tester) -> None:
    await taskd_tester.serve(daily_report)
    await taskd_tester.drain()
    assert await taskd_tester.client.list_runs(task="daily-report") == []

    await taskd_tester.advance(days=1)

    [run] = await taskd_tester.client.list_runs(task="daily-report")
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.schedule_id == "daily-report"
    assert run.scheduled_for is not None
    assert (run.scheduled_for.hour, run.scheduled_for.minute) == (9, 0)
    assert run.output["window_end"].startswith(run.scheduled_for.date().isoformat())


async def test_a_cron_fires_at_each_of_its_times_on_the_way(taskd_tester: Tester) -> None:
    await taskd_tester.serve(every_15_minutes)
    start = taskd_tester.now()

    await taskd_tester.advance(hours=1)

    runs = await taskd_tester.client.list_runs(task=every_15_minutes)
    assert len(runs) == 4
    assert all(run.status is RunStatus.COMPLETED for run in runs)
    fired = sorted(run.scheduled_for for run in runs if run.scheduled_for is not None)
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(fired))
    assert start < fired[0] <= start + timedelta(minutes=15)
    # each started at its own time, not all at the end of the hour
    for run in runs:
        assert run.started_at is not None and run.scheduled_for is not None
        assert timedelta(0) <= run.started_at - run.scheduled_for < timedelta(minutes=1)


async def test_a_delayed_run_starts_when_its_delay_is_over(taskd_tester: Tester) -> None:
    run_id = await taskd_tester.trigger(echo, {"n": 1}, delay="1h")
    await taskd_tester.drain()
    assert await status_of(taskd_tester, run_id) is RunStatus.QUEUED

    await taskd_tester.advance(minutes=59)
    assert await status_of(taskd_tester, run_id) is RunStatus.QUEUED

    await taskd_tester.advance(minutes=1)
    result = await taskd_tester.result(run_id, skip_time=False)
    assert result.status is RunStatus.COMPLETED and result.output == {"n": 1}


async def test_a_ttl_expires_a_run_not_started_in_time(taskd_tester: Tester) -> None:
    run_id = await taskd_tester.trigger(echo, {"n": 2}, delay="1h", ttl="10m")

    await taskd_tester.advance(minutes=30)

    run = await taskd_tester.client.get_run(run_id)
    assert run.status is RunStatus.EXPIRED
    assert run.attempts == []


async def test_a_retry_backoff_of_an_hour_is_skipped(taskd_tester: Tester) -> None:
    run_id = await taskd_tester.trigger(flaky, {})
    await taskd_tester.drain()
    run = await taskd_tester.client.get_run(run_id)
    assert run.status is RunStatus.QUEUED and len(run.attempts) == 1
    assert run.run_at - taskd_tester.now() > timedelta(minutes=59)

    await taskd_tester.advance(hours=1)

    result = await taskd_tester.result(run_id, skip_time=False)
    assert result.status is RunStatus.COMPLETED and result.output == "done"
    first, second = result.attempts
    assert second.started_at - first.finished_at >= timedelta(hours=1)


async def test_a_run_waiting_a_few_seconds_resumes_after_them(taskd_tester: Tester) -> None:
    run_id = await taskd_tester.trigger(nap, {"seconds": 3})
    await taskd_tester.drain()
    assert await status_of(taskd_tester, run_id) is RunStatus.WAITING

    await taskd_tester.advance(seconds=3)

    result = await taskd_tester.result(run_id, skip_time=False)
    assert result.status is RunStatus.COMPLETED and result.output == "after"


async def test_a_step_retry_sleeping_in_its_slot_is_skipped(taskd_tester: Tester) -> None:
    step_tries.clear()
    result = await taskd_tester.run(step_retry, {})

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == 2 and len(result.attempts) == 1
    assert step_tries[1] - step_tries[0] >= timedelta(minutes=10)


async def test_assert_triggered_finds_the_children_by_payload(taskd_tester: Tester) -> None:
    result = await taskd_tester.run(parent, {"orders": ["A-1", "A-2"]})
    assert result.status is RunStatus.COMPLETED, result.error

    [a1] = await taskd_tester.assert_triggered(child, payload={"order": "A-1"})
    assert a1.status is RunStatus.QUEUED  # the daemon does not serve it: only triggered
    await taskd_tester.assert_triggered("testing-child", count=2)
    with pytest.raises(AssertionError, match=r"expected 1 run\(s\) of testing-child with payload"):
        await taskd_tester.assert_triggered(child, payload={"order": "B-9"})


async def test_a_run_that_cannot_end_says_why(taskd_tester: Tester) -> None:
    await taskd_tester.serve(echo)
    run_id = await taskd_tester.trigger("testing-unserved", {})
    with pytest.raises(TesterError, match="nothing it waits for falls due"):
        await taskd_tester.result(run_id)


async def test_a_failed_run_is_returned_failed(taskd_tester: Tester) -> None:
    result = await taskd_tester.run(refuses, {})
    assert result.status is RunStatus.FAILED
    assert result.error is not None and result.error["type"] == "AbortRun"
    assert len(result.attempts) == 1

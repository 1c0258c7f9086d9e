"""Durable steps: recorded once per run, returned from the record when the run executes again."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from pydantic import BaseModel

from taskd import Client, Context, Retry, RunStatus, task
from tests.support.waiting import wait_for_run

CALLS: dict[str, int] = {}


def count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


class Fetched(BaseModel):
    rows: int


async def fetch(source: str) -> Fetched:
    count(f"fetch:{source}")
    return Fetched(rows=12)


def transform(rows: int, *, factor: int) -> int:
    count("transform")
    return rows * factor


@task(id="steps.pipeline", retry=Retry(max_attempts=3, min_delay=0, max_delay=0, jitter=False))
async def pipeline(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    fetched = await ctx.step("fetch", fetch, payload["source"])
    doubled = await ctx.step("transform", transform, fetched["rows"], factor=2)
    if ctx.attempt == 1:
        raise ConnectionError("the load failed")  # the attempt fails after two steps
    loaded = await ctx.step("load", lambda: count("load"))
    return {"fetched": fetched, "doubled": doubled, "loaded": loaded}


async def test_recorded_steps_are_not_called_again_by_the_next_attempt(
    client: Client, start_daemon
) -> None:
    CALLS.clear()
    async with start_daemon([pipeline]):
        run_id = await client.trigger("steps.pipeline", {"source": "crm"})
        run = await wait_for_run(client, run_id)
    assert run.status is RunStatus.COMPLETED and run.attempt == 2
    assert CALLS == {"fetch:crm": 1, "transform": 1, "load": 1}
    # the first execution got the JSON form too (a model comes back as a dict)
    assert run.output == {"fetched": {"rows": 12}, "doubled": 24, "loaded": 1}
    assert [(s.name, s.status, s.attempts, s.run_attempt) for s in run.steps] == [
        ("fetch", "completed", 1, 1),
        ("transform", "completed", 1, 1),
        ("load", "completed", 1, 2),
    ]
    assert run.steps[0].result == {"rows": 12}


FLAKY: dict[str, int] = {}


async def flaky_call(key: str, fail_times: int) -> str:
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] <= fail_times:
        raise TimeoutError(f"try {FLAKY[key]} timed out")
    return f"ok after {FLAKY[key]}"


QUICK = Retry(max_attempts=3, min_delay=0, max_delay=0, jitter=False)


@task(id="steps.retrying", retry=Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False))
async def retrying(payload: dict[str, Any], ctx: Context) -> Any:
    return await ctx.step("call", flaky_call, payload["key"], payload["fail"], retry=QUICK)


async def test_a_step_retries_with_its_own_policy_then_fails_the_attempt(
    client: Client, start_daemon
) -> None:
    FLAKY.clear()
    async with start_daemon([retrying]):
        ok = await client.trigger("steps.retrying", {"key": "a", "fail": 2})
        bad = await client.trigger("steps.retrying", {"key": "b", "fail": 100})
        ok_run = await wait_for_run(client, ok)
        bad_run = await wait_for_run(client, bad)
    assert ok_run.status is RunStatus.COMPLETED and ok_run.attempt == 1
    assert ok_run.output == "ok after 3"
    assert [(s.status, s.attempts) for s in ok_run.steps] == [("completed", 3)]
    # exhausted in both of the run's attempts: 3 tries each, then the run failed
    assert bad_run.status is RunStatus.FAILED and bad_run.attempt == 2
    assert FLAKY["b"] == 6
    [step] = bad_run.steps
    assert (step.status, step.attempts, step.run_attempt) == ("failed", 6, 2)
    assert step.error == {"type": "TimeoutError", "message": "try 6 timed out"}
    assert bad_run.error is not None and bad_run.error["type"] == "TimeoutError"


@task(id="steps.loop")
async def loop(payload: dict[str, Any], ctx: Context) -> Any:
    for item in payload["items"]:
        await ctx.step(payload["name"].format(item=item), lambda item=item: item)
    return "done"


async def test_step_names_must_be_unique_in_a_run(client: Client, start_daemon) -> None:
    async with start_daemon([loop]):
        indexed = await client.trigger("steps.loop", {"items": [1, 2], "name": "item-{item}"})
        repeated = await client.trigger("steps.loop", {"items": [1, 2], "name": "item"})
        good = await wait_for_run(client, indexed)
        bad = await wait_for_run(client, repeated)
    assert good.status is RunStatus.COMPLETED
    assert [s.name for s in good.steps] == ["item-1", "item-2"]
    # fails at once (no retry: the same code would repeat the same name)
    assert bad.status is RunStatus.FAILED and bad.attempt == 1
    assert bad.error is not None and bad.error["type"] == "StepNameRepeated"
    assert "used twice" in bad.error["message"] and "index" in bad.error["message"]


async def test_a_step_of_a_run_no_longer_held_is_not_recorded(
    client: Client, db: asyncpg.Connection
) -> None:
    # the compare-and-set: a worker that lost its run cannot record steps for it. The run is
    # claimed by one worker, handed back (as for a worker found gone) and claimed by another.
    from taskd.store.steps import StepOutcome
    from taskd.store.store import Store

    store = Store(client.pool)
    run_id = await client.trigger("steps.loop", {"items": [], "name": "x"})
    first, second = uuid.uuid4(), uuid.uuid4()

    async def record(name: str, worker: uuid.UUID, attempt: int) -> bool:
        return await store.steps.record(
            StepOutcome(
                run_id,
                name,
                worker,
                attempt,
                status="completed",
                result="1",
                error=None,
                tries=1,
                started_at=await db.fetchval("SELECT now()"),
            )
        )

    assert not await record("unclaimed", first, 1), "a queued run records nothing"
    claimed = await store.runs.claim(["steps.loop"], None, 1, first, 60)
    assert [(r.id, r.attempt) for r in claimed.runs] == [(run_id, 1)]
    assert await record("before", first, 1)
    assert [r[0] for r in await store.runs.rescue([first])] == [run_id]
    claimed = await store.runs.claim(["steps.loop"], None, 1, second, 60)
    assert [(r.id, r.attempt) for r in claimed.runs] == [(run_id, 2)]

    assert not await record("late", first, 1), "the worker that lost the run"
    assert not await record("stale", second, 1), "an earlier attempt's number"
    assert await record("current", second, 2)
    names = {row[0] for row in await db.fetch("SELECT name FROM taskd.steps")}
    assert names == {"before", "current"}


class Throttled(Exception):
    retry_after = 0.05  # what a 429's Retry-After header says


async def throttled_once(key: str) -> str:
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] == 1:
        raise Throttled("429 Too Many Requests")
    return "answered"


@task(id="steps.throttled", retry=Retry(max_attempts=1))
async def throttled(payload: dict[str, Any], ctx: Context) -> str:
    # a backoff of a minute, unless the server says when to come back
    policy = Retry(max_attempts=3, min_delay=60, max_delay=60, jitter=False)
    return await ctx.step("call", throttled_once, payload["key"], retry=policy)


async def test_a_steps_retry_honours_the_servers_retry_after(client: Client, start_daemon) -> None:
    key = str(uuid.uuid4())
    async with start_daemon([throttled]):
        run = await wait_for_run(client, await client.trigger(throttled, {"key": key}), timeout=5)
    assert run.status is RunStatus.COMPLETED and run.output == "answered", run
    assert CALLS[key] == 2 and run.steps[0].attempts == 2

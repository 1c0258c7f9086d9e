"""The run lifecycle inside one daemon: producers, retries, limits, hooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import anyio
import asyncpg
import pytest
from pydantic import BaseModel

from taskd import AbortRun, Client, Context, PayloadTooLarge, Retry, RunStatus, task
from tests.support.waiting import wait_for, wait_for_run


class Numbers(BaseModel):
    a: int
    b: int


@task(id="add")
async def add(payload: Numbers, ctx: Context) -> dict[str, int]:
    ctx.log.info("adding", a=payload.a)
    return {"sum": payload.a + payload.b}


async def test_python_trigger_runs_to_completion(client: Client, start_daemon) -> None:
    async with start_daemon([add]):
        run_id = await client.trigger("add", {"a": 2, "b": 3})
        run = await wait_for_run(client, run_id)
    assert run.status is RunStatus.COMPLETED
    assert run.output == {"sum": 5}
    assert [a.outcome for a in run.attempts] == ["completed"]
    assert run.attempts[0].finished_at >= run.attempts[0].started_at
    assert run.finished_at is not None


async def test_typed_handle_and_batch_trigger(client: Client, start_daemon) -> None:
    async with start_daemon([add]):
        ids = await add.batch_trigger([Numbers(a=i, b=i) for i in range(50)])
        single = await add.trigger(Numbers(a=1, b=1))
        runs = [await wait_for_run(client, run_id) for run_id in [*ids, single]]
    assert [r.output["sum"] for r in runs] == [2 * i for i in range(50)] + [2]
    assert ids == sorted(ids), "run ids sort by creation"


async def test_sql_trigger_from_a_bare_connection(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([add]):
        run_id = await db.fetchval(
            'SELECT taskd.trigger(\'add\', \'{"a": 40, "b": 2}\', \'{"tags": ["sql"]}\')'
        )
        run = await wait_for_run(client, run_id)
    assert run.output == {"sum": 42}
    assert run.tags == ["sql"]


async def test_enqueue_rolls_back_with_the_callers_transaction(
    client: Client, database: str
) -> None:
    connection = await asyncpg.connect(database)
    try:
        transaction = connection.transaction()
        await transaction.start()
        kept_out = await client.trigger("add", {"a": 1, "b": 1}, connection=connection)
        await transaction.rollback()
        async with connection.transaction():
            kept = await client.trigger("add", {"a": 1, "b": 1}, connection=connection)
        async with connection.transaction():
            sql_id = await connection.fetchval("SELECT taskd.trigger('add', '{}')")
    finally:
        await connection.close()
    ids = {r.id for r in await client.list_runs()}
    assert kept_out not in ids
    assert kept in ids and sql_id in ids


async def test_sql_trigger_rolled_back_leaves_no_run(
    client: Client, db: asyncpg.Connection
) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with db.transaction():
            await db.fetchval("SELECT taskd.trigger('add', '{}')")
            await db.execute("SELECT 1/0")
    assert await client.list_runs() == []


async def test_retries_follow_the_backoff(client: Client, start_daemon) -> None:
    calls: list[int] = []

    @task(id="flaky", retry=Retry(max_attempts=3, min_delay=0.3, factor=2, jitter=False))
    async def flaky(payload: None, ctx: Context) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"down on attempt {ctx.attempt}")
        return "up"

    async with start_daemon([flaky], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(flaky, None))
    assert run.status is RunStatus.COMPLETED and run.output == "up"
    assert calls == [1, 2, 3]
    first, second, third = run.attempts
    assert [first.outcome, second.outcome, third.outcome] == ["failed", "failed", "completed"]
    assert first.error["type"] == "ConnectionError"
    assert "down on attempt 1" in first.error["message"]
    assert (second.started_at - first.finished_at).total_seconds() >= 0.3
    assert (third.started_at - second.finished_at).total_seconds() >= 0.6


async def test_retry_after_on_the_exception_sets_the_delay(client: Client, start_daemon) -> None:
    class RateLimited(Exception):
        retry_after = 0.2

    @task(id="limited", retry=Retry(max_attempts=2, min_delay=30, jitter=False))
    async def limited(payload: None, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise RateLimited("slow down")
        return ctx.attempt

    async with start_daemon([limited], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger(limited), timeout=5)
    assert run.output == 2
    gap = (run.attempts[1].started_at - run.attempts[0].finished_at).total_seconds()
    assert 0.2 <= gap < 30


async def test_abort_run_fails_without_retry(client: Client, start_daemon) -> None:
    @task(id="aborts", retry=Retry(max_attempts=5, min_delay=0))
    async def aborts(payload: None, ctx: Context) -> None:
        raise AbortRun("account closed")

    async with start_daemon([aborts]):
        run = await wait_for_run(client, await client.trigger(aborts))
    assert run.status is RunStatus.FAILED
    assert len(run.attempts) == 1
    assert run.error["type"] == "AbortRun" and run.error["message"] == "account closed"


async def test_invalid_payload_fails_at_once_with_the_pydantic_message(
    client: Client, start_daemon
) -> None:
    started: list[object] = []

    @task(id="strict", retry=Retry(max_attempts=5, min_delay=0))
    async def strict(payload: Numbers, ctx: Context) -> None:
        started.append(payload)

    async with start_daemon([strict]):
        run = await wait_for_run(client, await client.trigger(strict, {"a": "x"}))
    assert run.status is RunStatus.FAILED
    assert len(run.attempts) == 1 and started == []
    assert run.error["type"] == "ValidationError"
    assert "a\n  Input should be a valid integer" in run.error["message"]
    assert "b\n  Field required" in run.error["message"]


async def test_max_duration_cancels_the_attempt(client: Client, start_daemon) -> None:
    @task(id="slow", max_duration=0.2, retry=Retry(max_attempts=2, min_delay=0))
    async def slow(payload: None, ctx: Context) -> None:
        await anyio.sleep(30)

    async with start_daemon([slow]):
        run = await wait_for_run(client, await client.trigger(slow), timeout=5)
    assert run.status is RunStatus.FAILED
    assert [a.outcome for a in run.attempts] == ["timed_out", "timed_out"]
    assert run.error["type"] == "MaxDurationExceeded"
    for attempt in run.attempts:
        assert 0.2 <= (attempt.finished_at - attempt.started_at).total_seconds() < 5


async def test_hooks_are_called_once_with_their_arguments(client: Client, start_daemon) -> None:
    events: list[tuple[object, ...]] = []

    async def on_start(payload: object, ctx: Context) -> None:
        events.append(("start", ctx.attempt))

    async def on_success(payload: object, output: object, ctx: Context) -> None:
        events.append(("success", payload, output))

    async def on_failure(
        payload: object, error: BaseException, attempts: int, ctx: Context
    ) -> None:
        events.append(("failure", payload, type(error).__name__, str(error), attempts))

    @task(
        id="hooked",
        retry=Retry(max_attempts=2, min_delay=0),
        on_start=on_start,
        on_success=on_success,
        on_failure=on_failure,
    )
    async def hooked(payload: dict, ctx: Context) -> str:
        if payload["fail"]:
            raise RuntimeError("boom")
        return "ok"

    async with start_daemon([hooked]):
        good = await client.trigger(hooked, {"fail": False})
        await wait_for_run(client, good)
        assert events == [("start", 1), ("success", {"fail": False}, "ok")]
        events.clear()
        bad = await client.trigger(hooked, {"fail": True})
        run = await wait_for_run(client, bad)
    assert run.status is RunStatus.FAILED
    assert events == [
        ("start", 1),
        ("start", 2),
        ("failure", {"fail": True}, "RuntimeError", "boom", 2),
    ]


async def test_a_failing_hook_does_not_change_the_outcome(
    client: Client, start_daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """on_success, on_failure and on_cancel raising: the outcome stands, the hook's error is
    logged and stored with the run; on_start raising is the attempt's own failure."""
    caplog.set_level(logging.INFO, logger="taskd")
    started = anyio.Event()

    async def broken(*args: object) -> None:
        raise RuntimeError("hook bug")

    @task(id="with-broken-hook", on_success=broken)
    async def with_broken_hook(payload: None, ctx: Context) -> int:
        return 7

    @task(id="fails-with-broken-hook", retry=Retry(max_attempts=1), on_failure=broken)
    async def fails_with_broken_hook(payload: None, ctx: Context) -> int:
        raise ValueError("the task's own error")

    @task(id="canceled-with-broken-hook", on_cancel=broken)
    async def canceled_with_broken_hook(payload: None, ctx: Context) -> None:
        started.set()
        await anyio.sleep(60)

    @task(id="broken-start", retry=Retry(max_attempts=1), on_start=broken)
    async def broken_start(payload: None, ctx: Context) -> int:
        return 8

    tasks = [with_broken_hook, fails_with_broken_hook, canceled_with_broken_hook, broken_start]
    async with start_daemon(tasks):
        completed = await wait_for_run(client, await client.trigger(with_broken_hook))
        failed = await wait_for_run(client, await client.trigger(fails_with_broken_hook))
        canceled_id = await client.trigger(canceled_with_broken_hook)
        await started.wait()
        await client.cancel(canceled_id)
        canceled = await wait_for_run(client, canceled_id, [RunStatus.CANCELED, RunStatus.FAILED])
        not_started = await wait_for_run(client, await client.trigger(broken_start))
        runs = {"on_success": completed, "on_failure": failed, "on_cancel": canceled}

        async def stored(run_id: object) -> list[str]:
            return [line.message for line in await client.list_logs(run=run_id)]

        for hook, run in runs.items():
            await wait_for(lambda run=run, hook=hook: _has(stored(run.id), f"{hook} hook raised"))
    assert completed.status is RunStatus.COMPLETED and completed.output == 7
    assert failed.status is RunStatus.FAILED and failed.error["type"] == "ValueError"
    assert canceled.status is RunStatus.CANCELED
    assert not_started.status is RunStatus.FAILED
    assert (
        not_started.error["type"] == "RuntimeError" and "hook bug" in not_started.error["message"]
    )
    logged = [(r.getMessage(), r.exc_info) for r in caplog.records]
    for hook in runs:
        found = [(m, e) for m, e in logged if m.startswith(f"{hook} hook raised")]
        assert len(found) == 1, (hook, logged)
        assert found[0][1] is not None and "hook bug" in str(found[0][1][1]), found
    assert any(m.startswith("run failed: RuntimeError: hook bug") for m, _ in logged), logged


async def _has(lines: Awaitable[list[str]], prefix: str) -> bool:
    return any(line.startswith(prefix) for line in await lines)


async def test_the_pool_never_exceeds_its_concurrency(client: Client, start_daemon) -> None:
    running = 0
    peak = 0

    @task(id="counted")
    async def counted(payload: int, ctx: Context) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1

    async with start_daemon([counted], concurrency=3):
        ids = await client.batch_trigger(counted, list(range(30)))
        for run_id in ids:
            await wait_for_run(client, run_id)
    assert peak == 3


async def test_a_lost_notify_is_covered_by_polling(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([add], poll_interval=0.2) as daemon:
        # an INSERT with no NOTIFY at all, as if the notification were lost
        run_id = await db.fetchval(
            "INSERT INTO taskd.runs (id, task_id, payload) "
            "VALUES (taskd.new_run_id(), 'add', '{\"a\": 1, \"b\": 2}') RETURNING id"
        )
        run = await wait_for_run(client, run_id, timeout=3)
        assert daemon.listener is not None and daemon.listener.up
    assert run.output == {"sum": 3}


async def test_a_delayed_run_waits_for_its_time(client: Client, start_daemon) -> None:
    async with start_daemon([add], poll_interval=0.1):
        run_id = await client.trigger(add, {"a": 1, "b": 1}, delay="0.5s")
        queued = await client.get_run(run_id)
        assert queued.status is RunStatus.QUEUED
        run = await wait_for_run(client, run_id)
    assert run.started_at is not None
    assert (run.started_at - run.created_at).total_seconds() >= 0.5


async def test_priority_orders_the_claims(client: Client, start_daemon) -> None:
    order: list[int] = []

    @task(id="ordered")
    async def ordered(payload: int, ctx: Context) -> None:
        order.append(payload)

    low = await client.batch_trigger(ordered, [1, 2, 3], priority=0)
    high = await client.batch_trigger(ordered, [10, 20], priority=5)
    async with start_daemon([ordered], concurrency=1):
        for run_id in [*low, *high]:
            await wait_for_run(client, run_id)
    assert order == [10, 20, 1, 2, 3]


async def test_max_attempts_override_on_trigger(client: Client, start_daemon) -> None:
    @task(id="always-fails", retry=Retry(max_attempts=5, min_delay=0))
    async def always_fails(payload: None, ctx: Context) -> None:
        raise ValueError("no")

    async with start_daemon([always_fails]):
        run = await wait_for_run(client, await client.trigger(always_fails, max_attempts=1))
    assert run.status is RunStatus.FAILED and run.attempt == 1


async def test_clean_stop_leaves_nothing_executing(client: Client, start_daemon) -> None:
    gate = anyio.Event()

    @task(id="long")
    async def long(payload: None, ctx: Context) -> None:
        gate.set()
        await anyio.sleep(60)

    async with start_daemon([long], shutdown_grace=0.2) as daemon:
        run_id = await client.trigger(long)
        await gate.wait()
        await daemon.stop()
    run = await client.get_run(run_id)
    assert run.status is RunStatus.QUEUED, "a drained run goes back to the queue"
    assert run.attempt == 0 and run.attempts == [], "without spending an attempt"
    assert await client.list_runs(status="executing") == []


async def test_runs_of_unknown_tasks_are_left_queued(client: Client, start_daemon) -> None:
    async with start_daemon([add], poll_interval=0.05):
        other = await client.trigger("not-registered-here", {})
        known = await client.trigger(add, {"a": 0, "b": 0})
        await wait_for_run(client, known)
    assert (await client.get_run(other)).status is RunStatus.QUEUED


async def test_an_output_the_database_refuses_fails_only_its_own_run(
    client: Client, start_daemon
) -> None:
    @task(id="nul-output")
    async def nul_output(payload: int, ctx: Context) -> str:
        # jsonb cannot store \u0000: the database refuses this output at completion
        return "a\x00b" if payload == 3 else "fine"

    async with start_daemon([nul_output]):
        ids = await client.batch_trigger(nul_output, list(range(6)))
        runs = [await wait_for_run(client, run_id) for run_id in ids]
    assert [r.status for r in runs] == ["completed"] * 3 + ["failed"] + ["completed"] * 2
    assert runs[3].error["type"] == "OutcomeNotStored"
    assert "could not be stored" in runs[3].error["message"]


async def test_an_unusable_retry_after_falls_back_to_the_backoff(
    client: Client, start_daemon
) -> None:
    class Weird(Exception):
        retry_after = float("inf")

    @task(id="weird-retry-after", retry=Retry(max_attempts=2, min_delay=0.05, jitter=False))
    async def weird(payload: None, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise Weird("forever")
        return ctx.attempt

    async with start_daemon([weird, add]):
        run = await wait_for_run(client, await client.trigger(weird))
        other = await wait_for_run(client, await client.trigger(add, {"a": 1, "b": 1}))
    assert run.status is RunStatus.COMPLETED and run.output == 2
    assert other.status is RunStatus.COMPLETED


async def test_a_payload_over_the_limit_is_refused_by_every_producer(
    client: Client, db: asyncpg.Connection, database: str
) -> None:
    await db.execute("UPDATE taskd.settings SET value = '1000' WHERE key = 'max_payload_bytes'")
    async with Client.connect(database) as fresh:  # a new client reads the new limit
        with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
            await fresh.trigger("add", {"blob": "x" * 2000})
        with pytest.raises(PayloadTooLarge):
            await fresh.batch_trigger("add", [{"ok": 1}, {"blob": "x" * 2000}])
        await fresh.trigger("add", {"blob": "x" * 500})  # under the limit: accepted
    with pytest.raises(asyncpg.ProgramLimitExceededError, match="over the limit of 1000 bytes"):
        await db.fetchval(
            "SELECT taskd.trigger('add', $1::jsonb)", '{"blob": "' + "x" * 2000 + '"}'
        )
    assert len(await client.list_runs()) == 1, "nothing from the refused calls was enqueued"


async def test_sql_trigger_rejects_unknown_options_and_empty_task(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match=r"unknown option.*priorty"):
        await db.fetchval("SELECT taskd.trigger('add', '{}', '{\"priorty\": 1}')")
    with pytest.raises(asyncpg.InvalidParameterValueError, match="task_id must not be empty"):
        await db.fetchval("SELECT taskd.trigger('', '{}')")
    run_id = await db.fetchval(
        'SELECT taskd.trigger(\'add\', \'{}\', \'{"delay": "10 minutes", "priority": 3, '
        '"max_attempts": 2, "queue": "q1"}\')'
    )
    row = await db.fetchrow(
        "SELECT run_at - created_at AS wait, priority, max_attempts, queue, status "
        "FROM taskd.runs WHERE id = $1",
        run_id,
    )
    assert row["wait"].total_seconds() >= 600 and row["priority"] == 3
    assert row["max_attempts"] == 2 and row["queue"] == "q1" and row["status"] == "queued"


async def test_a_retry_starts_when_due_not_at_the_next_poll(client: Client, start_daemon) -> None:
    @task(id="punctual", retry=Retry(max_attempts=2, min_delay=1.2, jitter=False))
    async def punctual(payload: None, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("blip")
        return ctx.attempt

    # a poll interval far longer than the backoff: only the retry timer can start it in time
    async with start_daemon([punctual], poll_interval=30):
        run = await wait_for_run(client, await client.trigger(punctual), timeout=25)
    gap = (run.attempts[1].started_at - run.attempts[0].finished_at).total_seconds()
    # not before its backoff; and long before the next poll (30 s): the bound leaves a loaded
    # machine ten seconds, a retry left to the poll cannot meet it
    assert 1.2 <= gap < 12.0, gap
    assert run.max_attempts == 2, "get_run reports the task's policy when not overridden"

"""Retry and max_duration configured once and overridden: the trigger's retry over the task's
own over [tasks] retry in the config over the built-in Retry(). The backoff is read where the
database wrote it: a failed attempt queues the run again at ``now() + delay`` and records the
attempt's end at that same ``now()``, so ``run_at - finished_at`` is the delay the worker
chose, to the microsecond, without waiting for it."""

from __future__ import annotations

import uuid

import anyio
import asyncpg
import pytest

from taskd import Client, Context, Retry, RunStatus, task
from taskd.config import RetrySettings, Settings
from tests.support.waiting import wait_for, wait_for_run

# A delay long enough that the retried run never starts during the test.
LONG = 3600.0


def project_defaults(settings: Settings) -> None:
    settings.tasks.retry = RetrySettings(
        max_attempts=4, min_delay=LONG, max_delay=10 * LONG, factor=3, jitter=False
    )


@task(id="defaults-fails")
async def fails(payload: None, ctx: Context) -> None:
    raise ConnectionError(f"down on attempt {ctx.attempt} of {ctx.max_attempts}")


@task(
    id="defaults-own",
    retry=Retry(max_attempts=2, min_delay=LONG / 2, max_delay=LONG / 2, jitter=False),
)
async def fails_with_own_retry(payload: None, ctx: Context) -> None:
    raise ConnectionError(f"down on attempt {ctx.attempt} of {ctx.max_attempts}")


async def backoff_after_failure(db: asyncpg.Connection, run_id: uuid.UUID, attempt: int) -> float:
    """Seconds between the end of failed attempt ``attempt`` and the run's next start, once
    the run is queued again after it."""

    async def written() -> float | None:
        value: float | None = await db.fetchval(
            "SELECT extract(epoch FROM r.run_at - a.finished_at)::float8"
            "  FROM taskd.runs r JOIN taskd.attempts a ON a.run_id = r.id"
            " WHERE r.id = $1 AND r.status = 'queued' AND r.attempt = $2 AND a.attempt = $2",
            run_id,
            attempt,
        )
        return value

    delay: float = await wait_for(written)
    return delay


async def stored_policy(db: asyncpg.Connection, run_id: uuid.UUID) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT r.max_attempts, r.retry::text AS retry, r.max_duration, t.max_attempts AS task"
        "  FROM taskd.runs r LEFT JOIN taskd.tasks t ON t.id = r.task_id WHERE r.id = $1",
        run_id,
    )
    assert row is not None
    return row


async def test_the_project_default_applies_to_a_task_without_its_own(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([fails, fails_with_own_retry], project_defaults):
        run_id = await client.trigger(fails)
        own_id = await client.trigger(fails_with_own_retry)
        assert await backoff_after_failure(db, run_id, 1) == pytest.approx(LONG, abs=1e-3)
        # the task's own Retry wins over the project default, as a whole
        assert await backoff_after_failure(db, own_id, 1) == pytest.approx(LONG / 2, abs=1e-3)
        run = await client.get_run(run_id)
        own = await client.get_run(own_id)
    assert run.max_attempts == 4 and run.retry is None
    assert run.error is not None and "attempt 1 of 4" in run.error["message"]
    assert own.max_attempts == 2
    assert own.error is not None and "attempt 1 of 2" in own.error["message"]
    tasks = {row["id"]: row for row in await db.fetch("SELECT * FROM taskd.tasks")}
    assert tasks["defaults-fails"]["max_attempts"] == 4  # what SQL readers (the rescuer) see
    assert tasks["defaults-own"]["max_attempts"] == 2


async def test_the_backoff_follows_the_triggers_retry_from_python(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([fails, fails_with_own_retry], project_defaults):
        run_id = await client.trigger(
            fails_with_own_retry,
            retry={"max_attempts": 5, "min_delay": "20m", "factor": 2},
        )
        assert await backoff_after_failure(db, run_id, 1) == pytest.approx(1200, abs=1e-3)
        # due now: the second attempt fails and waits min_delay * factor (2400 s), capped by
        # the task's own max_delay (1800 s): the fields the trigger left out are the task's
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        second = await backoff_after_failure(db, run_id, 2)
        typed_id = await fails.trigger(
            None, retry=Retry(max_attempts=2, min_delay=30, max_delay=500, factor=10, jitter=False)
        )
        assert await backoff_after_failure(db, typed_id, 1) == pytest.approx(30, abs=1e-3)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", typed_id)
        typed = await wait_for_run(client, typed_id)
        run = await client.get_run(run_id)
    assert second == pytest.approx(1800, abs=1e-3)
    assert run.max_attempts == 5
    assert run.retry == {"min_delay": 1200.0, "factor": 2.0}
    assert run.error is not None and "of 5" in run.error["message"]
    # a Retry object is a whole policy: two attempts, then failed
    assert typed.status is RunStatus.FAILED and typed.attempt == 2
    assert typed.retry == {"min_delay": 30.0, "max_delay": 500.0, "factor": 10.0, "jitter": False}


async def test_the_backoff_follows_the_triggers_retry_from_sql(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([fails, fails_with_own_retry], project_defaults):
        run_id = await db.fetchval(
            "SELECT taskd.trigger('defaults-fails', 'null', $1::jsonb)",
            '{"retry": {"max_attempts": 5, "min_delay": "2 minutes", "max_delay": "1h",'
            ' "factor": 4, "jitter": false}}',
        )
        assert await backoff_after_failure(db, run_id, 1) == pytest.approx(120, abs=1e-3)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        assert await backoff_after_failure(db, run_id, 2) == pytest.approx(480, abs=1e-3)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        assert await backoff_after_failure(db, run_id, 3) == pytest.approx(1920, abs=1e-3)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        # min_delay * factor^3 = 7680 s, capped at the trigger's max_delay
        assert await backoff_after_failure(db, run_id, 4) == pytest.approx(3600, abs=1e-3)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        run = await wait_for_run(client, run_id)
    assert run.status is RunStatus.FAILED and run.attempt == 5
    policy = await stored_policy(db, run_id)
    assert policy["max_attempts"] == 5 and policy["task"] == 4
    assert run.retry == {"min_delay": 120.0, "max_delay": 3600.0, "factor": 4.0, "jitter": False}


async def test_only_the_attempt_limit_from_sql_keeps_the_tasks_backoff(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([fails, fails_with_own_retry], project_defaults):
        run_id = await db.fetchval(
            "SELECT taskd.trigger('defaults-own', 'null', '{\"retry\": {\"max_attempts\": 9}}')"
        )
        assert await backoff_after_failure(db, run_id, 1) == pytest.approx(LONG / 2, abs=1e-3)
    policy = await stored_policy(db, run_id)
    assert policy["max_attempts"] == 9 and policy["retry"] is None


@task(id="defaults-sleeps", retry=Retry(max_attempts=1))
async def sleeps(payload: float, ctx: Context) -> str:
    await anyio.sleep(payload)
    return "woke"


@task(id="defaults-sleeps-own", retry=Retry(max_attempts=1), max_duration=600)
async def sleeps_with_own_limit(payload: float, ctx: Context) -> str:
    await anyio.sleep(payload)
    return "woke"


async def test_max_duration_from_the_config_and_from_the_trigger(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    def limit(settings: Settings) -> None:
        settings.tasks.max_duration = 0.3

    async with start_daemon([sleeps, sleeps_with_own_limit], limit):
        by_default = await client.trigger(sleeps, 600)
        own = await client.trigger(sleeps_with_own_limit, 0.5)
        by_trigger = await client.trigger(sleeps_with_own_limit, 600, max_duration="200ms")
        from_sql = await db.fetchval(
            "SELECT taskd.trigger('defaults-sleeps-own', '600', '{\"max_duration\": \"0.2s\"}')"
        )
        runs = [await wait_for_run(client, r) for r in (by_default, own, by_trigger, from_sql)]
    assert [r.status for r in runs] == [
        RunStatus.FAILED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.FAILED,
    ]
    assert runs[0].attempts[0].outcome == "timed_out"
    assert runs[0].error is not None and "max_duration of 0.3s" in runs[0].error["message"]
    assert runs[2].error is not None and "max_duration of 0.2s" in runs[2].error["message"]
    assert runs[3].error is not None and "max_duration of 0.2s" in runs[3].error["message"]
    assert [r.max_duration for r in runs] == [None, None, 0.2, 0.2]


async def test_a_replay_keeps_the_runs_retry_and_max_duration(
    client: Client, db: asyncpg.Connection
) -> None:
    run_id = await client.trigger(
        "defaults-fails", retry={"min_delay": 5, "max_attempts": 2}, max_duration="1m"
    )
    replay = await client.get_run(await client.replay(run_id))
    assert replay.retry == {"min_delay": 5.0}
    assert replay.max_duration == 60.0
    assert (await stored_policy(db, replay.id))["max_attempts"] == 2


@task(id="defaults-parent", retry=Retry(max_attempts=1))
async def parent(payload: None, ctx: Context) -> list[str]:
    results = await sleeps.batch_trigger_and_wait(
        [600.0], retry={"max_attempts": 2, "min_delay": 0, "max_delay": 0}, max_duration="0.2s"
    )
    return [type(r).__name__ for r in results]


async def test_a_child_run_takes_the_parents_retry_and_max_duration(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    async with start_daemon([parent, sleeps]):
        run = await wait_for_run(client, await client.trigger(parent))
    assert run.status is RunStatus.COMPLETED and run.output == ["RunFailed"]
    [child] = await client.list_runs(task="defaults-sleeps")
    child = await client.get_run(child.id)
    assert child.parent_id == run.id and child.max_attempts == 2
    assert child.retry == {"min_delay": 0.0, "max_delay": 0.0} and child.max_duration == 0.2
    assert [a.outcome for a in child.attempts] == ["timed_out", "timed_out"]

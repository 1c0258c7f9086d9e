"""What a task hands back must be storable, and a value that is not never repeats the work.

A step's function that returned is never called again for its run: a result that cannot be
encoded, holds text PostgreSQL refuses, or is over ``[tasks] max_output_bytes`` fails the run
for good. Run outputs follow the same rule. Error messages are different: they are the
task's own report of a retryable failure, so NUL and lone surrogates in them are escaped and
stored, and the retry policy applies as for any other failure. Step writes and child-run
creation are a compare-and-set that waits for a concurrent change of the run's owner.
"""

from __future__ import annotations

import decimal
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, Retry, RunStatus, task
from taskd.config import Settings
from taskd.errors import InvalidPayload
from tests.support.waiting import wait_for, wait_for_run

QUICK = Retry(max_attempts=3, min_delay=0, max_delay=0, jitter=False)
CALLS: list[str] = []
SMALL_CAP = 1_000

UNSTORABLE: dict[str, Any] = {
    "decimal": decimal.Decimal("9.99"),
    "bytes": b"bytes",
    "set": {1, 2},
    "nul": "ok\x00",
    "nested-nul": {"rows": [{"note": "a\x00b"}]},
    "surrogate": os.fsdecode(b"report-\xff.csv"),
    "big": "x" * (SMALL_CAP + 1),
}
# what the error message must name: the type, or the reason
REASON = {
    "decimal": "Decimal",
    "bytes": "bytes",
    "set": "set",
    "nul": "NUL",
    "nested-nul": "NUL",
    "surrogate": "surrogates",
    "big": f"{SMALL_CAP + 3} bytes, over the limit of {SMALL_CAP} bytes",
}


def small_cap(settings: Settings) -> None:
    settings.tasks.max_output_bytes = SMALL_CAP


@task(id="results.step", retry=QUICK)
async def charging(payload: dict[str, Any], ctx: Context) -> str:
    def charge() -> Any:
        CALLS.append(payload["kind"])
        return UNSTORABLE[payload["kind"]]

    step_retry = QUICK if payload["step_retry"] else None
    await ctx.step("charge", charge, retry=step_retry)
    return "unreachable"


@task(id="results.swallowing", retry=QUICK)
async def swallowing(payload: None, ctx: Context) -> str:
    def charge() -> Any:
        CALLS.append("swallowed")
        return decimal.Decimal("1.50")

    try:
        await ctx.step("charge", charge)
    except Exception:  # a broad handler in the task: the step must still not run again
        pass
    if ctx.attempt < 3:
        raise ConnectionError("a later failure of the attempt")
    return "done"


@pytest.mark.parametrize("step_retry", [False, True], ids=["run-retry", "step-retry"])
async def test_a_step_result_that_cannot_be_stored_fails_the_run_and_is_never_called_again(
    client: Client, start_daemon: Any, step_retry: bool
) -> None:
    CALLS.clear()
    async with start_daemon([charging], small_cap):
        ids = {
            kind: await client.trigger(charging, {"kind": kind, "step_retry": step_retry})
            for kind in UNSTORABLE
        }
        runs = {kind: await wait_for_run(client, run_id) for kind, run_id in ids.items()}
    assert sorted(CALLS) == sorted(UNSTORABLE), "each step's function was called exactly once"
    for kind, run in runs.items():
        assert run.status is RunStatus.FAILED, kind
        assert run.attempt == 1 and len(run.attempts) == 1, (kind, run.attempts)
        assert run.error is not None and run.error["type"] == "StepResultNotStored", run.error
        assert "step 'charge'" in run.error["message"], run.error
        assert REASON[kind] in run.error["message"], run.error
        [step] = run.steps
        assert (step.name, step.status, step.attempts) == ("charge", "failed", 1), kind
        assert step.error is not None and step.error["type"] == "StepResultNotStored"


async def test_a_caught_unstorable_step_result_is_still_never_called_again(
    client: Client, start_daemon: Any
) -> None:
    CALLS.clear()
    async with start_daemon([swallowing]):
        run = await wait_for_run(client, await client.trigger(swallowing))
    assert CALLS == ["swallowed"], "each attempt got the error again, without the call"
    assert run.status is RunStatus.COMPLETED and run.attempt == 3, run.attempts
    assert [a.error["type"] for a in run.attempts[:2] if a.error] == ["ConnectionError"] * 2
    [step] = run.steps
    assert step.status == "failed" and step.error is not None
    assert step.error["type"] == "StepResultNotStored" and "Decimal" in step.error["message"]


async def test_a_step_result_at_the_cap_is_stored(client: Client, start_daemon: Any) -> None:
    @task(id="results.at-cap")
    async def at_cap(payload: None, ctx: Context) -> int:
        value = await ctx.step("fill", lambda: "x" * (SMALL_CAP - 2))  # + 2 quotes
        return len(value)

    async with start_daemon([at_cap], small_cap):
        run = await wait_for_run(client, await client.trigger(at_cap))
    assert run.status is RunStatus.COMPLETED and run.output == SMALL_CAP - 2, run.error


# outputs ----------------------------------------------------------------------------------


@task(id="results.output", retry=QUICK)
async def returning(payload: str, ctx: Context) -> Any:
    CALLS.append(payload)
    return UNSTORABLE[payload]


@returning.on_failure
async def returning_failed(payload: str, error: BaseException, attempts: int, ctx: Context) -> None:
    CALLS.append(f"on_failure-{payload}")


async def test_an_output_that_cannot_be_stored_fails_the_run_once_and_alone(
    client: Client, db: Any, start_daemon: Any
) -> None:
    CALLS.clear()

    @task(id="results.fine")
    async def fine(payload: None, ctx: Context) -> str:
        return "fine"

    async with start_daemon([returning, fine], small_cap, concurrency=20):
        bad = {kind: await client.trigger(returning, kind) for kind in UNSTORABLE}
        good = await client.batch_trigger(fine, [None] * 10)
        runs = {kind: await wait_for_run(client, run_id) for kind, run_id in bad.items()}
        others = [await wait_for_run(client, run_id) for run_id in good]
    assert sorted(CALLS) == sorted([*UNSTORABLE, *(f"on_failure-{k}" for k in UNSTORABLE)]), (
        "a returned task function is not called again; the dead-letter hook runs"
    )
    for kind, run in runs.items():
        assert run.status is RunStatus.FAILED and run.attempt == 1, (kind, run.attempts)
        assert run.error is not None and run.error["type"] == "OutcomeNotStored", run.error
        assert "output" in run.error["message"] and REASON[kind] in run.error["message"], run.error
    assert all(r.status is RunStatus.COMPLETED and r.output == "fine" for r in others)
    # the executor ran on_failure itself: no second run of the hook is owed
    assert await db.fetchval("SELECT count(*) FROM taskd.failure_hooks") == 0


# error messages ---------------------------------------------------------------------------

MESSAGES = {"nul": "bad \x00 byte", "surrogate": "no such file: " + os.fsdecode(b"\xff")}
STORED = {"nul": "bad \\x00 byte", "surrogate": "no such file: \\udcff"}


@task(id="results.raising", retry=QUICK)
async def raising(payload: str, ctx: Context) -> None:
    CALLS.append(payload)
    raise ValueError(MESSAGES[payload])


@task(id="results.step-raising", retry=QUICK)
async def step_raising(payload: str, ctx: Context) -> None:
    def parse() -> None:
        CALLS.append(f"step-{payload}")
        raise ValueError(MESSAGES[payload])

    await ctx.step("parse", parse)


async def test_an_error_message_with_nul_or_a_lone_surrogate_is_stored_and_retried(
    client: Client, start_daemon: Any
) -> None:
    CALLS.clear()
    async with start_daemon([raising, step_raising]):
        ids = {kind: await client.trigger(raising, kind) for kind in MESSAGES}
        step_ids = {kind: await client.trigger(step_raising, kind) for kind in MESSAGES}
        runs = {kind: await wait_for_run(client, run_id) for kind, run_id in ids.items()}
        step_runs = {kind: await wait_for_run(client, i) for kind, i in step_ids.items()}
    assert sorted(CALLS) == sorted([*MESSAGES] * 3 + [f"step-{k}" for k in MESSAGES] * 3)
    for kind, run in {**runs, **{f"step-{k}": r for k, r in step_runs.items()}}.items():
        stored = STORED[kind.removeprefix("step-")]
        assert run.status is RunStatus.FAILED, kind
        assert [a.attempt for a in run.attempts] == [1, 2, 3], (kind, run.attempts)
        for attempt in run.attempts:
            assert attempt.error is not None and attempt.error["type"] == "ValueError"
            assert attempt.error["message"] == stored, attempt.error
            assert stored in attempt.error["traceback"]
        assert run.error == run.attempts[-1].error
    for kind, run in step_runs.items():
        [step] = run.steps
        assert step.status == "failed" and step.error == {
            "type": "ValueError",
            "message": STORED[kind],
        }


# ownership: step writes and child runs are a compare-and-set ------------------------------

GATE: dict[str, anyio.Event] = {}
SEEN: dict[str, Any] = {}


@task(id="results.owned-step")
async def owned_step(payload: None, ctx: Context) -> str:
    async def work() -> str:
        GATE["entered"].set()
        await GATE["go"].wait()
        return "done"

    SEEN["step"] = await ctx.step("work", work)
    return "finished"


@task(id="results.child")
async def child(payload: None, ctx: Context) -> None:
    return None


@task(id="results.owned-parent")
async def owned_parent(payload: None, ctx: Context) -> None:
    GATE["entered"].set()
    await GATE["go"].wait()
    try:
        await child.trigger_and_wait(None)
    except RuntimeError as exc:
        SEEN["children"] = exc
        raise


@pytest.fixture
async def observer(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("definition", "statement", "written"),
    [
        (
            owned_step,
            "INSERT INTO taskd.steps",
            "SELECT count(*) FROM taskd.steps WHERE run_id = $1",
        ),
        (owned_parent, "WITH owner AS", "SELECT count(*) FROM taskd.runs WHERE parent_id = $1"),
    ],
    ids=["step_record", "children_create"],
)
async def test_a_write_under_the_run_waits_for_a_concurrent_change_of_its_owner(
    client: Client,
    start_daemon: Any,
    db: asyncpg.Connection,
    observer: asyncpg.Connection,
    definition: Any,
    statement: str,
    written: str,
) -> None:
    GATE.update(entered=anyio.Event(), go=anyio.Event())
    SEEN.clear()
    async with start_daemon([definition, child]):
        run_id = await client.trigger(definition)
        with anyio.fail_after(10):
            await GATE["entered"].wait()
        # Another session takes the run from this worker (a rescue and a claim elsewhere), and
        # has not committed yet when the worker writes under the run.
        transaction = db.transaction()
        await transaction.start()
        await db.execute("UPDATE taskd.runs SET worker_id = $2 WHERE id = $1", run_id, uuid.uuid4())
        GATE["go"].set()

        async def waits_or_wrote() -> str | None:
            waiting = await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND state = 'active' AND query LIKE $1",
                f"%{statement}%",
            )
            if waiting:
                return "waits"
            return "wrote" if await observer.fetchval(written, run_id) else None

        assert await wait_for(waits_or_wrote) == "waits", "the write did not wait for the owner"
        await transaction.commit()

        async def returned() -> bool:
            return bool(SEEN)

        await wait_for(returned)
        assert await observer.fetchval(written, run_id) == 0, "written for a run not its own"


async def test_an_outcome_the_database_refuses_fails_only_its_run_with_a_clear_error(
    client: Client, start_daemon: Any, db: asyncpg.Connection
) -> None:
    # Outputs are checked before the write, so a refusal stands in for what no check
    # foresees: the refused batch is written one by one and only that run fails.
    await db.execute(
        """
        CREATE FUNCTION public.refuse_output() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.output = '"refuse me"'::jsonb THEN
                RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_output BEFORE UPDATE ON taskd.runs
            FOR EACH ROW EXECUTE FUNCTION public.refuse_output();
        """
    )

    @task(id="results.refused")
    async def refused(payload: int, ctx: Context) -> str:
        return "refuse me" if payload == 3 else "fine"

    async with start_daemon([refused], concurrency=20):
        ids = await client.batch_trigger(refused, list(range(10)))
        runs = [await wait_for_run(client, run_id) for run_id in ids]
    assert [r.status for r in runs] == ["completed"] * 3 + ["failed"] + ["completed"] * 6
    error = runs[3].error
    assert error is not None and error["type"] == "OutcomeNotStored", error
    assert (
        "outcome could not be stored, the database refused it: refused by the test"
        in (error["message"])
    )


async def test_a_step_record_the_database_cannot_take_now_is_retried_not_the_step(
    client: Client, start_daemon: Any, db: asyncpg.Connection
) -> None:
    # The first write of the step's record fails as a lock timeout would (a sequence, not a
    # table: the error rolls a table's change back).
    await db.execute(
        """
        CREATE SEQUENCE public.step_writes;
        CREATE FUNCTION public.busy_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('public.step_writes') = 1 THEN
                RAISE EXCEPTION 'busy' USING ERRCODE = '55P03';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER busy_once BEFORE INSERT ON taskd.steps
            FOR EACH ROW EXECUTE FUNCTION public.busy_once();
        """
    )
    CALLS.clear()

    @task(id="results.record-retried", retry=QUICK)
    async def recorded(payload: None, ctx: Context) -> str:
        def charge() -> str:
            CALLS.append("charged")
            return "receipt-1"

        return str(await ctx.step("charge", charge))

    async with start_daemon([recorded]):
        run = await wait_for_run(client, await client.trigger(recorded))
    assert CALLS == ["charged"]
    assert run.status is RunStatus.COMPLETED and run.attempt == 1, run.attempts
    assert run.output == "receipt-1" and [s.result for s in run.steps] == ["receipt-1"]
    assert await db.fetchval("SELECT last_value FROM public.step_writes") == 2


async def test_payloads_and_token_data_with_nul_are_refused_with_a_clear_error(
    client: Client,
) -> None:
    with pytest.raises(InvalidPayload, match="NUL"):
        await client.trigger("results.anything", {"note": ["a\x00b"]})
    with pytest.raises(InvalidPayload, match="surrogates"):
        await client.trigger("results.anything", os.fsdecode(b"\xff"))
    with pytest.raises(InvalidPayload, match="NUL"):
        await client.complete_token(uuid.uuid4(), {"k\x00": 1})
    assert await client.list_runs() == []

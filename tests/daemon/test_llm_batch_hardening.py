"""ctx.llm.batch hardened: a batch's step is named from the ctx.step it is called in (a step
replayed from its record does not renumber the batches after it), a recorded batch is returned
only for the same requests, a NUL in a result or an error is stored escaped, a result set too
large or refused by the database ends the batch with per-request errors (the run wakes, never a
loop of downloads), and a batch submitted but not recorded is canceled."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from anthropic.types import Message

from taskd import BatchRequestFailed, Budget, Client, Context, Queue, RunStatus, task
from taskd.store import llm_batches as batch_store
from taskd.store.llm_batches import LLMBatchStore
from taskd.testing.anthropic import FakeAnthropic, Reply
from tests.support.llm import calls_of, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
TENANTS = Queue("llm-batch-hardening", budget=Budget(usd=1, per="1d"))


def _request(n: int) -> dict[str, Any]:
    return {"max_tokens": 50, "messages": [{"role": "user", "content": f"runner {n}"}]}


def _numbered(body: dict[str, Any]) -> Reply:
    number = int(body["messages"][0]["content"].split()[-1])
    return Reply(f"letter {number}", input_tokens=10, output_tokens=5)


def _texts(results: list[Any]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if isinstance(result, BatchRequestFailed):
            out.append([result.custom_id, result.error_type, result.message])
        else:
            assert isinstance(result, Message)
            block = result.content[0]
            assert block.type == "text"
            out.append(block.text)
    return out


@task(id="hardening.two_batch_steps")
async def two_batch_steps(payload: Any, ctx: Context) -> list[str]:
    async def one(n: int) -> str:
        [text] = _texts(await ctx.llm.batch([_request(n)]))
        return str(text)

    a = await ctx.step("a", one, 1)
    b = await ctx.step("b", one, 2)
    return [a, b]


# what the next execution of hardening.changing asks for (a batch skipped or changed by code
# that depends on live data)
ASKED: dict[str, list[str]] = {"ids": []}


@task(id="hardening.changing")
async def changing(payload: Any, ctx: Context) -> list[Any]:
    requests = [{"custom_id": c, "params": _request(i)} for i, c in enumerate(ASKED["ids"])]
    return _texts(await ctx.llm.batch(requests))


@task(id="hardening.in_step")
async def in_step(payload: Any, ctx: Context) -> list[Any]:
    async def premium() -> list[Any]:
        return _texts(await ctx.llm.batch([_request(1), _request(2)]))

    result: list[Any] = await ctx.step("premium", premium)
    return result + _texts(await ctx.llm.batch([_request(3)]))


@task(id="hardening.letters")
async def letters(payload: dict[str, Any], ctx: Context) -> list[Any]:
    return _texts(await ctx.llm.batch([_request(i) for i in range(payload["n"])]))


@task(id="hardening.tenant", queue=TENANTS)
async def tenant(payload: Any, ctx: Context) -> list[Any]:
    return _texts(await ctx.llm.batch([_request(1)]))


async def _status(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


async def _waiting(client: Client, run_id: Any) -> None:
    await wait_for(lambda: _status(client, run_id, RunStatus.WAITING))


def _count(fake: FakeAnthropic, suffix: str) -> int:
    return sum(1 for r in fake.requests if r.path.endswith(suffix))


async def test_a_batch_in_a_step_after_a_replayed_step_gets_its_own_results(
    client: Client, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    config = llm_config(fake_anthropic, batch_poll_interval=0.2)
    async with start_daemon([two_batch_steps], config):
        run_id = await client.trigger("hardening.two_batch_steps", {})
        await _waiting(client, run_id)
        fake_anthropic.end_batch(fake_anthropic.batch_ids[0])

        async def second_submitted() -> bool:
            return len(fake_anthropic.batch_ids) == 2

        # the run executes again: step a replayed from its record (its batch not called), b's
        # batch submitted
        await wait_for(second_submitted)
        await _waiting(client, run_id)
        fake_anthropic.end_batch(fake_anthropic.batch_ids[1])
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == ["letter 1", "letter 2"]
    names = [s.name for s in done.steps]
    assert "llm-batch:a:1" in names and "llm-batch:b:1" in names


async def test_a_recorded_batch_holding_other_requests_fails_the_run_clearly(
    client: Client, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    ASKED["ids"] = ["first-0", "first-1"]
    async with start_daemon([changing], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.changing", {})
        await _waiting(client, run_id)
        ASKED["ids"] = ["other-0", "other-1"]  # the next execution asks for other requests
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED
    assert len(done.attempts) == 1  # not retried: the same code would ask the same
    message = str(done.error)
    assert "BatchStepMismatch" in message and "holds other requests" in message
    assert "'first-0' there, 'other-0' here" in message
    assert len(fake_anthropic.batch_ids) == 1  # never submitted again


async def test_a_batch_recorded_in_a_step_by_an_older_taskd_is_still_read(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    async with start_daemon([in_step], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.in_step", {})
        await _waiting(client, run_id)
        # as an older taskd recorded it: numbered per execution (llm-batch:1), not per step
        for table in ("steps", "llm_batches"):
            await db.execute(
                f"UPDATE taskd.{table} SET step = 'llm-batch:1' WHERE run_id = $1"
                if table == "llm_batches"
                else f"UPDATE taskd.{table} SET name = 'llm-batch:1' WHERE run_id = $1",
                run_id,
            )
        fake_anthropic.end_batch(fake_anthropic.batch_ids[0])

        async def second_submitted() -> bool:
            return len(fake_anthropic.batch_ids) == 2

        # adopted, not submitted again: the step completes; the batch after it, outside the
        # step, is submitted under llm-batch::1 (llm-batch:1 is the older taskd's)
        await wait_for(second_submitted)
        await _waiting(client, run_id)
        fake_anthropic.end_batch(fake_anthropic.batch_ids[1])
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == ["letter 1", "letter 2", "letter 3"]
    assert len(fake_anthropic.batch_ids) == 2
    names = [s.name for s in done.steps]
    assert names == ["llm-batch:1", "premium", "llm-batch::1"]


async def test_a_nul_in_a_result_is_stored_escaped_and_the_run_completes(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("a NUL \x00 here", input_tokens=10, output_tokens=5)
    fake_anthropic.batch_error_message = "bad \x00 byte"
    config = llm_config(fake_anthropic, batch_poll_interval=0.2)
    async with start_daemon([letters], config):
        run_id = await client.trigger("hardening.letters", {"n": 2})
        await _waiting(client, run_id)
        fake_anthropic.batch_outcome("request-1", "errored")
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    # NUL written as the four characters \x00, as taskd stores every text
    assert done.output == [
        "a NUL \\x00 here",
        ["request-1", "invalid_request_error", "bad \\x00 byte"],
    ]
    calls = await calls_of(db, run_id)
    assert [c["outcome"] for c in calls] == ["ok", "errored"]
    assert calls[1]["error"] == "invalid_request_error: bad \\x00 byte"
    assert calls[0]["input_tokens"] == 10  # its cost recorded


async def test_results_past_the_size_bound_are_stored_as_per_request_errors(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_anthropic.reply(lambda body: Reply("x" * 1000, input_tokens=10, output_tokens=300))
    monkeypatch.setattr(batch_store, "MAX_RESULTS_BYTES", 3300)  # two results (~1.3 kB each) fit
    async with start_daemon([letters], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.letters", {"n": 4})
        await _waiting(client, run_id)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output[:2] == ["x" * 1000] * 2
    for _, error_type, message in done.output[2:]:
        assert error_type == "results_too_large"
        assert "limit of 3300 bytes" in message and "split the batch" in message
    assert [c[0] for c in done.output[2:]] == ["request-2", "request-3"]
    # every request's cost recorded (the API billed them all)
    calls = await calls_of(db, run_id)
    assert [c["output_tokens"] for c in calls] == [300] * 4
    assert _count(fake_anthropic, "/results") == 1


async def test_results_the_database_refuses_end_the_batch_with_the_cause(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_anthropic.reply(_numbered)
    real = batch_store.storable_results

    def refused(results: Any, limit: int | None = None) -> str:
        encoded = real(results, limit)
        if "letter" in encoded:  # what jsonb refuses, as a NUL before this fix
            return encoded.replace("letter", "\\u0000")
        return encoded

    monkeypatch.setattr(batch_store, "storable_results", refused)
    async with start_daemon([letters], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.letters", {"n": 2})
        await _waiting(client, run_id)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    for _, error_type, message in done.output:
        assert error_type == "results_not_stored"
        assert message.startswith("the database refused this batch's results: ")
    calls = await calls_of(db, run_id)
    assert [c["input_tokens"] for c in calls] == [10, 10]  # what was billed, still recorded
    assert _count(fake_anthropic, "/results") == 1  # downloaded once


async def test_an_end_that_failed_to_be_stored_three_times_is_not_downloaded_again(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    async with start_daemon([letters], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.letters", {"n": 2})
        await _waiting(client, run_id)
        # three tries at storing it failed (recorded by the poller when they do)
        await db.execute(
            "UPDATE taskd.llm_batches SET finish_failures = 3, "
            "last_error = 'QueryCanceledError: canceling statement due to statement timeout' "
            "WHERE run_id = $1",
            run_id,
        )
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    for _, error_type, message in done.output:
        assert error_type == "results_not_stored"
        assert message == (
            "taskd could not store this batch's results after 3 tries: "
            "QueryCanceledError: canceling statement due to statement timeout"
        )
    assert _count(fake_anthropic, "/results") == 0
    ended = await db.fetchval("SELECT status FROM taskd.llm_batches WHERE run_id = $1", run_id)
    assert ended == "ended"


async def test_a_batch_submitted_but_not_recorded_is_canceled_and_its_reservation_released(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_anthropic.reply(_numbered)

    async def database_away(self: LLMBatchStore, batch: Any) -> bool:
        # what the record's patient retries raise in the end (the database away past them)
        raise RuntimeError("the database is away (past the patience)")

    monkeypatch.setattr(LLMBatchStore, "record", database_away)
    caplog.set_level(logging.ERROR, logger="taskd.llm")
    async with start_daemon([tenant], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("hardening.tenant", {}, concurrency_key="u-1")

        async def attempt_failed() -> bool:
            return len((await client.get_run(run_id)).attempts) >= 1

        await wait_for(attempt_failed)
        await client.cancel(run_id)
    [batch_id, *_] = fake_anthropic.batch_ids
    assert _count(fake_anthropic, f"/{batch_id}/cancel") == 1
    assert any(batch_id in r.getMessage() for r in caplog.records)
    admissions = await db.fetch(
        "SELECT settled, cost FROM taskd.llm_admissions WHERE run_id = $1 ORDER BY id", run_id
    )
    assert admissions and admissions[0]["settled"] and admissions[0]["cost"] == 0
    run = await client.get_run(run_id)
    assert "the database is away" in str(run.attempts[0].error)

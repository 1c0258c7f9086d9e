"""ctx.llm: the official SDK inside a task, each call recorded with its tokens and cost, and
the API's bad days (429, 529, 5xx, lost connections) waited out in the queue, not in a slot
and not with the run's attempts; refused requests fail the run at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from taskd import Client, Context, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Write one line about running."}]


@task(id="llm.letter")
async def letter(payload: dict[str, Any], ctx: Context) -> str:
    async def write() -> str:
        message = await ctx.llm.messages.create(
            model=payload.get("model", HAIKU), max_tokens=200, messages=HELLO
        )
        block = message.content[0]
        assert block.type == "text"
        return block.text

    text: str = await ctx.step("write", write)
    return text


@task(id="llm.quick")
async def quick(payload: Any, ctx: Context) -> str:
    return "quick"


async def test_a_call_is_recorded_with_its_tokens_cost_and_step(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(
        "Ten miles in the rain.",
        input_tokens=312,
        output_tokens=147,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=20,
    )
    async with start_daemon([letter], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.letter", {}, tags=["user:u-1"], concurrency_key="u-1")
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == "Ten miles in the rain."
    [call] = await calls_of(db, run_id)
    assert call["model"] == HAIKU and call["kind"] == "message" and call["outcome"] == "ok"
    assert (call["input_tokens"], call["output_tokens"]) == (312, 147)
    assert (call["cache_read_tokens"], call["cache_write_tokens"]) == (1000, 20)
    # $1 / $5 per million; cache reads at a tenth of input, writes at 1.25 times
    expected = (
        dollars(312, 147, "1", "5") + dollars(1000, 0, "0.1", "0") + dollars(20, 0, "1.25", "0")
    )
    assert call["cost_usd"] == expected
    assert call["step"] == "write" and call["task_id"] == "llm.letter"
    assert call["attempt"] == 1 and call["concurrency_key"] == "u-1"
    assert call["tags"] == ["user:u-1"] and call["stop_reason"] == "end_turn"
    assert call["request_id"].startswith("req_fake_")
    # the SDK's own retries are off: one request
    assert len(fake_anthropic.message_requests) == 1
    assert fake_anthropic.message_requests[0].headers.get("x-stainless-retry-count") in (
        None,
        "0",
    )


async def test_a_429_frees_the_slot_spends_no_attempt_and_backs_off_the_model(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=429, retry_after=60)
    async with start_daemon([letter, quick], llm_config(fake_anthropic), concurrency=1):
        run_id = await client.trigger("llm.letter", {})

        async def waiting() -> bool:
            return (await client.get_run(run_id)).status is RunStatus.WAITING

        await wait_for(waiting)
        run = await client.get_run(run_id)
        # back in the queue until the API's retry-after: no slot, no attempt spent
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(seconds=50)
        assert run.attempt == 0 and run.worker_id is None
        other = await client.trigger("llm.quick", {})
        assert (await wait_for_run(client, other)).output == "quick"
        # the whole fleet knows: no call of the model before the reset
        until = await db.fetchval("SELECT until FROM taskd.llm_backoffs WHERE model = $1", HAIKU)
        assert until > datetime.now(UTC) + timedelta(seconds=50)
        # the minute passes (skipped, not waited for)
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == "Done."
    assert done.attempt == 1 and [a.outcome.value for a in done.attempts] == ["completed"]
    rate_limited, ok = await calls_of(db, run_id)
    assert rate_limited["outcome"] == "rate_limited" and rate_limited["cost_usd"] is None
    assert "rate_limit_error" in rate_limited["error"]
    assert ok["outcome"] == "ok" and ok["cost_usd"] == dollars(10, 5, "1", "5")
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_deferrals") == 0


async def test_a_refused_request_fails_the_run_at_once_with_the_api_message(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.fail_next(status=400, message="Your credit balance is too low")
    async with start_daemon([letter], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.letter", {})
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and len(done.attempts) == 1
    assert done.error is not None and done.error["type"] == "LLMRequestRefused"
    assert "credit balance is too low" in done.error["message"]
    [call] = await calls_of(db, run_id)
    assert call["outcome"] == "refused" and len(fake_anthropic.message_requests) == 1


async def status_is(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


async def skip_backoffs(db: asyncpg.Connection) -> None:
    """The API's wait is over: backoffs and the runs' wake-up times move to now."""
    await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
    await db.execute("UPDATE taskd.runs SET run_at = now() WHERE status = 'waiting'")


async def test_an_overload_backs_off_the_model_for_every_run_until_a_call_succeeds(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=529)
    async with start_daemon([letter], llm_config(fake_anthropic, overload_backoff=40)):
        first = await client.trigger("llm.letter", {})
        await wait_for(lambda: status_is(client, first, RunStatus.WAITING))
        backoff = await db.fetchrow("SELECT * FROM taskd.llm_backoffs WHERE model = $1", HAIKU)
        # the adaptive backoff's first step: 40 s with jitter (half to all of it)
        assert backoff["overloads"] == 1 and "overloaded_error" in backoff["reason"]
        left = (backoff["until"] - datetime.now(UTC)).total_seconds()
        assert 15 < left <= 40
        # another run of the model waits without calling the API at all
        second = await client.trigger("llm.letter", {})
        await wait_for(lambda: status_is(client, second, RunStatus.WAITING))
        assert len(fake_anthropic.message_requests) == 1
        assert (await client.get_run(second)).attempt == 0
        await skip_backoffs(db)
        done = [await wait_for_run(client, run_id) for run_id in (first, second)]
    assert [run.status for run in done] == [RunStatus.COMPLETED] * 2
    assert [run.attempt for run in done] == [1, 1]
    assert len(fake_anthropic.message_requests) == 3
    # a success ends the streak: the next overload starts again from the first step
    assert (
        await db.fetchval("SELECT overloads FROM taskd.llm_backoffs WHERE model = $1", HAIKU) == 0
    )
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_deferrals") == 0


async def test_server_and_connection_errors_wait_for_this_run_only(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=500)
    fake_anthropic.fail_next(disconnect=True)
    async with start_daemon([letter], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.letter", {})
        for deferrals in (1, 2):

            async def deferred(n: int = deferrals) -> bool:
                got = await db.fetchval(
                    "SELECT deferrals FROM taskd.llm_deferrals WHERE run_id = $1", run_id
                )
                return got == n and await status_is(client, run_id, RunStatus.WAITING)

            await wait_for(deferred)
            # the fleet goes on calling the model: no backoff for one run's trouble
            assert await db.fetchval("SELECT count(*) FROM taskd.llm_backoffs") == 0
            await skip_backoffs(db)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.attempt == 1
    outcomes = [call["outcome"] for call in await calls_of(db, run_id)]
    assert outcomes == ["server_error", "connection_error", "ok"]


async def test_past_max_wait_the_run_fails_with_the_api_message(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.fail_next(status=429, retry_after=20, message="Number of requests exceeded")
    fake_anthropic.fail_next(status=429, retry_after=20, message="Number of requests exceeded")
    async with start_daemon([letter], llm_config(fake_anthropic, max_wait=600)):
        run_id = await client.trigger("llm.letter", {})
        await wait_for(lambda: status_is(client, run_id, RunStatus.WAITING))
        # the run has been waiting for the API for most of max_wait already
        await db.execute("UPDATE taskd.llm_deferrals SET since = now() - interval '590 seconds'")
        await skip_backoffs(db)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and len(done.attempts) == 1
    assert done.error is not None and done.error["type"] == "LLMUnavailable"
    assert "Number of requests exceeded" in done.error["message"]
    assert "max_wait" in done.error["message"]


PAID: dict[str, int] = {}


@task(id="llm.letter_then_save", retry=None)
async def letter_then_save(payload: dict[str, Any], ctx: Context) -> str:
    async def write() -> str:
        message = await ctx.llm.messages.create(max_tokens=100, messages=HELLO)
        block = message.content[0]
        assert block.type == "text"
        return block.text

    text: str = await ctx.step("write", write)
    PAID[str(ctx.run_id)] = PAID.get(str(ctx.run_id), 0) + 1
    if ctx.attempt == 1:
        raise RuntimeError("the app's API was down while saving")
    return text


async def test_a_call_in_a_step_is_not_paid_again_when_the_run_retries(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Paid once.", input_tokens=10, output_tokens=5)
    async with start_daemon([letter_then_save], llm_config(fake_anthropic, model=HAIKU)):
        run_id = await client.trigger(
            "llm.letter_then_save", {}, retry={"max_attempts": 2, "min_delay": 0, "max_delay": 0}
        )
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == "Paid once."
    assert done.attempt == 2 and PAID[str(run_id)] == 2
    # the second attempt got the letter from the step's record: one request, one cost
    assert len(fake_anthropic.message_requests) == 1
    [call] = await calls_of(db, run_id)
    assert call["model"] == HAIKU  # [llm] model, for a call naming none
    assert call["cost_usd"] == dollars(10, 5, "1", "5")


async def test_without_an_api_key_the_run_fails_saying_which_variable(
    client: Client, start_daemon, fake_anthropic: FakeAnthropic, monkeypatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    async with start_daemon([letter], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.letter", {})
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert "ANTHROPIC_API_KEY" in done.error["message"]
    assert fake_anthropic.requests == []


async def test_a_price_from_the_config_and_a_model_without_one(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=1_000_000, output_tokens=2_000)

    def prices(settings: Any) -> None:
        settings.llm.prices["claude-house-1"] = settings.llm.prices[HAIKU].model_copy(
            update={"input": 0.5, "output": 2.5}
        )

    async with start_daemon([letter], llm_config(fake_anthropic, then=prices)):
        house = await client.trigger("llm.letter", {"model": "claude-house-1-20270101"})
        unknown = await client.trigger("llm.letter", {"model": "gpt-unknown"})
        for run_id in (house, unknown):
            assert (await wait_for_run(client, run_id)).status is RunStatus.COMPLETED
    [priced] = await calls_of(db, house)
    assert priced["cost_usd"] == Decimal("0.5") + dollars(0, 2_000, "0", "2.5")
    [unpriced] = await calls_of(db, unknown)
    assert unpriced["cost_usd"] is None and unpriced["input_tokens"] == 1_000_000

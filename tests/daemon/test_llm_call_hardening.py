"""ctx.llm on the API's bad days, hardened: a run's wait for the API belongs to the key that
deferred it (the count_tokens call a token limit makes before each message does not end it,
so `[llm] max_wait` fires); the answers of calls in flight when the API overloaded lengthen
the model's streak once; a call canceled in flight is recorded and its reservation settled;
a stream whose message ended ends the run's wait even when its block raises; a count_tokens
the endpoint refuses names the way out."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, Queue, Rate, Retry, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic, Reply
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Write one line about running."}]
TPM = Queue("hardening-tpm", rate_limit=Rate(tokens=100_000, per="1m"))
BURST = Queue("hardening-burst", concurrency=6)


def only_messages(body: Any) -> bool:
    """The message requests (count_tokens takes no max_tokens)."""
    return isinstance(body, dict) and "max_tokens" in body


def only_counts(body: Any) -> bool:
    return isinstance(body, dict) and "max_tokens" not in body


async def skip_backoffs(db: asyncpg.Connection) -> None:
    """The API's wait passes (skipped, not waited for)."""
    await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
    await db.execute("UPDATE taskd.runs SET run_at = now() WHERE status = 'waiting'")


async def status_is(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


@task(id="hardening.tpm_letter", queue=TPM)
async def tpm_letter(payload: Any, ctx: Context) -> str:
    async def write() -> str:
        message = await ctx.llm.messages.create(model=HAIKU, max_tokens=200, messages=HELLO)
        block = message.content[0]
        assert block.type == "text"
        return block.text

    text: str = await ctx.step("write", write)
    return text


async def test_past_max_wait_the_run_fails_under_a_token_limited_queue(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(
        status=429, retry_after=20, message="Number of requests exceeded", times=2,
        match=only_messages,
    )  # fmt: skip
    async with start_daemon([tpm_letter], llm_config(fake_anthropic, max_wait=600)):
        run_id = await client.trigger("hardening.tpm_letter", {})
        await wait_for(lambda: status_is(client, run_id, RunStatus.WAITING))
        # the run waits for the model (the key whose call deferred it), in its first attempt
        rows = await db.fetch(
            "SELECT key, attempt FROM taskd.llm_deferrals WHERE run_id = $1", run_id
        )
        assert [tuple(row) for row in rows] == [(HAIKU, 1)]
        # 590 s of the 600 pass; then the token limit's count_tokens succeeds, the message
        # gets a 429 again, and the next try would be past max_wait
        await db.execute("UPDATE taskd.llm_deferrals SET since = since - interval '590 seconds'")
        await skip_backoffs(db)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert done.error["type"] == "LLMUnavailable"
    assert (
        "max_wait" in done.error["message"]
        and "Number of requests exceeded" in done.error["message"]
    )
    kinds = [(call["kind"], call["outcome"]) for call in await calls_of(db, run_id)]
    assert kinds == [
        ("count_tokens", "ok"),
        ("message", "rate_limited"),
        ("count_tokens", "ok"),
        ("message", "rate_limited"),
    ]
    assert len(done.attempts) == 1  # the wait spent none: the failure past max_wait is the one


@task(id="hardening.burst_letter", queue=BURST)
async def burst_letter(payload: Any, ctx: Context) -> str:
    message = await ctx.llm.messages.create(model=HAIKU, max_tokens=50, messages=HELLO)
    return str(message.id)


async def test_concurrent_answers_to_one_overload_lengthen_the_streak_once(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.latency = 1.0  # the calls are in flight together when the API overloads
    fake_anthropic.fail_next(status=529, times=6)
    async with start_daemon([burst_letter], llm_config(fake_anthropic), concurrency=6):
        run_ids = [await client.trigger("hardening.burst_letter", {}) for _ in range(6)]

        async def all_waiting() -> bool:
            runs = [await client.get_run(run_id) for run_id in run_ids]
            return all(run.status is RunStatus.WAITING for run in runs)

        await wait_for(all_waiting)
        overloaded = await db.fetchval(
            "SELECT count(*) FROM taskd.llm_calls WHERE outcome = 'overloaded'"
        )
        backoff = await db.fetchrow(
            "SELECT overloads, extract(epoch FROM until - now()) AS wait FROM taskd.llm_backoffs"
        )
    assert overloaded >= 2  # several answers to the same overload...
    assert backoff is not None and backoff["overloads"] == 1  # ...are one overload, not a streak
    # the first step of the backoff ([llm] overload_backoff, jittered), not its maximum
    assert backoff["wait"] <= 5


@task(id="hardening.slow_call", queue=TPM)
async def slow_call(payload: Any, ctx: Context) -> str:
    message = await ctx.llm.messages.create(
        model=HAIKU, max_tokens=200, messages=HELLO, estimated_input_tokens=20
    )
    return str(message.id)


async def test_a_call_canceled_in_flight_is_recorded_and_its_reservation_settled(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.latency = 5.0  # the answer is still on its way when the run is canceled
    async with start_daemon([slow_call], llm_config(fake_anthropic)):
        run_id = await client.trigger("hardening.slow_call", {})

        async def sent() -> bool:
            return len(fake_anthropic.message_requests) == 1

        await wait_for(sent)
        await client.cancel(run_id)
        done = await wait_for_run(client, run_id, (RunStatus.CANCELED,))
        # seen canceled: the call is recorded, its reservation trued up to its input estimate
        admissions = await db.fetch(
            "SELECT input, output, settled FROM taskd.llm_admissions WHERE run_id = $1", run_id
        )
        [call] = await calls_of(db, run_id)
    assert done.status is RunStatus.CANCELED
    assert [tuple(row) for row in admissions] == [(20, 0, True)]  # not its 220 reserved
    assert call["kind"] == "message" and call["outcome"] == "canceled"
    assert call["input_tokens"] == 0 and call["cost_usd"] is None  # unknown, not made up
    assert "usage is unknown" in call["error"]


@task(id="hardening.stream_then_raise", retry=Retry(max_attempts=1))
async def stream_then_raise(payload: Any, ctx: Context) -> str:
    async with ctx.llm.messages.stream(model=HAIKU, max_tokens=50, messages=HELLO) as stream:
        async for event in stream:
            if event.type == "message_stop":  # the message has ended, the stream is not over
                raise ValueError("the task's own code failed after the letter")
    return "unreachable"


async def test_a_stream_whose_message_ended_ends_the_wait_even_when_its_block_raises(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=429, retry_after=20)
    async with start_daemon([stream_then_raise], llm_config(fake_anthropic)):
        run_id = await client.trigger("hardening.stream_then_raise", {})
        await wait_for(lambda: status_is(client, run_id, RunStatus.WAITING))
        await skip_backoffs(db)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert "failed after the letter" in done.error["message"]
    outcomes = [call["outcome"] for call in await calls_of(db, run_id)]
    assert outcomes == ["rate_limited", "ok"]
    # the model answered: the run's wait for it is over
    assert (
        await db.fetchval("SELECT count(*) FROM taskd.llm_deferrals WHERE run_id = $1", run_id) == 0
    )


async def test_a_refused_count_tokens_names_the_estimate_to_declare(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    # a proxy behind [llm] base_url without the count_tokens endpoint
    fake_anthropic.fail_next(status=404, message="Not Found", match=only_counts)
    async with start_daemon([tpm_letter], llm_config(fake_anthropic)):
        run_id = await client.trigger("hardening.tpm_letter", {})
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert done.error["type"] == "LLMRequestRefused"
    assert "Not Found" in done.error["message"]
    assert "estimated_input_tokens" in done.error["message"]
    assert len(done.attempts) == 1 and fake_anthropic.message_requests == []


async def test_a_true_up_the_database_refuses_neither_loses_the_call_nor_pays_it_again(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    # the database refuses every true-up (data it will never take: no retry helps)
    await db.execute(
        """
        CREATE FUNCTION public.refuse_true_up() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'true-up refused' USING ERRCODE = '22000'; END $$;
        CREATE TRIGGER refuse_true_up BEFORE UPDATE ON taskd.llm_admissions
            FOR EACH ROW EXECUTE FUNCTION public.refuse_true_up();
        """
    )
    async with start_daemon([slow_call], llm_config(fake_anthropic)):
        run_id = await client.trigger("hardening.slow_call", {})
        done = await wait_for_run(client, run_id)
    # the answer is the run's: recorded, not asked for again
    assert done.status is RunStatus.COMPLETED and len(done.attempts) == 1
    [call] = await calls_of(db, run_id)
    assert call["outcome"] == "ok" and call["output_tokens"] == 5
    assert len(fake_anthropic.message_requests) == 1
    # the reservation stays at its estimate (counted high, not low)
    row = await db.fetchrow("SELECT input, output, settled FROM taskd.llm_admissions")
    assert row is not None and tuple(row) == (20, 200, False)


@task(id="hardening.two_budgeted", budget_usd=1.0)
async def two_budgeted(payload: Any, ctx: Context) -> list[str]:
    texts = ["", ""]

    async def one(i: int) -> None:
        message = await ctx.llm.messages.create(
            model=HAIKU, max_tokens=50, messages=HELLO, estimated_input_tokens=20
        )
        block = message.content[0]
        assert block.type == "text"
        texts[i] = block.text

    async with anyio.create_task_group() as group:
        group.start_soon(one, 0)
        group.start_soon(one, 1)
    return texts


async def test_concurrent_first_calls_read_the_run_spend_once(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    async with start_daemon([two_budgeted], llm_config(fake_anthropic)) as daemon:
        # count the daemon's own calls (the real ones run: these only count them)
        services = daemon.services
        gate, spend = services.llm_gate, services.llm_run_spend
        gates_done, spend_reads = [0], [0]

        async def counted_gate(*args: Any, **kwargs: Any) -> Any:
            result = await gate(*args, **kwargs)
            gates_done[0] += 1
            return result

        async def counted_spend(*args: Any, **kwargs: Any) -> Any:
            spend_reads[0] += 1
            return await spend(*args, **kwargs)

        services.llm_gate = counted_gate  # type: ignore[method-assign]
        services.llm_run_spend = counted_spend  # type: ignore[method-assign]
        # the run's spend cannot be read while the test holds its table
        locked = db.transaction()
        await locked.start()
        await db.execute("LOCK TABLE taskd.llm_batches IN ACCESS EXCLUSIVE MODE")
        try:
            run_id = await client.trigger("hardening.two_budgeted", {})

            # both calls (started together) are past their gate, the first read is held:
            # the second has reached the spend before the first's read could answer
            async def both_past_the_gate() -> bool:
                return gates_done[0] == 2 and spend_reads[0] >= 1

            await wait_for(both_past_the_gate)
        finally:
            await locked.rollback()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["Done.", "Done."]
    assert spend_reads[0] == 1


@task(id="hardening.slow_stream", queue=TPM)
async def slow_stream(payload: Any, ctx: Context) -> str:
    async with ctx.llm.messages.stream(
        model=HAIKU, max_tokens=200, messages=HELLO, estimated_input_tokens=30
    ) as stream:
        async for _ in stream.text_stream:
            if not ctx.metadata:
                await ctx.set_metadata(reading=True)  # the test cancels the run now
    return "unreachable"


async def test_a_stream_canceled_while_read_is_recorded_and_settled_to_what_it_used(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    words = " ".join(f"word{n}" for n in range(40))
    fake_anthropic.reply(Reply(words, input_tokens=40, output_tokens=41, chunk_delay=0.5))
    async with start_daemon([slow_stream], llm_config(fake_anthropic)):
        run_id = await client.trigger("hardening.slow_stream", {})

        async def reading() -> bool:
            return bool((await client.get_run(run_id)).metadata)

        await wait_for(reading)
        await client.cancel(run_id)
        done = await wait_for_run(client, run_id, (RunStatus.CANCELED,))
        admissions = await db.fetch(
            "SELECT input, output, settled FROM taskd.llm_admissions WHERE run_id = $1", run_id
        )
        [call] = await calls_of(db, run_id)
    assert done.status is RunStatus.CANCELED
    # what the API had counted when the stream was left: the input and the first token
    assert [tuple(row) for row in admissions] == [(40, 1, True)]
    assert call["kind"] == "stream" and call["outcome"] == "canceled"
    assert (call["input_tokens"], call["output_tokens"]) == (40, 1)
    assert call["cost_usd"] == dollars(40, 1, "1", "5")

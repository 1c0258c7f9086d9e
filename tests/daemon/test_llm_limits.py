"""Limits and budgets on ctx.llm calls: a queue's requests and tokens per window and its
budget per concurrency key, held in the database for the whole fleet; a run's own budget. A
call is admitted against an estimate before it is sent and trued up with its usage after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from taskd import Budget, Client, Context, Queue, Rate, Retry, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Write one line about running."}]  # 11 tokens (fake)

RPM = Queue("llm-rpm", concurrency=1, rate_limit=Rate(requests=2, per="1h"))
TPM = Queue("llm-tpm", rate_limit=Rate(tokens=1000, per="1h"))
TENANTS = Queue("llm-tenants", budget=Budget(usd=0.01, per="1d"))
PATIENT_TENANTS = Queue("llm-patient", budget=Budget(usd=0.006, per="1d", on_exceed="wait"))
SHORT = Queue("llm-short", rate_limit=Rate(requests=1, per="1s"))


async def ask(ctx: Context, name: str, **params: Any) -> str:
    """One call in a step of its own (never sent twice), its text."""

    async def call() -> str:
        message = await ctx.llm.messages.create(
            **{"model": HAIKU, "max_tokens": 200, "messages": HELLO, **params}
        )
        block = message.content[0]
        assert block.type == "text"
        return block.text

    text: str = await ctx.step(name, call)
    return text


@task(id="limits.three_calls", queue=RPM)
async def three_calls(payload: Any, ctx: Context) -> list[str]:
    return [await ask(ctx, f"call-{i}") for i in range(3)]


@task(id="limits.quick", queue=RPM)
async def quick(payload: Any, ctx: Context) -> str:
    return "quick"


@task(id="limits.tokens", queue=TPM)
async def tokens(payload: dict[str, Any], ctx: Context) -> str:
    return await ask(ctx, payload["step"], **{"max_tokens": 600, **payload.get("params", {})})


@task(id="limits.streamed", queue=TPM)
async def streamed(payload: Any, ctx: Context) -> str:
    async with ctx.llm.messages.stream(
        model=HAIKU, max_tokens=600, messages=HELLO, estimated_input_tokens=30
    ) as stream:
        return await stream.get_final_text()


@task(
    id="limits.spender",
    queue="llm-spender",
    budget_usd=0.01,
    retry=Retry(max_attempts=2, min_delay=0.01),
)
async def spender(payload: Any, ctx: Context) -> list[str]:
    first = await ask(ctx, f"attempt-{ctx.attempt}", max_tokens=1000)
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after one call")
    return [first, await ask(ctx, "second", max_tokens=1000)]


@task(id="limits.unpriced", queue="llm-spender", budget_usd=1.0)
async def unpriced(payload: Any, ctx: Context) -> str:
    return await ask(ctx, "call", model="claude-unknown-1")


@task(id="limits.tenant", queue=TENANTS)
async def tenant(payload: Any, ctx: Context) -> str:
    return await ask(ctx, "call", max_tokens=1000)


@task(id="limits.patient", queue=PATIENT_TENANTS)
async def patient(payload: Any, ctx: Context) -> str:
    return await ask(ctx, "call", max_tokens=1000)


SHORT_EXECUTIONS: list[int] = []


@task(id="limits.short", queue=SHORT)
async def short(payload: Any, ctx: Context) -> list[str]:
    SHORT_EXECUTIONS.append(ctx.attempt)
    return [await ask(ctx, "one"), await ask(ctx, "two")]


async def waiting(client: Client, run_id: Any) -> bool:
    return (await client.get_run(run_id)).status is RunStatus.WAITING


async def admissions(db: asyncpg.Connection, queue: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM taskd.llm_admissions WHERE queue = $1 ORDER BY id", queue)
    return [dict(row) for row in rows]


async def skip_time(db: asyncpg.Connection, run_id: Any, by: str) -> None:
    """The window passes (skipped, not waited for) and the waiting run is due."""
    await db.execute(f"UPDATE taskd.llm_admissions SET admitted_at = admitted_at - interval '{by}'")
    await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)


async def test_a_requests_limit_suspends_a_long_wait_freeing_the_slot_without_an_attempt(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    async with start_daemon([three_calls, quick], llm_config(fake_anthropic), concurrency=1):
        [queue] = [q for q in await client.list_queues() if q.queue == "llm-rpm"]
        assert queue.llm_rate == "requests=2/3600s" and queue.llm_budget is None
        run_id = await client.trigger("limits.three_calls", {})
        await wait_for(lambda: waiting(client, run_id))
        run = await client.get_run(run_id)
        # the third call waits for the hour's window: in the queue, not in a slot
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(minutes=55)
        assert run.attempt == 0 and run.worker_id is None
        assert len(fake_anthropic.message_requests) == 2
        other = await client.trigger("limits.quick", {})  # the queue's one slot is free
        assert (await wait_for_run(client, other)).output == "quick"
        # requests only: no token was counted to admit them
        assert not [r for r in fake_anthropic.requests if r.path.endswith("/count_tokens")]
        await skip_time(db, run_id, "1 hour")
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["Done."] * 3
    assert done.attempt == 1 and [a.outcome.value for a in done.attempts] == ["completed"]
    assert len(fake_anthropic.message_requests) == 3  # the steps were not sent again
    assert [a["requests"] for a in await admissions(db, "llm-rpm")] == [1, 1, 1]


async def test_a_token_limit_admits_against_the_estimate_and_trues_it_up_with_the_usage(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=11, output_tokens=40)
    async with start_daemon([tokens], llm_config(fake_anthropic)):
        first = await client.trigger("limits.tokens", {"step": "a"})
        assert (await wait_for_run(client, first)).status is RunStatus.COMPLETED
        # admitted at max_tokens (600) + the input as count_tokens counts it (11), then
        # trued up with the usage
        [admitted] = await admissions(db, "llm-tpm")
        assert (admitted["input"], admitted["output"], admitted["settled"]) == (11, 40, True)
        counts = [r for r in fake_anthropic.requests if r.path.endswith("/count_tokens")]
        assert len(counts) == 1 and counts[0].body["messages"] == HELLO
        [count, message] = await calls_of(db, first)
        assert count["kind"] == "count_tokens" and message["kind"] == "message"
        # the call's started_at is its admission: the instant the limit counts it at
        assert message["started_at"] == admitted["admitted_at"]
        # 51 used + 611 estimated <= 1000: admitted (600 + 600 would not have been); a
        # declared estimate spares the count and never reaches the API
        second = await client.trigger(
            "limits.tokens", {"step": "b", "params": {"estimated_input_tokens": 300}}
        )
        assert (await wait_for_run(client, second)).status is RunStatus.COMPLETED
        assert len([r for r in fake_anthropic.requests if r.path.endswith("/count_tokens")]) == 1
        assert "estimated_input_tokens" not in fake_anthropic.message_requests[-1].body
        # 102 used + 900 + 11 estimated > 1000: the call waits for the window
        third = await client.trigger("limits.tokens", {"step": "c", "params": {"max_tokens": 900}})
        await wait_for(lambda: waiting(client, third))
        assert len(fake_anthropic.message_requests) == 2
        used = await db.fetchval(
            "SELECT sum(input + output) FROM taskd.llm_admissions WHERE queue = 'llm-tpm'"
        )
        assert used == 2 * 51
        await skip_time(db, third, "1 hour")
        assert (await wait_for_run(client, third)).status is RunStatus.COMPLETED
    assert len(fake_anthropic.message_requests) == 3


async def test_a_stream_is_admitted_and_trued_up_with_what_it_used(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Ten miles in the rain.", input_tokens=11, output_tokens=40)
    async with start_daemon([streamed], llm_config(fake_anthropic)):
        done = await wait_for_run(client, await client.trigger("limits.streamed", {}))
    assert done.status is RunStatus.COMPLETED and done.output == "Ten miles in the rain."
    [admitted] = await admissions(db, "llm-tpm")
    assert (admitted["input"], admitted["output"], admitted["settled"]) == (11, 40, True)
    assert "estimated_input_tokens" not in fake_anthropic.message_requests[0].body
    [call] = await calls_of(db, done.id)
    assert call["kind"] == "stream" and call["started_at"] == admitted["admitted_at"]


async def test_a_failed_call_is_trued_up_to_nothing(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=11, output_tokens=40)
    fake_anthropic.fail_next(status=429, retry_after=60)
    async with start_daemon([tokens], llm_config(fake_anthropic)):
        run_id = await client.trigger(
            "limits.tokens", {"step": "a", "params": {"estimated_input_tokens": 20}}
        )
        await wait_for(lambda: waiting(client, run_id))
        # the 429 used no token: the window holds only its request
        [admitted] = await admissions(db, "llm-tpm")
        assert (admitted["input"], admitted["output"], admitted["requests"]) == (0, 0, 1)
        assert admitted["settled"]


async def test_a_run_budget_counts_every_attempt_and_stops_the_call_that_would_pass_it(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    # each call: 11 + 900 tokens = $0.004511; estimated at 11 + 1000 tokens = $0.005011
    fake_anthropic.reply("Done.", input_tokens=11, output_tokens=900)
    async with start_daemon([spender], llm_config(fake_anthropic)):
        run_id = await client.trigger("limits.spender", {})
        done = await wait_for_run(client, run_id)
    # attempt 1: one call; attempt 2: $0.004511 spent + $0.005011 fits $0.01, then
    # $0.009022 + $0.005011 does not: the third call is never sent
    assert done.status is RunStatus.FAILED and len(done.attempts) == 2
    assert done.error is not None and done.error["type"] == "BudgetExceeded"
    assert "run budget of $0.01" in done.error["message"]
    assert len(fake_anthropic.message_requests) == 2
    calls = [c for c in await calls_of(db, run_id) if c["kind"] == "message"]
    assert [c["outcome"] for c in calls] == ["ok", "ok", "budget"]
    assert sum(c["cost_usd"] for c in calls[:2]) == 2 * dollars(11, 900, "1", "5")
    assert calls[2]["cost_usd"] is None and "run budget of $0.01" in calls[2]["error"]


async def test_a_model_without_a_price_is_refused_under_a_budget(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    async with start_daemon([unpriced], llm_config(fake_anthropic)):
        done = await wait_for_run(client, await client.trigger("limits.unpriced", {}))
    assert done.status is RunStatus.FAILED and done.error is not None
    assert done.error["type"] == "BudgetExceeded"
    assert "'claude-unknown-1' has no price in [llm] prices" in done.error["message"]
    assert fake_anthropic.message_requests == []
    refused = [c for c in await calls_of(db, done.id) if c["kind"] == "message"]
    assert [(c["model"], c["outcome"]) for c in refused] == [("claude-unknown-1", "budget")]


async def test_a_tenant_budget_fails_the_call_that_would_pass_it_per_concurrency_key(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=11, output_tokens=900)
    async with start_daemon([tenant], llm_config(fake_anthropic)):
        [queue] = [q for q in await client.list_queues() if q.queue == "llm-tenants"]
        assert queue.llm_budget == "$0.01/86400s per key" and queue.llm_rate is None
        outcomes = {}
        for name, key in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("none", None)):
            run_id = await client.trigger("limits.tenant", {}, concurrency_key=key)
            outcomes[name] = await wait_for_run(client, run_id)
    assert [outcomes[n].status for n in ("a1", "a2", "b1", "none")] == [RunStatus.COMPLETED] * 4
    failed = outcomes["a3"]
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert failed.error["type"] == "BudgetExceeded" and len(failed.attempts) == 1
    assert (
        "concurrency key 'a' on queue 'llm-tenants' is $0.01 per 86400s"
        in (failed.error["message"])
    )
    assert len(fake_anthropic.message_requests) == 4
    spent = await db.fetch(
        "SELECT concurrency_key, sum(cost) AS cost FROM taskd.llm_admissions GROUP BY 1"
    )
    cost = dollars(11, 900, "1", "5")
    assert {r["concurrency_key"]: r["cost"] for r in spent} == {"a": 2 * cost, "b": cost, "": cost}


async def test_a_tenant_budget_that_waits_suspends_the_run_until_the_window_has_room(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=11, output_tokens=900)
    async with start_daemon([patient], llm_config(fake_anthropic)):
        first = await client.trigger("limits.patient", {}, concurrency_key="a")
        assert (await wait_for_run(client, first)).status is RunStatus.COMPLETED
        second = await client.trigger("limits.patient", {}, concurrency_key="a")
        await wait_for(lambda: waiting(client, second))
        run = await client.get_run(second)
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(hours=23)
        assert run.attempt == 0 and len(fake_anthropic.message_requests) == 1
        await skip_time(db, second, "1 day")
        done = await wait_for_run(client, second)
    assert done.status is RunStatus.COMPLETED and done.attempt == 1
    assert len(fake_anthropic.message_requests) == 2


async def test_a_short_wait_sleeps_in_the_slot(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    SHORT_EXECUTIONS.clear()
    async with start_daemon([short], llm_config(fake_anthropic)):
        done = await wait_for_run(client, await client.trigger("limits.short", {}))
    assert done.status is RunStatus.COMPLETED and done.output == ["Done.", "Done."]
    # one execution: the second call waited for the window (1 s) in its slot
    assert SHORT_EXECUTIONS == [1] and len(done.attempts) == 1
    first, second = await admissions(db, "llm-short")
    assert second["admitted_at"] - first["admitted_at"] >= timedelta(seconds=1)
    # trued up with their cost, budget or not
    assert [a["cost"] for a in (first, second)] == [dollars(10, 5, "1", "5")] * 2

"""Message Batches under the budgets: ``ctx.llm.batch`` is admitted like a call, against the sum
of its requests' estimates at batch prices (half), checked against the run's budget and its
queue's budget per concurrency key before it is submitted, reserved in
``taskd.llm_admissions`` and trued up to what the batch was billed when it ends. A queue's
token and request limits do not apply to batches (the Message Batches API's rate limits are not
the Messages API's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from anthropic.types import Message

from taskd import BatchRequestFailed, Budget, Client, Context, Queue, Rate, Retry, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic, estimate_tokens
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
MAX_TOKENS = 300
DECLARED = 100  # the input tokens a request declares (estimated_input_tokens)

TENANTS = Queue("llm-batch-tenants", budget=Budget(usd=0.005, per="1d"))
PATIENT = Queue("llm-batch-patient", budget=Budget(usd=0.005, per="1d", on_exceed="wait"))
LIMITED = Queue(
    "llm-batch-limited",
    rate_limit=Rate(tokens=500, requests=1, per="1h"),
    budget=Budget(usd=1, per="1d"),
)


def _requests(n: int, *, declared: bool = True) -> list[dict[str, Any]]:
    requests = []
    for i in range(n):
        params: dict[str, Any] = {
            "model": HAIKU,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": f"runner {i}"}],
        }
        if declared:
            params["estimated_input_tokens"] = DECLARED
        requests.append(params)
    return requests


async def _letters(ctx: Context, n: int, declared: bool = True) -> list[str]:
    out = []
    for result in await ctx.llm.batch(_requests(n, declared=declared)):
        assert not isinstance(result, BatchRequestFailed), result
        assert isinstance(result, Message)
        block = result.content[0]
        assert block.type == "text"
        out.append(block.text)
    return out


@task(id="batch_budgets.run_budget", queue="llm-batch-run", budget_usd=0.004)
async def run_budget(payload: dict[str, Any], ctx: Context) -> list[str]:
    return await _letters(ctx, payload["n"], payload["declared"])


@task(
    id="batch_budgets.uncounted",
    queue="llm-batch-run",
    budget_usd=100.0,
    retry=Retry(max_attempts=1),
)
async def uncounted(payload: dict[str, Any], ctx: Context) -> list[str]:
    return await _letters(ctx, payload["n"], declared=False)


@task(id="batch_budgets.tenant", queue=TENANTS)
async def tenant(payload: dict[str, Any], ctx: Context) -> list[str]:
    return await _letters(ctx, payload["n"])


@task(id="batch_budgets.patient", queue=PATIENT)
async def patient(payload: dict[str, Any], ctx: Context) -> list[str]:
    return await _letters(ctx, payload["n"])


@task(id="batch_budgets.then_a_call", queue="llm-batch-run", budget_usd=0.004)
async def then_a_call(payload: dict[str, Any], ctx: Context) -> list[str]:
    letters = await _letters(ctx, 4)
    message = await ctx.llm.messages.create(
        model=HAIKU,
        max_tokens=500,
        messages=[{"role": "user", "content": "and one more"}],
        estimated_input_tokens=DECLARED,
    )
    block = message.content[0]
    assert block.type == "text"
    return [*letters, block.text]


@task(id="batch_budgets.limited", queue=LIMITED)
async def limited(payload: dict[str, Any], ctx: Context) -> list[str]:
    letters = await _letters(ctx, 4)
    message = await ctx.llm.messages.create(
        model=HAIKU,
        max_tokens=200,
        messages=[{"role": "user", "content": "and one more"}],
        estimated_input_tokens=11,
    )
    block = message.content[0]
    assert block.type == "text"
    return [*letters, block.text]


def _estimate(n: int, input_tokens: int = DECLARED) -> Decimal:
    """A batch of ``n`` requests at batch prices (haiku: $0.50 / $2.50 per million)."""
    return n * dollars(input_tokens, MAX_TOKENS, "0.5", "2.5")


def _created(fake: FakeAnthropic) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == "/v1/messages/batches")


def _counts(fake: FakeAnthropic) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/count_tokens"))


async def _waiting(client: Client, run_id: Any) -> Any:
    async def check() -> bool:
        return (await client.get_run(run_id)).status is RunStatus.WAITING

    await wait_for(check)
    return await client.get_run(run_id)


async def _admissions(db: asyncpg.Connection, queue: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM taskd.llm_admissions WHERE queue = $1 ORDER BY id", queue)
    return [dict(row) for row in rows]


async def test_a_run_budget_stops_a_batch_before_it_is_submitted(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    async with start_daemon([run_budget], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        # six requests, their inputs counted by the API: 6 x (3 + 300 tokens) at batch prices
        # is $0.004509, past the run's $0.004: never submitted
        refused = await client.trigger("batch_budgets.run_budget", {"n": 6, "declared": False})
        done = await wait_for_run(client, refused)
        assert done.status is RunStatus.FAILED and len(done.attempts) == 1
        assert done.error is not None and done.error["type"] == "BudgetExceeded"
        counted = estimate_tokens({"messages": _requests(1, declared=False)[0]["messages"]})
        assert _estimate(6, counted) > Decimal("0.004")
        assert (
            "run budget of $0.004 (@task(budget_usd=...)): $0 spent, this batch's estimate "
            "$0.0045 would pass it" in done.error["message"]
        )
        assert _created(fake_anthropic) == 0 and fake_anthropic.batch_ids == []
        # one count_tokens round trip per request without a declared estimate
        assert _counts(fake_anthropic) == 6
        calls = await calls_of(db, refused)
        assert [c["kind"] for c in calls] == ["count_tokens"] * 6 + ["batch"]
        assert calls[-1]["outcome"] == "budget" and calls[-1]["cost_usd"] is None
        assert "this batch's estimate $0.0045" in calls[-1]["error"]

        # four requests declaring their inputs: $0.0032 at batch prices fits the $0.004 (at
        # full price, $0.0064, it would not); no count, and the declared estimate never
        # reaches the API
        admitted = await client.trigger("batch_budgets.run_budget", {"n": 4, "declared": True})
        await _waiting(client, admitted)
        assert _estimate(4) == Decimal("0.0032") and 2 * _estimate(4) > Decimal("0.004")
        assert _created(fake_anthropic) == 1 and _counts(fake_anthropic) == 6
        submitted = fake_anthropic.batch_requests()
        assert all("estimated_input_tokens" not in r["params"] for r in submitted)
        [batch] = await db.fetch("SELECT * FROM taskd.llm_batches WHERE run_id = $1", admitted)
        # held against the run's budget while it is open; no tenant budget: no admission row
        assert batch["reserved_usd"] == _estimate(4) and batch["admission_id"] is None
        fake_anthropic.end_batch()
        done = await wait_for_run(client, admitted)
    assert done.status is RunStatus.COMPLETED and done.output == ["letter"] * 4


async def test_a_budgeted_batch_counts_at_most_100_inputs_the_rest_must_be_declared(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    async with start_daemon([uncounted], llm_config(fake_anthropic)):
        run_id = await client.trigger("batch_budgets.uncounted", {"n": 101})
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and done.error is not None
    assert done.error["type"] == "ValueError"
    assert "estimated_input_tokens" in done.error["message"]
    assert "101 requests have none" in done.error["message"]
    # refused before a single round trip
    assert _counts(fake_anthropic) == 0 and _created(fake_anthropic) == 0


async def test_a_429_while_counting_a_batch_suspends_the_run_unsubmitted(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    fake_anthropic.fail_next(status=429, retry_after=60)  # the first count_tokens
    async with start_daemon([uncounted], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("batch_budgets.uncounted", {"n": 6})
        run = await _waiting(client, run_id)
        # back to the queue until the API's reset: no attempt spent, nothing submitted
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(seconds=50)
        assert run.attempt == 0 and _created(fake_anthropic) == 0
        # the minute passes (skipped): counted again, admitted, submitted once
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)

        async def submitted() -> bool:
            return len(fake_anthropic.batch_ids) == 1

        await wait_for(submitted)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["letter"] * 6
    assert _created(fake_anthropic) == 1


async def test_a_tenant_budget_holds_across_two_runs_of_the_same_key(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    configure = llm_config(fake_anthropic, batch_poll_interval=0.2)
    # two daemons: the budget is the database's, not a process's
    async with start_daemon([tenant], configure), start_daemon([tenant], configure):
        first = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-1")
        await _waiting(client, first)
        [reserved] = await _admissions(db, "llm-batch-tenants")
        assert reserved["batch"] and reserved["requests"] == 4 and not reserved["settled"]
        assert (reserved["cost"], reserved["input"], reserved["output"]) == (
            _estimate(4),
            4 * DECLARED,
            4 * MAX_TOKENS,
        )
        # the same tenant's second batch: $0.0032 reserved + $0.0032 > $0.005, refused
        second = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-1")
        done = await wait_for_run(client, second)
        assert done.status is RunStatus.FAILED and done.error is not None
        assert done.error["type"] == "BudgetExceeded"
        assert (
            "the budget of concurrency key 'u-1' on queue 'llm-batch-tenants' is $0.005 per "
            "86400s: $0.0032 spent, this batch's estimate $0.0032 would pass it"
            in done.error["message"]
        )
        assert _created(fake_anthropic) == 1
        # another tenant has its own budget
        other = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-2")
        await _waiting(client, other)
        assert _created(fake_anthropic) == 2
    assert [c["outcome"] for c in await calls_of(db, second)] == ["budget"]


async def test_a_tenant_budget_that_waits_suspends_the_batch_until_the_window_has_room(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    async with start_daemon([patient], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        first = await client.trigger("batch_budgets.patient", {"n": 4}, concurrency_key="u-1")
        await _waiting(client, first)
        second = await client.trigger("batch_budgets.patient", {"n": 4}, concurrency_key="u-1")

        async def two_waiting() -> bool:
            run = await client.get_run(second)
            return run.status is RunStatus.WAITING and run.run_at is not None

        await wait_for(two_waiting)
        run = await client.get_run(second)
        # waits for the first batch's reservation to leave the day's window, unsubmitted
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(hours=23)
        assert run.attempt == 0 and _created(fake_anthropic) == 1
        # the day passes (skipped, not waited for)
        await db.execute(
            "UPDATE taskd.llm_admissions SET admitted_at = admitted_at - interval '1 day'"
        )
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", second)

        async def submitted_twice() -> bool:
            return len(fake_anthropic.batch_ids) == 2

        await wait_for(submitted_twice)
        for batch_id in fake_anthropic.batch_ids:
            fake_anthropic.end_batch(batch_id)
        assert (await wait_for_run(client, first)).status is RunStatus.COMPLETED
        assert (await wait_for_run(client, second)).status is RunStatus.COMPLETED


async def test_a_batch_reservation_is_trued_up_to_its_cost_at_half_price_when_it_ends(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    configure = llm_config(fake_anthropic, batch_poll_interval=0.2)
    async with start_daemon([tenant, then_a_call], configure):
        first = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-1")
        await _waiting(client, first)
        fake_anthropic.end_batch()
        assert (await wait_for_run(client, first)).status is RunStatus.COMPLETED
        # the reservation is what the batch was billed: its calls' cost, at half price
        [settled] = await _admissions(db, "llm-batch-tenants")
        billed = 4 * dollars(100, 40, "0.5", "2.5")
        spent = await db.fetchval(
            "SELECT sum(cost_usd) FROM taskd.llm_calls WHERE run_id = $1", first
        )
        assert settled["settled"] and settled["cost"] == billed == spent
        assert (settled["input"], settled["output"]) == (4 * 100, 4 * 40)
        # $0.0006 spent + $0.0032: the same tenant's next batch fits again
        second = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-1")
        await _waiting(client, second)
        assert _created(fake_anthropic) == 2
        fake_anthropic.end_batch(fake_anthropic.batch_ids[1])
        assert (await wait_for_run(client, second)).status is RunStatus.COMPLETED

        # the run's own budget: after its batch ($0.0032 reserved, $0.0006 billed) a call
        # estimated at $0.0026 fits the $0.004 (it would not beside the reservation)
        run_id = await client.trigger("batch_budgets.then_a_call", {})
        await _waiting(client, run_id)
        fake_anthropic.end_batch(fake_anthropic.batch_ids[2])
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == ["letter"] * 5
    assert dollars(DECLARED, 500, "1", "5") + _estimate(4) > Decimal("0.004")
    assert dollars(DECLARED, 500, "1", "5") + billed <= Decimal("0.004")


async def test_a_canceled_batch_settles_to_what_was_billed(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    async with start_daemon([tenant], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("batch_budgets.tenant", {"n": 4}, concurrency_key="u-1")
        await _waiting(client, run_id)
        assert await client.cancel(run_id) is RunStatus.CANCELED

        async def settled() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT settled FROM taskd.llm_admissions WHERE queue = 'llm-batch-tenants'"
                )
            )

        await wait_for(settled)
    # the fake cancels every request before processing it: nothing billed, nothing held
    [admission] = await _admissions(db, "llm-batch-tenants")
    assert (admission["cost"], admission["input"], admission["output"]) == (0, 0, 0)
    assert [c["outcome"] for c in await calls_of(db, run_id)] == ["canceled"] * 4


async def test_token_and_request_limits_do_not_apply_to_batches(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("letter", input_tokens=100, output_tokens=40)
    async with start_daemon([limited], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("batch_budgets.limited", {})
        await _waiting(client, run_id)
        # 4 requests, 1,600 tokens estimated: past the queue's 1 request and 500 tokens per
        # hour, yet submitted at once (the budget admitted it)
        assert _created(fake_anthropic) == 1
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    # and the call after it is admitted at once: the batch does not count in the window (it
    # would have waited an hour)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == ["letter"] * 5 and len(done.attempts) == 1
    batch, call = await _admissions(db, "llm-batch-limited")
    assert batch["batch"] and (batch["requests"], batch["input"], batch["output"]) == (4, 400, 160)
    assert not call["batch"] and call["requests"] == 1
    assert batch["cost"] == 4 * dollars(100, 40, "0.5", "2.5")

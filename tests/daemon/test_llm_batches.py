"""ctx.llm.batch: one Message Batch per call, the run suspended while it is processed (no slot,
no process waiting), polled by the daemons at most once per interval for the whole fleet, and
resumed with the results in request order when it ends, also after a restart; each request
recorded at batch prices (half)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from anthropic.types import Message

from taskd import BatchRequestFailed, Client, Context, RunStatus, task
from taskd.config import Settings
from taskd.testing.anthropic import FakeAnthropic, Reply
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"


def _request(i: int) -> dict[str, Any]:
    return {"max_tokens": 300, "messages": [{"role": "user", "content": f"runner {i}"}]}


@task(id="llm.batch_letters")
async def batch_letters(payload: dict[str, Any], ctx: Context) -> list[Any]:
    requests: list[dict[str, Any]] = [_request(i) for i in range(payload.get("n", 4))]
    requests.append(
        {"custom_id": "premium-7", "params": {**_request(7), "model": SONNET}},
    )
    results = await ctx.llm.batch(requests)
    out: list[Any] = []
    for result in results:
        if isinstance(result, BatchRequestFailed):
            out.append([result.custom_id, result.result, result.error_type])
        else:
            assert isinstance(result, Message)
            block = result.content[0]
            assert block.type == "text"
            out.append(block.text)
    return out


@task(id="llm.batch_sizes")
async def batch_sizes(payload: dict[str, Any], ctx: Context) -> list[int]:
    results = await ctx.llm.batch([_request(i) for i in range(payload["n"])])
    sizes = []
    for result in results:
        assert isinstance(result, Message)
        block = result.content[0]
        assert block.type == "text"
        sizes.append(len(block.text))
    return sizes


@task(id="llm.batch_in_step")
async def batch_in_step(payload: dict[str, Any], ctx: Context) -> int:
    async def premium() -> int:
        results = await ctx.llm.batch([_request(i) for i in range(2)])
        return sum(isinstance(r, Message) for r in results)

    done: int = await ctx.step("premium", premium)
    return done


@task(id="llm.batch_quick")
async def quick(payload: Any, ctx: Context) -> str:
    return "quick"


def _numbered(body: dict[str, Any]) -> Reply:
    """A letter per runner: ``runner 3`` gets ``letter 3``, 100 + 3 input tokens, 40 + 3 out."""
    number = int(body["messages"][0]["content"].split()[-1])
    return Reply(f"letter {number}", input_tokens=100 + number, output_tokens=40 + number)


def _created(fake: FakeAnthropic) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == "/v1/messages/batches")


async def _waiting(client: Client, run_id: Any) -> Any:
    async def check() -> bool:
        return (await client.get_run(run_id)).status is RunStatus.WAITING

    await wait_for(check)
    return await client.get_run(run_id)


async def test_results_in_request_order_with_errored_and_expired_items_at_half_price(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake = fake_anthropic
    fake.reply(_numbered)
    fake.batch_results_order = "reversed"  # the API promises no order
    fake.batch_outcome("request-1", "errored")
    fake.batch_outcome("request-3", "expired")
    async with start_daemon([batch_letters], llm_config(fake, batch_poll_interval=0.2)):
        run_id = await client.trigger(
            "llm.batch_letters", {"n": 4}, tags=["user:u-9"], concurrency_key="u-9"
        )
        await _waiting(client, run_id)
        submitted = fake.batch_requests()
        assert [r["custom_id"] for r in submitted] == [f"request-{i}" for i in range(4)] + [
            "premium-7"
        ]
        assert submitted[0]["params"]["model"] == HAIKU  # [llm] model by default
        fake.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == [
        "letter 0",
        ["request-1", "errored", "invalid_request_error"],
        "letter 2",
        ["request-3", "expired", "expired"],
        "letter 7",
    ]
    assert _created(fake) == 1  # submitted once, though the run executed twice
    calls = await calls_of(db, run_id)
    assert [c["kind"] for c in calls] == ["batch"] * 5
    assert [c["outcome"] for c in calls] == ["ok", "errored", "ok", "expired", "ok"]
    by_request = {c["request_id"].rsplit("/", 1)[1]: c for c in calls}
    # half the list prices: haiku $1 / $5, sonnet $3 / $15 per million
    assert by_request["request-0"]["cost_usd"] == dollars(100, 40, "0.5", "2.5")
    assert by_request["request-2"]["cost_usd"] == dollars(102, 42, "0.5", "2.5")
    premium = by_request["premium-7"]
    assert premium["model"] == SONNET and premium["cost_usd"] == dollars(107, 47, "1.5", "7.5")
    assert (premium["input_tokens"], premium["output_tokens"]) == (107, 47)
    failed = by_request["request-1"]
    assert failed["input_tokens"] == 0 and failed["cost_usd"] is None
    assert "fake batch error" in failed["error"]
    for call in calls:
        assert call["step"] == "llm-batch:1" and call["concurrency_key"] == "u-9"
        assert call["tags"] == ["user:u-9"] and call["task_id"] == "llm.batch_letters"
    total = await db.fetchval("SELECT sum(cost_usd) FROM taskd.llm_calls WHERE run_id = $1", run_id)
    assert total == dollars(100 + 102, 40 + 42, "0.5", "2.5") + dollars(107, 47, "1.5", "7.5")


async def test_no_slot_is_held_while_the_batch_is_open(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    async with start_daemon(
        [batch_letters, quick], llm_config(fake_anthropic, batch_poll_interval=0.2), concurrency=1
    ):
        run_id = await client.trigger("llm.batch_letters", {"n": 1})
        run = await _waiting(client, run_id)
        assert run.attempt == 0 and run.worker_id is None  # no attempt spent, no slot
        other = await client.trigger("llm.batch_quick", {})
        assert (await wait_for_run(client, other)).output == "quick"  # the only slot
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["letter 0", "letter 7"]
    assert done.attempt == 1 and [a.outcome.value for a in done.attempts] == ["completed"]


async def test_two_daemons_poll_a_batch_at_most_once_per_interval(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    interval = 1.0
    configure = llm_config(fake_anthropic, batch_poll_interval=interval)
    async with start_daemon([batch_letters], configure), start_daemon([batch_letters], configure):
        run_id = await client.trigger("llm.batch_letters", {"n": 2})
        await _waiting(client, run_id)

        async def polled_5_times() -> bool:
            return len(fake_anthropic.batch_retrievals()) >= 5

        await wait_for(polled_5_times)
        polls = fake_anthropic.batch_retrievals()
        # each daemon looks for due batches 4 times per interval: without the fleet's claim
        # they would ask about the batch about 8 times per interval, not once (the slack of one
        # interval is for a loaded machine, where a poll's request may leave late)
        span = (polls[-1].at - polls[0].at).total_seconds()
        assert (len(polls) - 1) * interval <= span + interval, (len(polls), span)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and _created(fake_anthropic) == 1
    row = await db.fetchrow("SELECT status, polls FROM taskd.llm_batches WHERE run_id = $1", run_id)
    assert row["status"] == "ended"
    # one request per poll: the polls counted are the retrievals seen (the results download
    # makes one more)
    assert row["polls"] == len(fake_anthropic.batch_retrievals()) - 1


async def test_a_batch_that_ends_after_a_restart_completes_the_run(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    configure = llm_config(fake_anthropic, batch_poll_interval=3600)
    async with start_daemon([batch_letters], configure):
        run_id = await client.trigger("llm.batch_letters", {"n": 2})
        await _waiting(client, run_id)
    # no daemon runs: the batch ends meanwhile
    fake_anthropic.end_batch()
    # the hour until its next poll passes (skipped, not waited for)
    await db.execute("UPDATE taskd.llm_batches SET next_poll_at = now() WHERE run_id = $1", run_id)
    async with start_daemon([batch_letters], configure):
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED
    assert done.output == ["letter 0", "letter 1", "letter 7"]
    assert _created(fake_anthropic) == 1
    assert len(await calls_of(db, run_id)) == 3


async def test_a_refused_submission_fails_the_run(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.fail_next(status=400, message="max_tokens: field required")
    async with start_daemon([batch_letters], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.batch_letters", {"n": 1})
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and len(done.attempts) == 1
    assert done.error is not None and done.error["type"] == "LLMRequestRefused"
    assert "max_tokens: field required" in done.error["message"]
    [call] = await calls_of(db, run_id)
    assert call["kind"] == "batch" and call["outcome"] == "refused"
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_batches") == 0


async def test_a_429_on_submission_waits_in_the_queue_then_submits_once(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    fake_anthropic.fail_next(status=429, retry_after=60)
    async with start_daemon([batch_letters], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("llm.batch_letters", {"n": 1})
        run = await _waiting(client, run_id)
        assert run.run_at is not None and run.run_at > datetime.now(UTC) + timedelta(seconds=50)
        assert run.attempt == 0 and _created(fake_anthropic) == 1  # the refused one
        # the minute passes (skipped)
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)

        async def submitted() -> bool:
            return len(fake_anthropic.batch_ids) == 1

        await wait_for(submitted)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["letter 0", "letter 7"]
    assert _created(fake_anthropic) == 2  # the 429, then the batch
    outcomes = [c["outcome"] for c in await calls_of(db, run_id)]
    assert outcomes == ["rate_limited", "ok", "ok"]
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_deferrals") == 0  # its wait ended


async def test_a_canceled_run_cancels_its_open_batch(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    async with start_daemon([batch_letters], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("llm.batch_letters", {"n": 2})
        await _waiting(client, run_id)
        assert await client.cancel(run_id) is RunStatus.CANCELED

        async def ended() -> bool:
            status = await db.fetchval(
                "SELECT status FROM taskd.llm_batches WHERE run_id = $1", run_id
            )
            return bool(status == "ended")

        await wait_for(ended)
    [batch_id] = fake_anthropic.batch_ids
    cancels = [r for r in fake_anthropic.requests if r.path.endswith(f"{batch_id}/cancel")]
    assert len(cancels) == 1
    assert [c["outcome"] for c in await calls_of(db, run_id)] == ["canceled"] * 3
    assert (await client.get_run(run_id)).status is RunStatus.CANCELED


async def test_results_larger_than_max_output_bytes_do_not_break_the_run(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("x" * 5000, input_tokens=10, output_tokens=1250)

    def small_outputs(settings: Settings) -> None:
        settings.tasks.max_output_bytes = 4096

    configure = llm_config(fake_anthropic, small_outputs, batch_poll_interval=0.2)
    async with start_daemon([batch_sizes], configure):
        run_id = await client.trigger("llm.batch_sizes", {"n": 3})
        await _waiting(client, run_id)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == [5000, 5000, 5000]


async def test_a_batch_inside_a_step_is_attributed_to_it_and_the_step_records_once(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_numbered)
    async with start_daemon([batch_in_step], llm_config(fake_anthropic, batch_poll_interval=0.2)):
        run_id = await client.trigger("llm.batch_in_step", {})
        await _waiting(client, run_id)
        fake_anthropic.end_batch()
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == 2
    steps = {s.name: s for s in done.steps}
    assert steps["premium"].result == 2
    # named from its step: llm-batch:<step>:N
    assert steps["llm-batch:premium:1"].result == {
        "batch_id": fake_anthropic.batch_ids[0],
        "requests": 2,
    }
    assert [c["step"] for c in await calls_of(db, run_id)] == ["premium", "premium"]
    assert _created(fake_anthropic) == 1

"""LLM calls made at once inside one run (a task group): a 429 on one of them still hands the
run back without spending an attempt, and a refused one still fails the run for good."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic
from tests.support.llm import llm_config
from tests.support.waiting import wait_for, wait_for_run

HELLO = [{"role": "user", "content": "One line, please."}]


@task(id="llm.two_at_once")
async def two_at_once(payload: Any, ctx: Context) -> list[str]:
    texts = ["", ""]

    async def write(index: int) -> None:
        message = await ctx.llm.messages.create(max_tokens=50, messages=HELLO)
        block = message.content[0]
        assert block.type == "text"
        texts[index] = block.text

    async with anyio.create_task_group() as group:
        group.start_soon(write, 0)
        group.start_soon(write, 1)
    return texts


async def test_a_429_among_concurrent_calls_spends_no_attempt(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=429, retry_after=60)
    async with start_daemon([two_at_once], llm_config(fake_anthropic)):
        run_id = await client.trigger("llm.two_at_once", {})

        async def waiting() -> bool:
            return (await client.get_run(run_id)).status is RunStatus.WAITING

        await wait_for(waiting)
        run = await client.get_run(run_id)
        assert run.attempt == 0 and run.attempts == []  # nothing spent
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.COMPLETED and done.output == ["Done.", "Done."]
    assert [a.outcome.value for a in done.attempts] == ["completed"]


async def test_a_refused_call_among_concurrent_calls_fails_the_run_at_once(
    client: Client, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply("Done.", input_tokens=10, output_tokens=5)
    fake_anthropic.fail_next(status=401, message="invalid x-api-key")
    async with start_daemon([two_at_once], llm_config(fake_anthropic)):
        run_id = await client.trigger(
            "llm.two_at_once", {}, retry={"max_attempts": 3, "min_delay": 0, "max_delay": 0}
        )
        done = await wait_for_run(client, run_id)
    assert done.status is RunStatus.FAILED and len(done.attempts) == 1
    assert done.error is not None and done.error["type"] == "LLMRequestRefused"
    assert "invalid x-api-key" in done.error["message"]

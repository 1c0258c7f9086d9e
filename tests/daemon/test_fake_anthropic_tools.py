"""The fake Anthropic API's answers with tool_use blocks, its paced streams and its failures
for chosen requests, driven by the real ``anthropic`` SDK."""

from __future__ import annotations

import time

import anthropic
import pytest
from anthropic.types import MessageParam

from taskd.testing.anthropic import FakeAnthropic, Reply

HELLO: list[MessageParam] = [{"role": "user", "content": "How many runs last week?"}]


def sdk(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=fake.url, max_retries=0)


async def test_a_tool_use_answer_as_json_and_as_a_stream() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(Reply.tool_use("query", {"table": "runs"}, text="Let me count.", id="tu_1"))
        client = sdk(fake)
        message = await client.messages.create(model="m", max_tokens=64, messages=HELLO)
        async with client.messages.stream(model="m", max_tokens=64, messages=HELLO) as stream:
            streamed = await stream.get_final_message()
    for answer in (message, streamed):
        assert answer.stop_reason == "tool_use"
        text, use = answer.content
        assert text.type == "text" and text.text == "Let me count."
        assert use.type == "tool_use"
        assert (use.id, use.name, use.input) == ("tu_1", "query", {"table": "runs"})
        assert answer.usage.output_tokens > 0


async def test_chunk_delay_paces_the_stream() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(Reply("one two three four", chunk_delay=0.1))
        arrivals = []
        began = time.monotonic()
        async with sdk(fake).messages.stream(model="m", max_tokens=64, messages=HELLO) as s:
            async for text in s.text_stream:
                arrivals.append((time.monotonic(), text))
    assert [text for _, text in arrivals] == ["one ", "two ", "three ", "four"]
    # a lower bound only, from before the request (the gap between two arrivals shrinks when
    # a loaded machine reads the first one late): the server paused between the 4 chunks
    assert arrivals[-1][0] - began >= 0.3


async def test_a_failure_waits_for_the_request_it_matches() -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(status=529, match=lambda body: "second" in str(body["messages"]))
        client = sdk(fake)
        first: list[MessageParam] = [{"role": "user", "content": "first"}]
        second: list[MessageParam] = [{"role": "user", "content": "second"}]
        await client.messages.create(model="m", max_tokens=8, messages=first)
        with pytest.raises(anthropic.APIStatusError) as failed:
            await client.messages.create(model="m", max_tokens=8, messages=second)
        assert failed.value.status_code == 529
        await client.messages.create(model="m", max_tokens=8, messages=second)


def test_a_reply_refuses_bad_blocks_and_a_negative_delay() -> None:
    with pytest.raises(ValueError, match="chunk_delay must be >= 0"):
        Reply("x", chunk_delay=-1)
    with pytest.raises(ValueError, match="text or tool_use"):
        Reply("x", content=({"type": "image"},))

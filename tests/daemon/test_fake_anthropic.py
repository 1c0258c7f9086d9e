"""The fake Anthropic API (taskd.testing.anthropic), driven by the real ``anthropic`` SDK."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from taskd.testing.anthropic import FakeAnthropic, Reply

MODEL = "claude-fake-1"
HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello to the queue."}]


def sdk(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test", base_url=fake.url, max_retries=0)


async def test_create_returns_the_canned_text_and_usage() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(
            "Hi there.",
            model=MODEL,
            input_tokens=12,
            output_tokens=3,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=7,
        )
        fake.reply("other model")
        message = await sdk(fake).messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert message.content[0].type == "text"
        assert message.content[0].text == "Hi there."
        assert message.usage.input_tokens == 12
        assert message.usage.output_tokens == 3
        assert message.usage.cache_read_input_tokens == 100
        assert message.usage.cache_creation_input_tokens == 7
        assert message.stop_reason == "end_turn"
        other = await sdk(fake).messages.create(model="claude-x", max_tokens=64, messages=HELLO)
        assert other.content[0].type == "text" and other.content[0].text == "other model"
        [first, _] = fake.message_requests
        assert first.body["model"] == MODEL and first.body["messages"] == HELLO
        assert "anthropic-version" in first.headers  # header names are lower case
        api_key = (first.headers.get("x-api-key"), first.headers.get("authorization"))
        assert api_key in {("test", None), (None, "Bearer test")}


async def test_a_reply_computed_from_the_request() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(lambda body: Reply(body["messages"][-1]["content"].upper(), output_tokens=9))
        message = await sdk(fake).messages.with_raw_response.create(
            model=MODEL, max_tokens=64, messages=HELLO
        )
        assert message.headers["request-id"].startswith("req_fake_")
        parsed = await message.parse()
        assert parsed.content[0].type == "text"
        assert parsed.content[0].text == "SAY HELLO TO THE QUEUE."
        assert parsed.usage.output_tokens == 9


async def test_streaming_yields_the_deltas_and_the_final_usage() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(
            Reply(
                "one two three", input_tokens=20, output_tokens=4, chunks=("one ", "two ", "three")
            )
        )
        async with sdk(fake).messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
            deltas = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert deltas == ["one ", "two ", "three"]
        assert final.content[0].type == "text" and final.content[0].text == "one two three"
        assert final.usage.input_tokens == 20
        assert final.usage.output_tokens == 4
        assert final.stop_reason == "end_turn"


async def test_429_is_a_rate_limit_error_with_its_headers() -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(status=429, retry_after=2)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await sdk(fake).messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        headers = caught.value.response.headers
        assert headers["retry-after"] == "2"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert headers["anthropic-ratelimit-tokens-reset"].endswith("Z")
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        # the failure was for one request only
        message = await sdk(fake).messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert message.content[0].type == "text"


async def test_the_sdk_retries_after_the_retry_after_header() -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(status=429, retry_after=0.01)
        fake.fail_next(status=529)
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.url, max_retries=2)
        await client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert len(fake.message_requests) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (403, anthropic.PermissionDeniedError),
        (404, anthropic.NotFoundError),
        (413, anthropic.APIStatusError),
        (500, anthropic.InternalServerError),
        (529, anthropic.InternalServerError),
    ],
)
async def test_each_error_status_is_the_sdks_exception(status: int, error: type[Exception]) -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(status=status, message="scripted")
        with pytest.raises(error) as caught:
            await sdk(fake).messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert isinstance(caught.value, anthropic.APIStatusError)
        assert caught.value.status_code == status
        assert caught.value.body["error"]["message"] == "scripted"  # type: ignore[index]
        if status == 529:
            assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_an_overloaded_event_inside_a_200_stream() -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(in_stream=True)
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with sdk(fake).messages.stream(
                model=MODEL, max_tokens=64, messages=HELLO
            ) as stream:
                async for _ in stream.text_stream:
                    pass
        assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_a_dropped_connection_is_a_connection_error() -> None:
    async with FakeAnthropic() as fake:
        fake.fail_next(disconnect=True)
        with pytest.raises(anthropic.APIConnectionError):
            await sdk(fake).messages.create(model=MODEL, max_tokens=64, messages=HELLO)
        assert len(fake.message_requests) == 1


async def test_count_tokens() -> None:
    async with FakeAnthropic() as fake:
        counted = await sdk(fake).messages.count_tokens(model=MODEL, messages=HELLO)
        assert counted.input_tokens > 0
        assert fake.requests[-1].path == "/v1/messages/count_tokens"


async def test_bad_scripts_are_refused() -> None:
    fake = FakeAnthropic()
    with pytest.raises(ValueError, match="exactly one"):
        fake.fail_next()
    with pytest.raises(ValueError, match="400-599"):
        fake.fail_next(status=200)
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.url


async def test_a_batch_created_polled_ended_and_read_in_order() -> None:
    async with FakeAnthropic() as fake:
        fake.reply(lambda body: f"answer to {body['messages'][0]['content']}")
        fake.batch_outcome("b", "errored")
        fake.batch_outcome("c", "expired")
        client = sdk(fake)
        requests: list[Any] = [
            {
                "custom_id": cid,
                "params": {
                    "model": MODEL,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": cid}],
                },
            }
            for cid in ("a", "b", "c", "d")
        ]
        batch = await client.messages.batches.create(requests=requests)
        assert batch.processing_status == "in_progress"
        polled = await client.messages.batches.retrieve(batch.id)
        assert polled.processing_status == "in_progress"
        assert polled.request_counts.processing == 4
        fake.end_batch(batch.id)
        ended = await client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert ended.request_counts.succeeded == 2
        assert ended.request_counts.errored == 1
        assert ended.request_counts.expired == 1
        results = [r async for r in await client.messages.batches.results(batch.id)]
        assert [r.custom_id for r in results] == ["a", "b", "c", "d"]
        assert [r.result.type for r in results] == ["succeeded", "errored", "expired", "succeeded"]
        first = results[0].result
        assert first.type == "succeeded"
        assert first.message.content[0].type == "text"
        assert first.message.content[0].text == "answer to a"


async def test_a_batch_ends_after_n_polls_and_can_be_canceled() -> None:
    async with FakeAnthropic(batch_polls_to_end=2) as fake:
        client = sdk(fake)
        item: Any = {
            "custom_id": "x",
            "params": {"model": MODEL, "max_tokens": 8, "messages": HELLO},
        }
        batch = await client.messages.batches.create(requests=[item])
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "in_progress"
        assert (await client.messages.batches.retrieve(batch.id)).processing_status == "ended"

        other = await client.messages.batches.create(requests=[item])
        canceling = await client.messages.batches.cancel(other.id)
        assert canceling.processing_status == "canceling"
        assert (await client.messages.batches.retrieve(other.id)).request_counts.canceled == 1
        results = [r async for r in await client.messages.batches.results(other.id)]
        assert [r.result.type for r in results] == ["canceled"]


async def test_latency_delays_each_answer_and_concurrent_answers_overlap() -> None:
    async with FakeAnthropic(latency=0.5) as fake:
        client = sdk(fake)
        started = time.monotonic()
        await asyncio.gather(
            *(client.messages.create(model=MODEL, max_tokens=8, messages=HELLO) for _ in range(20))
        )
        elapsed = time.monotonic() - started
        # one after another would take 10 s; a loaded machine still overlaps them well under 5 s
        assert 0.5 <= elapsed < 5
        assert len(fake.message_requests) == 20

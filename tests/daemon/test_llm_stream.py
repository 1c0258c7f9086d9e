"""``ctx.llm.messages.stream``: the letter being written reaches a page through
``/api/stream?run=<id>`` (``llm_text`` events, throttled by ``[llm] stream_interval``) before
the run completes, and the final message is what the step records; an ``overloaded_error``
inside the stream hands the run back to the queue without spending an attempt; a stream left
early is still recorded with what it used."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import asyncpg
import orjson
from anyio.abc import TaskStatus

from taskd import Client, Context, RunStatus, task
from taskd.testing.anthropic import FakeAnthropic, Reply
from tests.support.in_process import admin_url
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

HAIKU = "claude-haiku-4-5"
PROMPT = [{"role": "user", "content": "Write a letter about my 10 km run."}]
LETTER = "Dear runner, the hills asked much of you today, and you gave them every step."
GATES: dict[str, anyio.Event] = {}


@task(id="stream.letter")
async def streamed_letter(payload: Any, ctx: Context) -> str:
    await GATES["go"].wait()  # the page is listening before the letter is written

    async def write() -> dict[str, Any]:
        async with ctx.llm.messages.stream(model=HAIKU, max_tokens=300, messages=PROMPT) as s:
            async for _ in s.text_stream:
                pass
            message = await s.get_final_message()
        return message.model_dump(mode="json")

    message = await ctx.step("write", write)
    text: str = message["content"][0]["text"]
    return text


@task(id="stream.left")
async def left_early(payload: Any, ctx: Context) -> dict[str, str]:
    async def first_words() -> str:
        async with ctx.llm.messages.stream(model=HAIKU, max_tokens=300, messages=PROMPT) as s:
            async for text in s.text_stream:
                return text  # leaves the block: the rest is never read
        raise AssertionError("no text")

    async def until_stop() -> str:
        async with ctx.llm.messages.stream(model=HAIKU, max_tokens=300, messages=PROMPT) as s:
            async for event in s:
                if event.type == "message_stop":
                    break  # the message is whole, the iteration not finished
        return "stopped"

    return {"first": await ctx.step("first", first_words), "whole": await until_stop()}


@dataclass
class Page:
    """What a page listening to ``/api/stream?run=<id>`` receives, in order."""

    url: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def listen(self, http: aiohttp.ClientSession, *, task_status: TaskStatus[None]) -> None:
        async with http.get(self.url) as response:
            assert response.status == 200, await response.text()
            task_status.started()  # the daemon subscribed us before sending the headers
            kind, data = "message", ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = line.partition(":")[2].strip()
                elif not line and data:
                    self.events.append((kind, orjson.loads(data)))
                    kind, data = "message", ""

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def texts(self) -> list[dict[str, Any]]:
        return [data["data"] for kind, data in self.events if kind == "llm_text"]

    async def until(self, kind: str) -> None:
        async def seen() -> bool:
            return kind in self.kinds()

        await wait_for(seen, timeout=10)


async def open_page(
    group: anyio.abc.TaskGroup, http: aiohttp.ClientSession, base: str, run_id: uuid.UUID
) -> Page:
    page = Page(f"{base}/api/stream?run={run_id}")
    await group.start(page.listen, http)
    return page


async def test_a_page_sees_the_letter_arrive_in_pieces_and_the_step_records_the_message(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    GATES["go"] = anyio.Event()
    fake_anthropic.reply(Reply(LETTER, input_tokens=40, output_tokens=21, chunk_delay=0.1))
    configure = llm_config(fake_anthropic, stream_interval=0.02)
    async with (
        start_daemon([streamed_letter], configure) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        run_id = await client.trigger("stream.letter", {})
        page = await open_page(group, http, admin_url(daemon), run_id)
        GATES["go"].set()
        await page.until("completed")
        group.cancel_scope.cancel()
    run = await client.get_run(run_id)

    assert run.status is RunStatus.COMPLETED and run.output == LETTER
    texts = page.texts()
    pieces = [t["text"] for t in texts if t["text"]]
    # the letter arrived in several pieces, all before the run completed
    assert len(pieces) >= 3, pieces
    assert page.kinds().index("completed") > max(
        i for i, kind in enumerate(page.kinds()) if kind == "llm_text"
    )
    assert "".join(t["text"] for t in texts) == LETTER
    assert [t["done"] for t in texts] == [False] * (len(texts) - 1) + [True]
    assert {(t["step"], t["call"]) for t in texts} == {("write", 1)}
    # the step recorded the final message, whose text is what the page put together
    [step] = run.steps
    assert step.name == "write" and step.result["content"] == [
        {"type": "text", "text": LETTER, "citations": None}
    ]
    assert step.result["usage"]["output_tokens"] == 21
    [call] = await calls_of(db, run_id)
    assert (call["kind"], call["outcome"], call["step"]) == ("stream", "ok", "write")
    assert (call["input_tokens"], call["output_tokens"]) == (40, 21)
    assert call["cost_usd"] == dollars(40, 21, "1", "5") and call["stop_reason"] == "end_turn"


async def test_the_text_is_throttled_by_stream_interval(
    client: Client, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    """The first words go out at once; then at most one piece per interval: with a long
    interval, the rest arrives with the end."""
    GATES["go"] = anyio.Event()
    fake_anthropic.reply(Reply(LETTER))  # word by word, as fast as it can
    configure = llm_config(fake_anthropic, stream_interval=3600)
    async with (
        start_daemon([streamed_letter], configure) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        run_id = await client.trigger("stream.letter", {})
        page = await open_page(group, http, admin_url(daemon), run_id)
        GATES["go"].set()
        await page.until("completed")
        group.cancel_scope.cancel()

    first, rest = LETTER.split(" ", 1)
    assert page.texts() == [
        {"step": "write", "call": 1, "text": first + " ", "done": False},
        {"step": "write", "call": 1, "text": rest, "done": True},
    ]


async def test_an_overload_inside_the_stream_hands_the_run_back_and_the_retry_completes(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    GATES["go"] = anyio.Event()
    fake_anthropic.reply(Reply(LETTER, input_tokens=40, output_tokens=21, chunk_delay=0.05))
    fake_anthropic.fail_next(in_stream=True)  # a 200 whose stream says overloaded_error
    configure = llm_config(fake_anthropic, stream_interval=0.02)
    async with (
        start_daemon([streamed_letter], configure, poll_interval=0.05) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        run_id = await client.trigger("stream.letter", {})
        page = await open_page(group, http, admin_url(daemon), run_id)
        GATES["go"].set()
        await page.until("waiting")
        waiting = await client.get_run(run_id)
        # back in the queue: no slot held, no attempt spent
        assert waiting.status is RunStatus.WAITING and waiting.attempt == 0
        assert waiting.worker_id is None
        # the overload window passes (skipped, not waited for)
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        await page.until("completed")
        group.cancel_scope.cancel()
    run = await wait_for_run(client, run_id)

    assert run.status is RunStatus.COMPLETED and run.output == LETTER
    assert [a.outcome.value for a in run.attempts] == ["completed"] and run.attempt == 1
    overloaded, ok = await calls_of(db, run_id)
    assert overloaded["outcome"] == "overloaded" and "overloaded_error" in overloaded["error"]
    assert overloaded["kind"] == "stream" and overloaded["input_tokens"] == 40
    assert ok["outcome"] == "ok" and ok["output_tokens"] == 21
    # the page: the failed stream ended without text, then the retried one wrote the letter
    kinds = page.kinds()
    assert kinds.index("waiting") < kinds.index("completed")
    before = [d["data"] for k, d in page.events[: kinds.index("waiting")] if k == "llm_text"]
    assert before == [{"step": "write", "call": 1, "text": "", "done": True}]
    after = [d["data"] for k, d in page.events[kinds.index("waiting") :] if k == "llm_text"]
    assert "".join(t["text"] for t in after) == LETTER and after[-1]["done"]


async def test_a_stream_left_early_is_still_recorded(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(Reply(LETTER, input_tokens=40, output_tokens=21))
    async with start_daemon([left_early], llm_config(fake_anthropic)):
        run_id = await client.trigger("stream.left", {})
        run = await wait_for_run(client, run_id)

    assert run.status is RunStatus.COMPLETED
    assert run.output == {"first": "Dear ", "whole": "stopped"}
    left, whole = await calls_of(db, run_id)
    # left after its first words: what the API had counted by then (the input, the first
    # output token), priced
    assert (left["step"], left["outcome"], left["stop_reason"]) == (
        "first",
        "abandoned",
        "abandoned",
    )
    assert (left["input_tokens"], left["output_tokens"]) == (40, 1)
    assert left["cost_usd"] == dollars(40, 1, "1", "5")
    # left at message_stop: the message was whole, recorded as such
    assert (whole["step"], whole["outcome"], whole["stop_reason"]) == (None, "ok", "end_turn")
    assert (whole["input_tokens"], whole["output_tokens"]) == (40, 21)

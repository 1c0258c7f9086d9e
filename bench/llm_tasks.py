"""taskd tasks used by bench/llm.py (loaded by the daemon via [tasks] modules): one Claude call
per run, inside a step (the documented pattern), through ctx.llm to the fake Anthropic API."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from taskd import Context, Queue, Rate, task

CONCURRENCY = 50
LATENCY = float(os.environ.get("BENCH_LLM_LATENCY", "0.2"))  # bench/llm.py --latency
MAX_TOKENS = 100  # the fake answers with exactly this many output tokens
PROMPT = [{"role": "user", "content": "Describe this run in one line. " + "x" * 370}]
# Phase 2: a token limit admitting half of what 50 calls at 200 ms use (bench/llm.py).
TOKEN_LIMIT = 25_000
TOKEN_WINDOW = "1s"
INPUT_ESTIMATE = 105  # declared by phase 2's calls: what the fake's count_tokens says, rounded up

CALLS = Queue("bench-llm", concurrency=CONCURRENCY)


async def _call(ctx: Context, **estimate: int) -> int:
    async def ask() -> int:
        message = await ctx.llm.messages.create(
            model="claude-haiku-4-5", max_tokens=MAX_TOKENS, messages=PROMPT, **estimate
        )
        return message.usage.input_tokens + message.usage.output_tokens

    tokens: int = await ctx.step("ask", ask)
    return tokens


@task(id="bench.llm_call", queue=CALLS)
async def llm_call(payload: Any, ctx: Context) -> int:
    return await _call(ctx)


@task(id="bench.llm_sleep", queue=CALLS)
async def llm_sleep(payload: Any, ctx: Context) -> int:
    """The same run without Claude: the step sleeps as long as the fake's answer takes."""

    async def ask() -> int:
        await asyncio.sleep(LATENCY)
        return 0

    tokens: int = await ctx.step("ask", ask)
    return tokens


def _token_rate() -> Rate | None:
    """Rate(tokens=..., per=...) when this taskd has token limits, else None (phase 2 is
    skipped)."""
    rate: Any = Rate
    try:
        made: Rate = rate(tokens=TOKEN_LIMIT, per=TOKEN_WINDOW)
    except TypeError:
        return None
    return made


TOKEN_RATE = _token_rate()

if TOKEN_RATE is not None:
    TOKENS = Queue("bench-llm-tokens", concurrency=CONCURRENCY, rate_limit=TOKEN_RATE)

    @task(id="bench.llm_call_tokens", queue=TOKENS)
    async def llm_call_tokens(payload: Any, ctx: Context) -> int:
        # the input's size declared (the fake counts 101 tokens): no count_tokens round trip
        return await _call(ctx, estimated_input_tokens=INPUT_ESTIMATE)

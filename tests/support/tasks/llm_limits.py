"""Tasks for the fleet test of LLM token limits (loaded by `taskd run` subprocesses through
``TASKD_TASKS__MODULES``): each run makes one ``ctx.llm`` call in a queue limited to
``LIMIT`` tokens per ``WINDOW`` seconds; the daemons reach the test's fake Anthropic API
through ``TASKD_LLM__BASE_URL``."""

from __future__ import annotations

from typing import Any

from taskd import Context, Queue, Rate, task

LIMIT = 1000
"""Tokens (input plus output) per window, over every daemon."""
WINDOW = 2.0
"""The window, in seconds: small, so that the test is short."""
MAX_TOKENS = 150
"""Each call's max_tokens: its output estimate (it uses fewer)."""

TOKEN_LIMITED = Queue("llm-fleet", rate_limit=Rate(tokens=LIMIT, per=WINDOW))


@task(id="llm_limits.call", queue=TOKEN_LIMITED)
async def call(payload: Any, ctx: Context) -> int:
    message = await ctx.llm.messages.create(
        model="claude-haiku-4-5",
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": f"Write one line about run {payload['n']}."}],
    )
    return message.usage.input_tokens + message.usage.output_tokens

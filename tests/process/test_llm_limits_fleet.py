"""An LLM token limit holds across daemons: two `taskd run` subprocesses share one fake
Anthropic API and one queue limited to 1,000 tokens per 2 seconds; the calls they made, as
taskd.llm_calls recorded them, hold at most the limit (plus one call's overshoot) in every
window, wherever it begins. And `taskd queues list` shows a queue's LLM limits and budget."""

from __future__ import annotations

import asyncpg
import pytest

from taskd import Budget, Client, Queue, Rate
from taskd.testing.anthropic import FakeAnthropic
from tests.support.cli import taskd
from tests.support.daemon_process import daemons
from tests.support.tasks.llm_limits import LIMIT, MAX_TOKENS, WINDOW
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

RUNS = 30
OUTPUT = 100  # each answer's output tokens (below max_tokens: the true-up frees the rest)


async def test_a_token_limit_holds_across_two_daemon_processes(
    database: str, client: Client
) -> None:
    db = await asyncpg.connect(database)
    try:
        async with FakeAnthropic(latency=0.05) as fake, daemons() as group:
            fake.reply("One line.", output_tokens=OUTPUT)
            env = {
                "TASKD_TASKS__MODULES": '["tests.support.tasks.llm_limits"]',
                "TASKD_LLM__BASE_URL": fake.url,
                "ANTHROPIC_API_KEY": "test-key",
            }
            first = await group.start(database, concurrency=10, **env)
            second = await group.start(database, concurrency=10, **env)
            await first.ready()
            await second.ready()
            await client.batch_trigger("llm_limits.call", [{"n": n} for n in range(RUNS)])

            async def all_completed() -> bool:
                done = await db.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE status = 'completed'"
                )
                return bool(done == RUNS)

            try:
                await wait_for(all_completed, timeout=90, interval=0.1)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{group.output()}") from None
        # the sampler: every call that used tokens, whatever its outcome (an abandoned or a
        # canceled stream, a failure with usage count in the window too), as recorded, by when
        # they started (their admission)
        calls = await db.fetch(
            "SELECT extract(epoch FROM started_at)::float8 AS at,"
            "       input_tokens + cache_write_tokens + cache_read_tokens + output_tokens"
            "       AS tokens"
            "  FROM taskd.llm_calls WHERE kind IN ('message', 'stream')"
            "   AND input_tokens + cache_write_tokens + cache_read_tokens + output_tokens > 0"
            " ORDER BY started_at"
        )
        workers = await db.fetchval(
            "SELECT count(DISTINCT worker_id) FROM taskd.attempts WHERE outcome = 'completed'"
        )
        # runs that called more than once: each must be one whose earlier attempt was lost
        # (its daemon stalled past the tests' 3 s lease: at-least-once, the call was made
        # again by the attempt that completed, and it too went through the limit)
        per_run = await db.fetch(
            "SELECT c.run_id, count(*) AS calls,"
            "       (SELECT count(*) FROM taskd.attempts a"
            "         WHERE a.run_id = c.run_id AND a.outcome = 'lost') AS lost"
            "  FROM taskd.llm_calls c WHERE c.kind IN ('message', 'stream')"
            "   AND c.input_tokens + c.output_tokens > 0 GROUP BY c.run_id"
        )
    finally:
        await db.close()
    assert len(per_run) == RUNS  # every run made its call
    assert all(r["calls"] <= 1 + r["lost"] for r in per_run), [dict(r) for r in per_run]
    assert len(calls) == sum(r["calls"] for r in per_run)
    biggest = max(c["tokens"] for c in calls)
    assert biggest <= MAX_TOKENS + 20  # one line's input and the scripted output
    # every window of WINDOW seconds, wherever it begins, holds at most the limit plus one
    # call's overshoot
    windows = [
        sum(c["tokens"] for c in calls[i:] if c["at"] < call["at"] + WINDOW)
        for i, call in enumerate(calls)
    ]
    assert max(windows) <= LIMIT + biggest, windows
    # ...and the limit was what held them back: a window came near it, and the tokens took
    # as many windows as the limit allows them at least
    assert max(windows) > LIMIT // 2, windows
    total = sum(c["tokens"] for c in calls)
    span = calls[-1]["at"] - calls[0]["at"]
    assert span >= (total / (LIMIT + biggest) - 1) * WINDOW, (span, total)
    # both daemons made calls: the limit was the fleet's, not each daemon's
    assert workers == 2


async def test_queues_list_shows_the_llm_limits_and_budget(database: str, client: Client) -> None:
    queue = Queue(
        "anthropic",
        concurrency=5,
        rate_limit=Rate(tokens=400_000, requests=50, per="1m"),
        budget=Budget(usd=5, per="1d", on_exceed="wait"),
    )
    await client._store.queues.sync([queue.settings()])
    listed = await taskd(database, "queues", "list")
    assert listed.code == 0, listed
    header, row = listed.out.splitlines()[:2]
    assert "LLM LIMITS" in header and "LLM BUDGET" in header
    assert "tokens=400000,requests=50/60s" in row and "$5/86400s per key (wait)" in row
    # an operator sets starts; the call limits stay the code's
    refused = await taskd(database, "queues", "set", "anthropic", "--rate", "tokens=10/1m")
    assert refused.code != 0 and "declared in the code" in refused.err

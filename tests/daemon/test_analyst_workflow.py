"""Seed 001's analyst workflow (tasks/analyst_workflow.py) against the fake Anthropic API
answering with tool_use blocks: a conversation of several calls, each a step, the tools run
by the task over the given data and their results fed back, a bad query corrected, the final
report returned; a 429 mid-conversation asks no earlier turn twice."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from taskd import Client, RunStatus
from taskd.testing.anthropic import FakeAnthropic, Reply
from tasks.analyst_workflow import analyst_workflow
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

SONNET = "claude-sonnet-4-5"
QUESTION = "Which region brought the most paid revenue?"
TABLES = {
    "orders": [
        {"id": 1, "region": "EU", "amount": 200.0, "status": "paid"},
        {"id": 2, "region": "US", "amount": 300.0, "status": "refunded"},
        {"id": 3, "region": "EU", "amount": 150.0, "status": "paid"},
        {"id": 4, "region": "US", "amount": 120.0, "status": "paid"},
        {"id": 5, "region": "APAC", "amount": 90.0, "status": "pending"},
    ],
    "customers": [{"id": 1, "name": "Ada"}],
}
PAID_BY_REGION = {
    "table": "orders",
    "where": [{"column": "status", "op": "=", "value": "paid"}],
    "group_by": "region",
    "aggregate": {"fn": "sum", "column": "amount"},
    "order_by": "value",
    "desc": True,
}


def last_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = body["messages"][-1]["content"]
    assert all(block["type"] == "tool_result" for block in results)
    return results


def analyst(body: dict[str, Any]) -> Reply:
    """Claude, scripted by the conversation's length: look, query (wrong table, then right),
    report from what the query returned."""
    turn = (len(body["messages"]) + 1) // 2
    usage = {"input_tokens": 1000 * turn, "output_tokens": 60}
    if turn == 1:
        return Reply.tool_use("list_tables", {}, text="Let me look at the data.", **usage)
    if turn == 2:
        tables = json.loads(last_results(body)[0]["content"])
        assert tables["orders"] == {"columns": ["amount", "id", "region", "status"], "rows": 5}
        return Reply.tool_use("query", {**PAID_BY_REGION, "table": "order"}, **usage)
    if turn == 3:
        [error] = last_results(body)
        assert error["is_error"] is True
        return Reply.tool_use("query", PAID_BY_REGION, **usage)
    answer = json.loads(last_results(body)[0]["content"])
    (region, total), *_ = answer["rows"]
    report = f"Top region by paid revenue: {region} with {total:g} ({answer['row_count']} regions)."
    return Reply(report, **usage)


async def test_the_analyst_queries_with_tools_over_several_calls_and_reports(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(analyst)
    async with start_daemon([analyst_workflow], llm_config(fake_anthropic)):
        run_id = await client.trigger(
            "analyst-workflow", {"question": QUESTION, "tables": TABLES}, concurrency_key="org-1"
        )
        run = await wait_for_run(client, run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output is not None
    assert run.output["report"] == "Top region by paid revenue: EU with 350 (2 regions)."
    assert run.output["turns"] == 4
    assert [(c["turn"], c["name"], c["ok"], c["rows"]) for c in run.output["tool_calls"]] == [
        (1, "list_tables", True, 0),
        (2, "query", False, 0),
        (3, "query", True, 2),
    ]
    assert (run.output["input_tokens"], run.output["output_tokens"]) == (10_000, 240)
    # each call a step, the tools' results steps too
    assert [s.name for s in run.steps] == [
        "turn-1",
        "tools-1",
        "turn-2",
        "tools-2",
        "turn-3",
        "tools-3",
        "turn-4",
    ]
    assert run.metadata == {"turn": 3, "tool_calls": 3}
    # what Claude was sent: the tools, the question, then each answer and its tool results
    requests = [r.body for r in fake_anthropic.message_requests]
    assert [len(body["messages"]) for body in requests] == [1, 3, 5, 7]
    for body in requests:
        assert body["model"] == SONNET and body["stream"] is True
        assert [tool["name"] for tool in body["tools"]] == ["list_tables", "query"]
        assert body["messages"][0] == {"role": "user", "content": QUESTION}
    first_use = requests[1]["messages"][1]["content"][1]
    assert first_use["type"] == "tool_use" and first_use["name"] == "list_tables"
    assert last_results(requests[1])[0]["tool_use_id"] == first_use["id"]
    [error] = last_results(requests[2])
    assert error["is_error"] and "no table 'order'" in error["content"]
    rows = json.loads(last_results(requests[3])[0]["content"])["rows"]
    assert rows == [["EU", 350.0], ["US", 120.0]]
    # every call recorded against its step, priced at Sonnet's $3 / $15
    calls = await calls_of(db, run_id)
    assert [(c["step"], c["kind"], c["outcome"]) for c in calls] == [
        (f"turn-{n}", "stream", "ok") for n in (1, 2, 3, 4)
    ]
    assert {c["concurrency_key"] for c in calls} == {"org-1"}
    assert sum(c["cost_usd"] for c in calls) == dollars(10_000, 240, "3", "15")


async def test_a_429_mid_conversation_asks_no_earlier_turn_twice(
    client: Client, db: asyncpg.Connection, start_daemon, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(analyst)
    fake_anthropic.fail_next(
        status=429, retry_after=60, match=lambda body: len(body["messages"]) == 5
    )
    async with start_daemon([analyst_workflow], llm_config(fake_anthropic)):
        run_id = await client.trigger("analyst-workflow", {"question": QUESTION, "tables": TABLES})

        async def waiting() -> bool:
            return (await client.get_run(run_id)).status is RunStatus.WAITING

        await wait_for(waiting)
        run = await client.get_run(run_id)
        assert run.attempt == 0 and run.run_at is not None
        assert run.run_at > datetime.now(UTC) + timedelta(seconds=50)
        # the API's minute passes (skipped, not waited for)
        await db.execute("UPDATE taskd.llm_backoffs SET until = now()")
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        done = await wait_for_run(client, run_id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output is not None and done.output["turns"] == 4
    assert [a.outcome.value for a in done.attempts] == ["completed"]
    # turns 1 and 2 came from their steps when the run executed again: asked once each
    sizes = Counter(len(r.body["messages"]) for r in fake_anthropic.message_requests)
    assert sizes == {1: 1, 3: 1, 5: 2, 7: 1}
    outcomes = [(c["step"], c["outcome"]) for c in await calls_of(db, run_id)]
    assert outcomes == [
        ("turn-1", "ok"),
        ("turn-2", "ok"),
        ("turn-3", "rate_limited"),
        ("turn-3", "ok"),
        ("turn-4", "ok"),
    ]

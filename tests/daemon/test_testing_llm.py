"""taskd.testing's ``taskd_anthropic`` fixture on seed 001's analyst workflow
(tasks/analyst_workflow.py): the tester's daemon calls the fake Anthropic API, the run's LLM
calls come back with its result, and the minute a 429 asks for is skipped, not waited."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from taskd import RunStatus
from taskd.testing import Tester
from taskd.testing.anthropic import FakeAnthropic, Reply
from tasks.analyst_workflow import analyst_workflow

ORDERS = [
    {"id": 1, "region": "EU", "amount": 200.0, "status": "paid"},
    {"id": 2, "region": "US", "amount": 120.0, "status": "paid"},
]


def analyst(body: dict[str, Any]) -> Reply:
    """Claude looks at the tables, then reports what it saw."""
    if len(body["messages"]) == 1:
        return Reply.tool_use("list_tables", {}, input_tokens=500, output_tokens=20)
    tables = json.loads(body["messages"][-1]["content"][0]["content"])
    return Reply(f"orders has {tables['orders']['rows']} rows.", input_tokens=900, output_tokens=9)


async def test_an_llm_task_against_the_fake_with_a_rate_limit_skipped(
    taskd_tester: Tester, taskd_anthropic: FakeAnthropic
) -> None:
    taskd_anthropic.reply(analyst)
    taskd_anthropic.fail_next(
        status=429, retry_after=60, match=lambda body: len(body["messages"]) == 3
    )
    started = taskd_tester.now()

    result = await taskd_tester.run(
        analyst_workflow, {"question": "How many orders?", "tables": {"orders": ORDERS}}
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output["report"] == "orders has 2 rows."
    assert [(call.step, call.outcome) for call in result.llm_calls] == [
        ("turn-1", "ok"),
        ("turn-2", "rate_limited"),
        ("turn-2", "ok"),
    ]
    assert sum(call.input_tokens for call in result.llm_calls if call.outcome == "ok") == 1400
    assert [step.name for step in result.steps] == ["turn-1", "tools-1", "turn-2"]
    assert taskd_tester.now() - started >= timedelta(seconds=60), "the API's minute went by"
    assert len(taskd_anthropic.message_requests) == 3

"""Rate's LLM call limits and Budget: what they accept, how they read and print, and what a
queue stores of them."""

from __future__ import annotations

import pytest

from taskd import Budget, Queue, Rate


def test_a_rate_holds_any_combination_of_limits_and_keeps_its_starts_meaning() -> None:
    assert Rate(50, per="1m").limit == 50 and Rate(50, per="1m").call_limits() == {}
    rate = Rate(tokens=400_000, requests=50, per="1m")
    assert rate.limit is None and rate.call_limits() == {"tokens": 400_000, "requests": 50}
    assert str(rate) == "tokens=400000,requests=50/60s"
    assert str(Rate(50, per="1m")) == "50/60s"
    assert Rate.parse("tokens=400000,requests=50/1m") == rate
    assert Rate.parse("starts=5,output_tokens=100/1h") == Rate(5, per=3600, output_tokens=100)
    assert Rate.parse("50/1m") == Rate(50, per=60)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Rate(per="1m"), "at least one limit"),
        (lambda: Rate(tokens=1.5, per="1m"), "tokens must be a whole number"),
        (lambda: Rate(requests=0, per="1m"), "requests must be a whole number"),
        (lambda: Rate(tokens=10, per="2d"), "at most 1 day"),
        (lambda: Rate.parse("bananas=3/1m"), "not a rate"),
        (lambda: Rate.parse("tokens=3,tokens=4/1m"), "not a rate"),
        (lambda: Budget(usd=0), "positive number of dollars"),
        (lambda: Budget(usd=5, on_exceed="queue"), "'fail' or 'wait'"),  # type: ignore[arg-type]
        (lambda: Budget(usd=5, per="1w"), "at most 1 day"),
        (lambda: Queue("q", budget=5), "budget must be a Budget"),  # type: ignore[arg-type]
    ],
)
def test_bad_limits_are_refused_in_one_clear_line(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_a_queue_stores_its_call_limits_and_budget_apart_from_its_start_rate() -> None:
    queue = Queue(
        "anthropic",
        concurrency=5,
        rate_limit=Rate(tokens=400_000, per="1m"),
        budget=Budget(usd=5, per="1d", on_exceed="wait"),
    )
    settings = queue.settings()
    assert (settings.rate_limit, settings.rate_period) == (None, None)  # starts unlimited
    assert settings.llm_limits == {
        "calls": {"tokens": 400_000, "period": 60.0},
        "budget": {"usd": 5.0, "period": 86400.0, "on_exceed": "wait"},
    }
    assert str(queue.budget) == "$5/86400s per key (wait)"
    assert Queue("plain", rate_limit=Rate(50, per="1m")).settings().llm_limits is None

"""``Queue``, ``Rate`` and ``Budget``: where a task's runs wait, and the limits that hold across
daemons (starts of runs, and the LLM calls its runs make through ``ctx.llm``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from taskd.durations import Duration, to_seconds
from taskd.models import QueueSettings

MAX_RATE_PERIOD = 86400.0  # a day: starts (and LLM admissions) are remembered for one period
MAX_LIMIT = 2**31 - 1  # limits are int columns
MAX_TOKEN_LIMIT = 2**53  # token limits are JSON numbers
MAX_QUEUE_NAME = 200
CALL_LIMITS = ("tokens", "input_tokens", "output_tokens", "requests")
"""The per-call limits a ``Rate`` may hold, besides ``limit`` (starts of runs)."""
ON_EXCEED = ("fail", "wait")


def check_limit(what: str, value: object, most: int = MAX_LIMIT) -> None:
    """A limit is a whole number from 1 to 2**31 - 1 (``most``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{what} must be a whole number from 1 to {most}, not {value!r}")


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a queue needs a name")
    if len(name) > MAX_QUEUE_NAME or "\x00" in name:
        raise ValueError(
            f"a queue name has at most {MAX_QUEUE_NAME} characters, without NUL: {name[:40]!r}..."
        )
    return name


def _period(per: Duration, what: str) -> float:
    seconds = to_seconds(per)
    if not 0 < seconds <= MAX_RATE_PERIOD:
        raise ValueError(f"{what} period must be above 0 and at most 1 day, not {per!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Rate:
    """Limits over any window of ``per`` (a sliding window, over all daemons), any combination
    of: ``limit``, starts of runs (``Rate(50, per="1m")``); and, for the LLM calls the queue's
    runs make through ``ctx.llm``: ``tokens`` (input plus output), ``input_tokens``,
    ``output_tokens``, ``requests`` (``Rate(tokens=400_000, requests=50, per="1m")``)."""

    limit: int | None = None
    """Most starts of runs in any window of ``per`` (None: starts are not limited)."""
    per: Duration = field(default=1.0, compare=False)
    """The window: seconds or a duration ("1m"), at most a day."""
    tokens: int | None = None
    """Most input plus output tokens of ``ctx.llm`` calls in any window."""
    input_tokens: int | None = None
    """Most input tokens of ``ctx.llm`` calls in any window."""
    output_tokens: int | None = None
    """Most output tokens of ``ctx.llm`` calls in any window."""
    requests: int | None = None
    """Most ``ctx.llm`` requests (messages and streams) in any window."""
    seconds: float = field(init=False, repr=False)  # what compares: "1m" == 60

    def __post_init__(self) -> None:
        if self.limit is None and not self.call_limits():
            raise ValueError(
                "a Rate needs at least one limit: starts (Rate(50, per='1m')) or tokens=, "
                "input_tokens=, output_tokens=, requests="
            )
        if self.limit is not None:
            check_limit("a rate limit", self.limit)
        for name in CALL_LIMITS:
            value = getattr(self, name)
            if value is not None:
                check_limit(f"a rate's {name}", value, MAX_TOKEN_LIMIT)
        object.__setattr__(self, "seconds", _period(self.per, "a rate"))

    def call_limits(self) -> dict[str, int]:
        """The limits on LLM calls it holds, by name (empty: it limits starts only)."""
        return {name: value for name in CALL_LIMITS if (value := getattr(self, name)) is not None}

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"50/1m"``, ``"20/s"``, ``"1000/1h"``: starts/period; the LLM call limits as
        name=value before the period: ``"tokens=400000,requests=50/1m"`` (names: starts,
        tokens, input_tokens, output_tokens, requests)."""
        counts, sep, per = text.rpartition("/")
        usage = (
            f"not a rate: {text!r} (use limit/period, e.g. 50/1m, 20/1s, or "
            "tokens=400000,requests=50/1m)"
        )
        per = per.strip()
        if not sep or not counts.strip() or not per:
            raise ValueError(usage)
        values: dict[str, int] = {}
        for part in counts.split(","):
            name, equals, number = part.partition("=")
            name = name.strip() if equals else "starts"
            if name not in ("starts", *CALL_LIMITS) or name in values:
                raise ValueError(usage)
            try:
                values[name] = int((number if equals else part).strip())
            except ValueError:
                raise ValueError(usage) from None
        starts = values.pop("starts", None)
        return cls(starts, per="1" + per if per[:1].isalpha() else per, **values)

    def __str__(self) -> str:
        calls = self.call_limits()
        if not calls:
            return f"{self.limit}/{self.seconds:g}s"
        parts = ([f"starts={self.limit}"] if self.limit is not None else []) + [
            f"{name}={value}" for name, value in calls.items()
        ]
        return f"{','.join(parts)}/{self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Budget:
    """A queue's spending limit on LLM calls made through ``ctx.llm``, per concurrency key
    (the tenant; runs without a key share one budget): at most ``usd`` dollars in any window
    of ``per``, over all daemons: ``Queue("anthropic", budget=Budget(usd=5, per="1d"))``.

    A call whose estimated cost would pass it is not sent: ``on_exceed="fail"`` raises
    ``BudgetExceeded`` (the run fails), ``"wait"`` suspends the run until the window has room.
    """

    usd: float
    """Most dollars per concurrency key in any window of ``per``."""
    per: Duration = field(default="1d", compare=False)
    """The window: seconds or a duration ("1d"), at most a day."""
    on_exceed: Literal["fail", "wait"] = "fail"
    """What a call that would pass the budget does: "fail" (BudgetExceeded) or "wait"."""
    seconds: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        usd = self.usd
        if isinstance(usd, bool) or not isinstance(usd, int | float) or not 0 < usd < math.inf:
            raise ValueError(f"a budget's usd must be a positive number of dollars, not {usd!r}")
        if self.on_exceed not in ON_EXCEED:
            raise ValueError(
                f"a budget's on_exceed must be 'fail' or 'wait', not {self.on_exceed!r}"
            )
        object.__setattr__(self, "usd", float(usd))
        object.__setattr__(self, "seconds", _period(self.per, "a budget"))

    def __str__(self) -> str:
        return f"${self.usd:g}/{self.seconds:g}s per key" + (
            " (wait)" if self.on_exceed == "wait" else ""
        )


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue, shared by any number of tasks, with optional limits that hold across
    every daemon on the database:

    ``concurrency``: runs of the queue executing at once; ``concurrency_limit_per_key``: runs
    of one ``concurrency_key`` (a trigger option) executing at once; ``rate_limit``: starts per
    period, and limits on the tokens and requests of the LLM calls its runs make;
    ``budget``: dollars of LLM calls per concurrency key and period. Waiting runs (durable
    waits, child runs, tokens) hold no slot.
    """

    name: str
    """The queue's name (1 to 200 characters)."""
    concurrency: int | None = None
    """Runs of the queue executing at once, over all daemons (None: no limit)."""
    concurrency_limit_per_key: int | None = None
    """Runs of one ``concurrency_key`` executing at once (None: no limit)."""
    rate_limit: Rate | None = None
    """Starts per period, and LLM call limits (tokens, requests) per period (None: none)."""
    budget: Budget | None = None
    """Dollars of LLM calls per concurrency key and period (None: no budget)."""

    def __post_init__(self) -> None:
        check_queue_name(self.name)
        for what, value in (
            ("concurrency", self.concurrency),
            ("concurrency_limit_per_key", self.concurrency_limit_per_key),
        ):
            if value is not None:
                check_limit(f"queue {self.name!r}: {what}", value)
        if self.rate_limit is not None and not isinstance(self.rate_limit, Rate):
            raise ValueError(f"queue {self.name!r}: rate_limit must be a Rate(limit, per=...)")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ValueError(f"queue {self.name!r}: budget must be a Budget(usd=..., per=...)")

    @property
    def limited(self) -> bool:
        return (
            self.concurrency is not None
            or self.concurrency_limit_per_key is not None
            or self.rate_limit is not None
            or self.budget is not None
        )

    def llm_limits(self) -> dict[str, Any] | None:
        """The LLM call limits and budget as stored in ``taskd.queues.llm_limits``."""
        rate = self.rate_limit
        calls = rate.call_limits() if rate is not None else {}
        if not calls and self.budget is None:
            return None
        limits: dict[str, Any] = {}
        if calls:
            assert rate is not None
            limits["calls"] = {**calls, "period": rate.seconds}
        if self.budget is not None:
            limits["budget"] = {
                "usd": self.budget.usd,
                "period": self.budget.seconds,
                "on_exceed": self.budget.on_exceed,
            }
        return limits

    def settings(self) -> QueueSettings:
        starts = self.rate_limit.limit if self.rate_limit is not None else None
        return QueueSettings(
            self.name,
            self.concurrency,
            self.concurrency_limit_per_key,
            starts,
            self.rate_limit.seconds if self.rate_limit is not None and starts else None,
            self.llm_limits(),
        )

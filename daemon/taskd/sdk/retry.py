"""Retry policy: exponential backoff with optional full jitter."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskd.durations import Duration, to_seconds

MAX_RETRY_AFTER = 7 * 86_400.0
# The longest min_delay, max_delay or max_duration a trigger or the config may give (as the
# SQL function taskd.trigger checks: a run's times must stay readable).
MAX_SECONDS = 100 * 365.25 * 86_400
RETRY_FIELDS = ("max_attempts", "min_delay", "max_delay", "factor", "jitter")


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how soon a failed attempt is tried again.

    The delay after attempt ``n`` fails is ``min(max_delay, min_delay * factor ** (n - 1))``;
    with ``jitter`` it is drawn uniformly between ``min_delay`` and that value, so that runs
    failing together do not come back together (the first retry, whose value is
    ``min_delay``, has nothing to spread). An exception with a
    ``retry_after`` attribute (seconds) sets the delay instead.
    """

    max_attempts: int = 3
    """Attempts a run gets in all (1: no retry)."""
    min_delay: float = 1.0
    """Seconds before the first retry."""
    max_delay: float = 60.0
    """Longest delay between attempts, in seconds."""
    factor: float = 2.0
    """Each retry's delay is the previous one's times this (up to ``max_delay``)."""
    jitter: bool = True
    """Draw each delay uniformly between ``min_delay`` and the computed one."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("Retry.max_attempts must be at least 1")
        if self.min_delay < 0 or self.max_delay < self.min_delay:
            raise ValueError("Retry needs 0 <= min_delay <= max_delay")
        if self.factor < 1:
            raise ValueError("Retry.factor must be at least 1")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1-based) failed."""
        try:
            grown = self.min_delay * self.factor ** max(0, attempt - 1)
        except OverflowError:  # "retry forever" policies reach huge exponents
            grown = self.max_delay
        delay: float = min(self.max_delay, grown)
        if self.jitter and delay > self.min_delay:
            delay = random.uniform(self.min_delay, delay)
        return delay

    def overridden(self, fields: Mapping[str, Any] | None) -> Retry:
        """This policy with a trigger's fields (as ``retry_override`` made them) in place.

        A trigger's ``min_delay`` above this policy's ``max_delay`` raises ``max_delay`` to
        it (and a ``max_delay`` below ``min_delay`` lowers ``min_delay``): the field the
        trigger gave wins."""
        if not fields:
            return self
        given = {k: v for k, v in fields.items() if k in RETRY_FIELDS}
        merged = dataclasses.asdict(self) | given
        if merged["min_delay"] > merged["max_delay"]:
            if "min_delay" in given:
                merged["max_delay"] = merged["min_delay"]
            else:
                merged["min_delay"] = merged["max_delay"]
        return Retry(
            max_attempts=int(merged["max_attempts"]),
            min_delay=float(merged["min_delay"]),
            max_delay=float(merged["max_delay"]),
            factor=float(merged["factor"]),
            jitter=bool(merged["jitter"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """Its fields, delays in seconds (a trigger's ``retry`` and the config take this)."""
        return dataclasses.asdict(self)


def retry_override(value: Retry | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A trigger's ``retry`` checked and normalised as taskd.trigger does in SQL: the fields
    given (a ``Retry`` gives all of them), delays in seconds; None for none. ValueError (one
    line, naming the field) when a field is unknown or out of range."""
    if value is None:
        return None
    if isinstance(value, Retry):
        return value.as_dict()
    if not isinstance(value, Mapping):
        raise ValueError(
            "retry must be a Retry(...) or a dict such as "
            f'{{"max_attempts": 5, "min_delay": "1s", "factor": 2}}, not {type(value).__name__}'
        )
    unknown = sorted(str(k) for k in value if k not in RETRY_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown retry field(s): {', '.join(unknown)} (known: {', '.join(RETRY_FIELDS)})"
        )
    result: dict[str, Any] = {}
    if "max_attempts" in value:
        attempts = value["max_attempts"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts < 2**31:
            raise ValueError(
                f"retry.max_attempts must be a whole number of at least 1 (got {attempts!r})"
            )
        result["max_attempts"] = attempts
    for name in ("min_delay", "max_delay"):
        if name in value:
            result[name] = _seconds(f"retry.{name}", value[name], allow_zero=True)
    if result.get("min_delay", 0.0) > result.get("max_delay", math.inf):
        raise ValueError(
            f"retry.min_delay ({result['min_delay']:g}s) must not exceed retry.max_delay "
            f"({result['max_delay']:g}s)"
        )
    if "factor" in value:
        factor = value["factor"]
        try:
            number = float(factor) if not isinstance(factor, bool | str) else math.nan
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number) or number < 1:
            raise ValueError(f"retry.factor must be a number of at least 1 (got {factor!r})")
        result["factor"] = number
    if "jitter" in value:
        if not isinstance(value["jitter"], bool):
            raise ValueError(f"retry.jitter must be True or False (got {value['jitter']!r})")
        result["jitter"] = value["jitter"]
    return result


def max_duration_seconds(name: str, value: Duration | None) -> float | None:
    """A max_duration (seconds, "5m", a timedelta) in seconds: positive, at most 100 years;
    None for None. ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    return _seconds(name, value, allow_zero=False)


def run_policy(
    max_attempts: int | None,
    retry: Retry | Mapping[str, Any] | None,
    max_duration: Duration | None,
) -> tuple[int | None, dict[str, Any] | None, float | None]:
    """A trigger's attempt limit, backoff fields and max_duration as the run stores them
    (retry.max_attempts goes to max_attempts; the two must agree when both are given)."""
    backoff = retry_override(retry)
    if backoff is not None and "max_attempts" in backoff:
        given = backoff.pop("max_attempts")
        if max_attempts is not None and max_attempts != given:
            raise ValueError(
                f"max_attempts ({max_attempts}) and retry.max_attempts ({given}) differ: "
                "give it once"
            )
        max_attempts = given
    return max_attempts, backoff or None, max_duration_seconds("max_duration", max_duration)


def _seconds(name: str, value: Any, *, allow_zero: bool) -> float:
    try:
        seconds = to_seconds(value)
    except OverflowError:
        seconds = math.inf
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if not math.isfinite(seconds) or seconds > MAX_SECONDS or (not allow_zero and seconds == 0):
        least = "at least 0" if allow_zero else "positive"
        raise ValueError(f"{name} must be {least} and at most 100 years (got {value!r})")
    return seconds


def retry_after(exc: BaseException) -> float | None:
    """The exception's ``retry_after`` in seconds (a server's Retry-After), capped at a week;
    None when absent or unusable."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))

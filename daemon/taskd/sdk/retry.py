"""Retry policy: exponential backoff with optional full jitter."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MAX_RETRY_AFTER = 7 * 86_400.0


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
    min_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    jitter: bool = True

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

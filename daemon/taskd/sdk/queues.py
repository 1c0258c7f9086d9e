"""``Queue`` and ``Rate``: where a task's runs wait, and the limits that hold across daemons."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskd.durations import Duration, to_seconds
from taskd.models import QueueSettings

MAX_RATE_PERIOD = 86400.0  # a day: starts are remembered for one period
MAX_LIMIT = 2**31 - 1  # limits are int columns
MAX_QUEUE_NAME = 200


def check_limit(what: str, value: object) -> None:
    """A limit is a whole number from 1 to 2**31 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_LIMIT}, not {value!r}")


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a queue needs a name")
    if len(name) > MAX_QUEUE_NAME or "\x00" in name:
        raise ValueError(
            f"a queue name has at most {MAX_QUEUE_NAME} characters, without NUL: {name[:40]!r}..."
        )
    return name


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` starts in any window of ``per`` (a sliding window, over all daemons):
    ``Rate(50, per="1m")``."""

    limit: int
    """Most starts in any window of ``per``."""
    per: Duration = field(default=1.0, compare=False)
    """The window: seconds or a duration ("1m")."""
    seconds: float = field(init=False, repr=False)  # what compares: "1m" == 60

    def __post_init__(self) -> None:
        check_limit("a rate limit", self.limit)
        seconds = to_seconds(self.per)
        if not 0 < seconds <= MAX_RATE_PERIOD:
            raise ValueError(f"a rate period must be above 0 and at most 1 day, not {self.per!r}")
        object.__setattr__(self, "seconds", seconds)

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"50/1m"``, ``"20/s"``, ``"1000/1h"``: limit/period."""
        limit, sep, per = text.partition("/")
        try:
            if not sep:
                raise ValueError
            number = int(limit.strip())
        except ValueError:
            raise ValueError(
                f"not a rate: {text!r} (use limit/period, e.g. 50/1m, 20/1s)"
            ) from None
        per = per.strip()
        return cls(number, per="1" + per if per[:1].isalpha() else per)

    def __str__(self) -> str:
        return f"{self.limit}/{self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue, shared by any number of tasks, with optional limits that hold across
    every daemon on the database:

    ``concurrency``: runs of the queue executing at once; ``concurrency_limit_per_key``: runs
    of one ``concurrency_key`` (a trigger option) executing at once; ``rate_limit``: starts per
    period. Waiting runs (durable waits, child runs, tokens) hold no slot.
    """

    name: str
    """The queue's name (1 to 200 characters)."""
    concurrency: int | None = None
    """Runs of the queue executing at once, over all daemons (None: no limit)."""
    concurrency_limit_per_key: int | None = None
    """Runs of one ``concurrency_key`` executing at once (None: no limit)."""
    rate_limit: Rate | None = None
    """Starts per period (None: no limit)."""

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

    @property
    def limited(self) -> bool:
        return (
            self.concurrency is not None
            or self.concurrency_limit_per_key is not None
            or self.rate_limit is not None
        )

    def settings(self) -> QueueSettings:
        return QueueSettings(
            self.name,
            self.concurrency,
            self.concurrency_limit_per_key,
            self.rate_limit.limit if self.rate_limit is not None else None,
            self.rate_limit.seconds if self.rate_limit is not None else None,
        )

"""``wait``: durable waits inside a task.

``await wait.for_(hours=24)`` / ``await wait.until(dt)``. A wait shorter than the daemon's
``[worker] wait_threshold`` (5 s) sleeps in the run's slot. A longer one suspends the run: it
ends the attempt without spending it, the run becomes WAITING with the wake-up time in the
database and its slot is free at once; when the time comes any daemon (after any restart)
executes the run again, where recorded steps and passed waits return at once.

Each wait is recorded like a step, named by its order in the run (``wait:1``, ``wait:2``...),
with the wake-up time it was given on first reach: the run's code must reach its waits in the
same order on every execution (the rule steps already impose).
"""

from __future__ import annotations

import contextvars
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from daemon.sdk.context import Context

_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "taskd_context", default=None
)


def set_current_context(ctx: Context | None) -> contextvars.Token[Context | None]:
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token[Context | None]) -> None:
    _current.reset(token)


def current_context() -> Context:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("wait.for_ / wait.until are for code running inside a taskd task")
    return ctx


class Suspend(BaseException):
    """Raised by a long wait to end the attempt and suspend the run until ``wake_at``.

    A BaseException, so that a task's ``except Exception`` cannot swallow it.
    """

    def __init__(self, wake_at: datetime) -> None:
        super().__init__(f"suspended until {wake_at.isoformat()}")
        self.wake_at = wake_at


class Wait:
    async def for_(
        self, *, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0
    ) -> None:
        """Wait this long (durably, when longer than the daemon's wait threshold)."""
        delta = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days)
        if delta < timedelta(0):
            raise ValueError("a wait cannot be negative")
        await current_context().wait_until(lambda now: now + delta)

    async def until(self, moment: datetime) -> None:
        """Wait until ``moment`` (timezone-aware); a moment passed returns at once."""
        if moment.tzinfo is None:
            raise ValueError("wait.until needs a timezone-aware datetime")
        await current_context().wait_until(lambda now: moment)


wait = Wait()


async def sleep_until(wake_at: datetime) -> None:
    remaining = (wake_at - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        await anyio.sleep(remaining)

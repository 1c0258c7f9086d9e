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

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from taskd import clock
from taskd.durations import Duration, to_seconds
from taskd.sdk.current import current_context


class Suspend(BaseException):
    """Raised by a long wait to end the attempt and suspend the run until ``wake_at``.

    A BaseException, so that a task's ``except Exception`` cannot swallow it.
    """

    def __init__(self, wake_at: datetime) -> None:
        super().__init__(f"suspended until {wake_at.isoformat()}")
        self.wake_at = wake_at


class Wait:
    """Durable waits, used through ``taskd.wait`` inside a task."""

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

    async def create_token(self, *, timeout: Duration = "1h") -> WaitToken:  # noqa: ASYNC109
        """A token that something outside the run completes with ``client.complete_token``,
        SQL ``taskd.complete_token`` or ``taskd tokens complete``. Created once per run and
        call site (recorded like a step)."""
        return await current_context().create_token(to_seconds(timeout))

    async def for_token(self, token: WaitToken | str | uuid.UUID) -> Any:
        """The data the token was completed with; the run suspends until then (its slot is
        free). Raises WaitTimeout when the token's timeout passes first."""
        token_id = token.id if isinstance(token, WaitToken) else uuid.UUID(str(token))
        return await current_context().wait_for_token(token_id)


@dataclass(frozen=True)
class WaitToken:
    """A wait token (``wait.create_token``): hand its ``id`` to whatever completes it."""

    id: uuid.UUID
    """What ``client.complete_token``, SQL ``taskd.complete_token`` and ``taskd tokens
    complete`` take."""
    expires_at: datetime
    """When it times out: ``wait.for_token`` then raises WaitTimeout."""


wait = Wait()


async def sleep_until(wake_at: datetime) -> None:
    await clock.sleep_until(wake_at, in_run=True)

"""One stream of run changes, published once by the layer that writes each transition.

The runs in flight (started, attempt failed, completed, failed, canceled, handed back), the
maintenance chores (expired, rescued), the run context (metadata set) and the daemon's own
producers (created) publish here after their write committed. Each ``/api/stream`` client
reads through a bounded subscription; a reader that falls behind is dropped, never buffered
without bound, so the daemon's memory does not depend on how fast anyone reads. Changes are
built only while someone subscribes, here or on another daemon (worker/change_feed.py sends
them to the database then, and delivers the other daemons' changes here): the metrics count
through Telemetry instead, in batches (at 20,000 runs a second a change object per transition
cost a fifth of the daemon's time).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("taskd.changes")


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    STARTED = "started"
    ATTEMPT_FAILED = "attempt_failed"  # the run goes back to the queue for a retry
    HANDED_BACK = "handed_back"  # drained at shutdown: queued again, attempt not spent
    WAITING = "waiting"  # suspended by a wait until its wake-up time (attempt not spent)
    WOKEN = "woken"  # a waiting run's time came: queued again
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    METADATA = "metadata"
    LLM_TEXT = "llm_text"  # text a streamed LLM call wrote since the last one (throttled)


@dataclass(frozen=True, slots=True)
class RunChange:
    kind: ChangeKind
    run_id: uuid.UUID
    task_id: str
    status: str
    """The run's status after the change."""
    attempt: int | None = None
    data: dict[str, Any] | None = None
    """Kind-specific: the error of a failed attempt, the metadata after a METADATA change."""
    at: float = field(default_factory=time.time)
    seq: int = 0
    """Position in this daemon's stream (set when published)."""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "seq": self.seq,
                "kind": self.kind.value,
                "run_id": str(self.run_id),
                "task_id": self.task_id,
                "status": self.status,
                "attempt": self.attempt,
                "at": self.at,
                "data": self.data,
            }
        )


class Subscription:
    """A bounded queue of changes for one reader, optionally for one run or one task."""

    def __init__(
        self,
        hub: ChangeHub,
        buffer: int,
        run_id: uuid.UUID | None,
        task_id: str | None,
        on_drop: Callable[[], None] | None,
    ) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[RunChange | None] = asyncio.Queue(buffer + 1)
        self._buffer = buffer
        self.run_id = run_id
        self.task_id = task_id
        self.dropped = False
        self._on_drop = on_drop

    def wants(self, change: RunChange) -> bool:
        return (self.run_id is None or change.run_id == self.run_id) and (
            self.task_id is None or change.task_id == self.task_id
        )

    def offer(self, change: RunChange) -> None:
        if self.dropped:
            return
        if self._queue.qsize() >= self._buffer:
            self.drop()
            return
        self._queue.put_nowait(change)

    def drop(self, *, slow: bool = True) -> None:
        """Stop this reader: it fell too far behind (``slow``), or the daemon is stopping."""
        if self.dropped:
            return
        self.dropped = True
        if slow:
            self._hub.dropped_total += 1
            log.warning(
                "a run-change reader fell %d changes behind and was disconnected", self._buffer
            )
        self._hub.unsubscribe(self)
        # Free what it held at once, and wake its reader with the end marker (one slot of
        # the queue is kept for it).
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        if self._on_drop is not None:
            self._on_drop()

    async def get(self) -> RunChange | None:
        """The next change, or None once dropped."""
        return await self._queue.get()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class ChangeHub:
    """In-process publish/subscribe of run changes."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._seq = itertools.count(1)
        self.dropped_total = 0
        self.forward: list[RunChange] | None = None
        """Set (by the change feed) while another daemon streams: published changes are
        collected here too, for the feed to send to the database in batches."""

    @property
    def active(self) -> bool:
        """Whether anyone reads, here or (through the feed) on another daemon: publishers
        skip building changes nobody reads."""
        return bool(self._subscriptions) or self.forward is not None

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self,
        *,
        buffer: int = 1000,
        run_id: uuid.UUID | None = None,
        task_id: str | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> Subscription:
        subscription = Subscription(self, buffer, run_id, task_id, on_drop)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, change: RunChange) -> None:
        if self.forward is not None:
            self.forward.append(change)
        self.deliver(change)

    def deliver(self, change: RunChange) -> None:
        """Hand a change to this daemon's readers only (a change another daemon made)."""
        object.__setattr__(change, "seq", next(self._seq))
        for subscription in list(self._subscriptions):
            if subscription.wants(change):
                subscription.offer(change)

    def close(self) -> None:
        """End every subscription (the daemon stops)."""
        for subscription in list(self._subscriptions):
            subscription.drop(slow=False)

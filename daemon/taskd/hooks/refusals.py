"""Refused requests, logged with their reason at most once per interval per (source, reason):
a flood of forged requests costs a line every few seconds, with the count of those not logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from taskd.logs import log_event

log = logging.getLogger("taskd.hooks")

LOG_INTERVAL = 10.0
"""Seconds between two lines about the same (source, reason)."""
MAX_KEYS = 1000
"""Most (source, reason) pairs remembered (reasons quote headers; senders choose them)."""


@dataclass
class _Entry:
    logged_at: float
    unlogged: int = 0


class RefusalLog:
    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def refused(self, source: str, status: int, reason: str, peer: str | None) -> bool:
        """Log this refusal unless the same one was logged within the interval; True when
        logged."""
        now = self._clock()
        key = (source, reason)
        entry = self._entries.get(key)
        if entry is not None and now - entry.logged_at < self._interval:
            entry.unlogged += 1
            return False
        if entry is None and len(self._entries) >= MAX_KEYS:
            self._entries = {
                k: e for k, e in self._entries.items() if now - e.logged_at < self._interval
            }
        unlogged = entry.unlogged if entry is not None else 0
        self._entries[key] = _Entry(now)
        more = f" ({unlogged} more like it not logged)" if unlogged else ""
        log_event(
            log,
            logging.WARNING,
            f"webhook refused: {source}: {status} {reason}{more}",
            source=source,
            status=status,
            reason=reason,
            peer=peer,
            unlogged=unlogged,
        )
        return True

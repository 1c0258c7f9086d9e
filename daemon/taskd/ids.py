"""Run ids: UUIDv7, so that ids sort by creation time (RFC 9562)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

from taskd.errors import InvalidRunId

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_run_id() -> uuid.UUID:
    """Return a UUIDv7; ids made in one process are strictly increasing.

    Within one millisecond a 12-bit counter (seeded randomly) fills ``rand_a`` so that a
    batch of 1,000 ids made in the same millisecond still sorts in creation order.
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                ms = _last_ms
                _counter = 0
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def uuid_at(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond: ids below it were made before it, so a
    time range of runs is an id range on the primary key."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    ms = min(max(0, int(moment.timestamp() * 1000)), (1 << 48) - 1)
    return uuid.UUID(int=ms << 80 | 0x7 << 76 | 0b10 << 62)


def id_time(run_id: uuid.UUID) -> datetime:
    """The millisecond a UUIDv7 was made (of another version: what its first 48 bits say)."""
    return datetime.fromtimestamp((run_id.int >> 80) / 1000, UTC)


def parse_run_id(text: str | uuid.UUID) -> uuid.UUID:
    """Parse a run id given by a user; raise InvalidRunId with a clear message."""
    if isinstance(text, uuid.UUID):
        return text
    try:
        return uuid.UUID(text.strip())
    except (ValueError, AttributeError):
        raise InvalidRunId(f"not a run id: {text!r} (expected a UUID)") from None

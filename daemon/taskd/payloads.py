"""A run's payload and keys, checked and encoded before they are written.

Three producers create runs: the client (``trigger``), a task's typed handle
(``batch_trigger_and_wait``) and the worker's run services (``ctx`` children). They share these
checks from here, below all three, so that none of them imports another for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel

from taskd.errors import InvalidPayload, PayloadTooLarge
from taskd.storable import has_nul

MAX_CONCURRENCY_KEY = 200


def encode_payload(payload: Any, limit: int) -> bytes:
    """A payload as JSON bytes, checked against the size limit."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    try:
        encoded = orjson.dumps(payload)
    except TypeError as exc:
        raise InvalidPayload(f"payload is not JSON-serialisable: {exc}") from None
    if len(encoded) > limit:
        raise PayloadTooLarge(len(encoded), limit)
    if b"\\u0000" in encoded and has_nul(orjson.loads(encoded)):
        # a clear error here, not the database's "unsupported Unicode escape sequence"
        raise InvalidPayload("payload holds the NUL character (\\x00), which jsonb refuses")
    return encoded


def check_idempotency_keys(
    keys: Sequence[str | None] | None, count: int
) -> list[str | None] | None:
    """One key (or None) per payload; None when no payload has one."""
    if keys is None:
        return None
    if isinstance(keys, str):
        raise TypeError("idempotency_keys must be a list (one key per payload), not a string")
    keys = list(keys)
    if len(keys) != count:
        raise ValueError(f"{len(keys)} idempotency_keys for {count} payloads: give one each")
    for key in keys:
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("each idempotency key must be a non-empty string, or None")
    return keys if any(key is not None for key in keys) else None


def check_concurrency_key(key: str | None) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise ValueError("concurrency_key must be a non-empty string")
    if len(key) > MAX_CONCURRENCY_KEY or "\x00" in key:
        raise ValueError(
            f"concurrency_key must be at most {MAX_CONCURRENCY_KEY} characters, without NUL"
        )

"""What PostgreSQL refuses to store, found before the write.

jsonb and text refuse the NUL character, and UTF-8 (so orjson too) has no lone surrogates
(what ``surrogateescape`` makes of a non-UTF-8 file name). Values a task hands back
(step results, outputs) are checked here and refused with a reason; error messages, which
describe a failure rather than carry data, are escaped instead so that they are always stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson


class NotStorable(ValueError):
    """A value cannot be stored as it is; the message says why (the type, NUL, the size)."""


def has_nul(value: Any) -> bool:
    """True when a string (or a key) anywhere in a decoded JSON value holds NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def encode_storable(value: Any, default: Callable[[Any], Any], limit: int, key: str) -> bytes:
    """``value`` as JSON for a jsonb column, or NotStorable with the reason. ``key``: the
    ``[tasks]`` setting that holds ``limit``, named in the error."""
    try:
        encoded = orjson.dumps(value, default=default)
    except TypeError as exc:  # orjson names the type: "Type is not JSON serializable: set"
        raise NotStorable(f"not JSON-serialisable: {exc}") from None
    if len(encoded) > limit:
        raise NotStorable(
            f"it is {len(encoded)} bytes, over the limit of {limit} bytes ([tasks] {key})"
        )
    if b"\\u0000" in encoded and has_nul(orjson.loads(encoded)):
        # (The escape alone proves nothing: a string may hold a backslash before "u0000".)
        raise NotStorable("a string in it holds the NUL character (\\x00), which jsonb refuses")
    return encoded


def escaped_text(text: str) -> str:
    """``text`` with NUL written as ``\\x00`` and lone surrogates as ``\\udcff``: storable,
    and still saying what the original held."""
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text

"""Parsing of human durations ("10s", "5m", "1h30m", 2.5, timedelta) into seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

Duration = float | int | str | timedelta


def to_seconds(value: Duration) -> float:
    """Return ``value`` in seconds; strings take units ms, s, m, h, d, w and may chain ("1h30m")."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"not a duration: {value!r} "
                    "(use a number of seconds or e.g. 500ms, 10s, 5m, 1h30m, 2d)"
                ) from None
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


def duration_text(seconds: float) -> str:
    """Seconds as the shortest duration text ``to_seconds`` reads back: 86400 -> "1d",
    5400 -> "90m", 90 -> "90s", 1.5 -> "1.5s"."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

"""What a status webhook subscription may be: its events, name, URL, filters and secret.

The config (``[[webhooks]]``), the client, the CLI and the admin API check with these, so a bad
value gets the same one-line error everywhere (the database checks the same again).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

EVENTS = (
    "run.started",
    "run.completed",
    "run.failed",
    "run.canceled",
    "run.expired",
    "run.attempt_failed",
    "run.waiting",
)
"""The run events a subscription may ask for (the database maps status changes to them)."""

DELIVERY_TASK = "taskd.webhook"
"""The internal task whose runs send the deliveries (every daemon serves it)."""
DELIVERY_QUEUE = "taskd.webhooks"

SECRET_PREFIX = "whsec_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"webhook name must be 1-100 letters, digits or _ . : - (starting with a letter or "
            f"digit), got {name!r}"
        )
    return name


def check_url(url: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook url must be an http:// or https:// URL, got {url!r}")
    return url


def check_events(events: Sequence[str]) -> list[str]:
    if isinstance(events, str) or not events:
        raise ValueError(f"webhook events must be a non-empty list of {', '.join(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise ValueError(
            f"unknown webhook event(s): {', '.join(map(str, unknown))} (known: {', '.join(EVENTS)})"
        )
    return list(dict.fromkeys(events))


def check_filter(name: str, values: Sequence[str] | None) -> list[str] | None:
    """None: no filter (every task, queue or tag); otherwise a non-empty list of names."""
    if values is None:
        return None
    if isinstance(values, str) or not values or not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"webhook {name} must be a non-empty list of names (leave it out for all)")
    return list(dict.fromkeys(values))


def check_secret(secret: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 24 to 64 random bytes."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook secret must start with whsec_ (whsec_ + base64 of 24-64 bytes)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"webhook secret must hold 24 to 64 bytes (it holds {len(key)})")
    return secret


def new_secret() -> str:
    """A fresh secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()

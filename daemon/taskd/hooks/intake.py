"""A verified request's event: its delivery id, idempotency key and payload."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from taskd.config import HookSource
from taskd.hooks.verify import Refused

MAX_ID_CHARS = 200
"""A longer delivery id is keyed by its SHA-256 (the key stays a short index entry)."""


def parse_body(body: bytes) -> tuple[Any, str]:
    """(the body as the payload carries it, its encoding): JSON as its value, else UTF-8 text
    as a string, else base64. PostgreSQL's jsonb cannot store a NUL character: JSON holding
    ``\u0000`` is kept as its text, a body with a NUL byte as base64."""
    if b"\x00" not in body:
        if b"\\u0000" not in body:
            try:
                return orjson.loads(body), "json"
            except orjson.JSONDecodeError:
                pass
        try:
            return body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"


def delivery_id(
    source: HookSource, signed_id: str | None, body: Any, raw: bytes, headers: Mapping[str, str]
) -> str:
    """The delivery's id: ``id_header``'s value when set (400 when the request lacks it), else
    the id the signature covered (Standard Webhooks' ``webhook-id``), else a Stripe body's
    ``id``, else ``sha256:`` and the body's digest (the same body twice is one delivery)."""
    if source.id_header:
        value = headers.get(source.id_header.lower(), "").strip()
        if not value:
            raise Refused(400, "bad_request", f"missing {source.id_header}")
        return value
    if signed_id:
        return signed_id
    if source.verify == "stripe" and isinstance(body, dict) and isinstance(body.get("id"), str):
        return str(body["id"])
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def idempotency_key(source: HookSource, delivery: str) -> str:
    """``hooks:<source>:<delivery id>`` (a long id by its digest)."""
    if len(delivery) > MAX_ID_CHARS:
        delivery = "sha256:" + hashlib.sha256(delivery.encode()).hexdigest()
    return f"hooks:{source.name}:{delivery}"


def event_payload(
    source: HookSource,
    delivery: str,
    body: Any,
    encoding: str,
    headers: Mapping[str, str],
    received_at: datetime,
) -> dict[str, Any]:
    """What the event (and each run it starts) carries."""
    return {
        "source": source.name,
        "id": delivery,
        "body": body,
        "body_encoding": encoding,
        "headers": {name: headers[name] for name in source.headers if name in headers},
        "received_at": received_at.isoformat(),
    }

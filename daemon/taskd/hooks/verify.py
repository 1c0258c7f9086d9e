"""Signature checks of inbound webhooks, per source: pure functions over the raw body.

Each returns the delivery's id when the sender gives one in its signed headers, and raises
Refused (a status and a short reason that never shows the secret or the expected signature)
otherwise. Signatures are compared with ``hmac.compare_digest``; the signature is checked before
the timestamp, so "stale" is said only of requests the sender really signed (a replay or a
late retry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from taskd.config import HookSource
from taskd.errors import ConfigError

STANDARD_SECRET_PREFIX = "whsec_"


class Refused(Exception):
    """A request that is not accepted: ``status``, ``result`` (its metrics label) and a short
    ``reason`` the answer and the log carry."""

    def __init__(self, status: int, result: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.result = result
        self.reason = reason


def unauthorized(reason: str) -> Refused:
    return Refused(401, "unauthorized", reason)


@dataclass(frozen=True)
class Verifier:
    """One source's scheme with its secret's key bytes."""

    source: HookSource
    key: bytes

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
        """Raise Refused unless ``body`` and ``headers`` carry a valid signature; the delivery
        id the signed headers name (Standard Webhooks), else None. ``headers`` lower-case."""
        scheme = self.source.verify
        if scheme == "standard-webhooks":
            return verify_standard(self.key, body, headers, self.source.tolerance, now)
        if scheme == "stripe":
            verify_stripe(self.key, body, headers, self.source.tolerance, now)
            return None
        verify_hmac(self.source, self.key, body, headers, now)
        return None


def verifier_for(source: HookSource) -> Verifier:
    """The source's verifier, its secret read from the environment when ``secret_env`` names
    it; ConfigError (one line naming the key) when the secret is missing or malformed."""
    key = f"hooks.sources.{source.name}"
    if source.secret_env:
        secret = os.environ.get(source.secret_env, "")
        if not secret:
            raise ConfigError(
                f"config error: {key}.secret_env: the environment variable "
                f"{source.secret_env} is not set (or empty)"
            )
    else:
        secret = source.secret
    if source.verify == "standard-webhooks":
        text = secret.removeprefix(STANDARD_SECRET_PREFIX)
        try:
            secret_key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            secret_key = b""
        if not secret_key:
            raise ConfigError(
                f"config error: {key}: a Standard Webhooks secret is base64 "
                f"(optionally after {STANDARD_SECRET_PREFIX}), as the sender shows it"
            )
        return Verifier(source, secret_key)
    return Verifier(source, secret.encode())


def _sign(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _timestamp(value: str | None, name: str) -> int:
    try:
        stamp = float(value) if value else math.nan
    except ValueError:
        stamp = math.nan
    if not math.isfinite(stamp):
        raise unauthorized(f"{name} is missing or not Unix seconds")
    return int(stamp)


def _check_fresh(stamp: int, tolerance: float, now: float) -> None:
    if abs(now - stamp) > tolerance:
        raise Refused(
            401, "stale", f"timestamp {stamp} is more than {tolerance:g}s from now (replayed?)"
        )


def verify_standard(
    key: bytes, body: bytes, headers: Mapping[str, str], tolerance: float, now: float
) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` (one of the
    space-separated signatures of ``webhook-signature`` must match)."""
    msg_id = headers.get("webhook-id", "")
    raw_stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and raw_stamp and signatures):
        raise unauthorized("missing webhook-id, webhook-timestamp or webhook-signature")
    stamp = _timestamp(raw_stamp, "webhook-timestamp")
    expected = _sign(key, f"{msg_id}.{raw_stamp}.".encode() + body)
    matched = False
    for versioned in signatures.split():
        version, _, signature = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched = hmac.compare_digest(expected, given) or matched
    if not matched:
        raise unauthorized("no webhook-signature matches")
    _check_fresh(stamp, tolerance, now)
    return msg_id


def verify_stripe(
    key: bytes, body: bytes, headers: Mapping[str, str], tolerance: float, now: float
) -> None:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of t.body>[,v1=...]``."""
    header = headers.get("stripe-signature", "")
    if not header:
        raise unauthorized("missing Stripe-Signature")
    raw_stamp = ""
    signatures: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            raw_stamp = value
        elif name == "v1":
            signatures.append(value)
    stamp = _timestamp(raw_stamp, "Stripe-Signature t")
    if not signatures:
        raise unauthorized("Stripe-Signature has no v1 signature")
    expected = _sign(key, f"{raw_stamp}.".encode() + body).hex().encode()
    matched = False
    for signature in signatures:
        matched = hmac.compare_digest(expected, signature.strip().lower().encode()) or matched
    if not matched:
        raise unauthorized("no Stripe-Signature v1 matches")
    _check_fresh(stamp, tolerance, now)


def verify_hmac(
    source: HookSource, key: bytes, body: bytes, headers: Mapping[str, str], now: float
) -> None:
    """HMAC-SHA256 of the body (or of ``timestamp.body`` with ``timestamp_header``), hex or
    base64, after ``prefix``, in ``header`` (GitHub: ``X-Hub-Signature-256: sha256=<hex>``)."""
    header = source.header.lower()
    value = headers.get(header, "").strip()
    if not value:
        raise unauthorized(f"missing {source.header}")
    if not value.lower().startswith(source.prefix.lower()):
        raise unauthorized(f"{source.header} does not start with {source.prefix!r}")
    value = value[len(source.prefix) :]
    try:
        if source.encoding == "hex":
            given = bytes.fromhex(value)
        else:
            given = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise unauthorized(f"{source.header} is not {source.encoding}") from None
    stamp: int | None = None
    message = body
    if source.timestamp_header:
        raw_stamp = headers.get(source.timestamp_header.lower(), "")
        stamp = _timestamp(raw_stamp, source.timestamp_header)
        message = f"{raw_stamp}.".encode() + body
    if not hmac.compare_digest(_sign(key, message), given):
        raise unauthorized(f"{source.header} does not match")
    if stamp is not None:
        _check_fresh(stamp, source.tolerance, now)

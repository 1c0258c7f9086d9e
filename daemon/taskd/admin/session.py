"""Who a request is: the full token, the read-only token, or nobody.

A request proves a role with ``Authorization: Bearer <token>`` or with the console's session
cookie. The cookie never holds a token: it holds the role, an expiry and an HMAC keyed by that
role's token, so changing a token ends every session made with it, and a cookie cannot be
turned into a token or into the other role.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

from aiohttp import web

from taskd.config import AdminSettings

Role = Literal["admin", "read"]

COOKIE = "taskd_session"
SESSION_SECONDS = 7 * 24 * 3600
"""A console login lasts a week (then the login page asks for the token again)."""

_VERSION = "v1"


def _key(settings: AdminSettings, role: Role) -> str:
    return settings.token if role == "admin" else settings.read_token


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), f"taskd-console:{message}".encode(), hashlib.sha256).hexdigest()


def role_of_token(settings: AdminSettings, given: str) -> Role | None:
    """The role ``given`` (a token typed or sent as a bearer) grants, compared in constant
    time against both tokens."""
    encoded = given.encode("utf-8", "surrogateescape")
    admin = hmac.compare_digest(encoded, settings.token.encode())
    read = bool(settings.read_token) and hmac.compare_digest(encoded, settings.read_token.encode())
    if admin:
        return "admin"
    return "read" if read else None


def cookie_value(settings: AdminSettings, role: Role, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    message = f"{_VERSION}.{role}.{expires}"
    return f"{message}.{_mac(_key(settings, role), message)}"


def role_of_cookie(settings: AdminSettings, value: str, now: float | None = None) -> Role | None:
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or parts[1] not in ("admin", "read"):
        return None
    role: Role = "admin" if parts[1] == "admin" else "read"
    key = _key(settings, role)
    if not key or not parts[2].isdigit():
        return None
    expected = _mac(key, ".".join(parts[:3]))
    if not hmac.compare_digest(parts[3].encode("utf-8", "surrogateescape"), expected.encode()):
        return None
    if int(parts[2]) < (time.time() if now is None else now):
        return None
    return role


def bearer_role(settings: AdminSettings, request: web.Request) -> Role | None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme != "Bearer" or not given:
        return None
    return role_of_token(settings, given)


def cookie_role(settings: AdminSettings, request: web.Request) -> Role | None:
    value = request.cookies.get(COOKIE)
    return role_of_cookie(settings, value) if value else None

"""What an LLM API failure means for the run: wait for the API (no attempt spent) or fail now.

A 429, a 529, an ``overloaded_error`` inside a 200 stream, another 5xx, a 408 or 409, a
timeout or a lost connection are the API's condition, not the task's fault: the run goes back
to the queue until the API is expected back. A 400, 401, 403, 404, 413 or 422 (a bad request,
a bad key, a credit or billing error) will fail the same way each time: the run fails now,
with the API's message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from taskd import clock

if TYPE_CHECKING:
    import httpx2

# The headers that say when a limit is replenished; the latest one is when every limit is.
RESET_HEADERS = (
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
)
MAX_RETRY_AFTER = 7 * 86_400.0  # a server asking for more than a week is read as a week


class Unavailability(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: the organisation's limit, until the reset time
    OVERLOADED = "overloaded"  # 529 / overloaded_error: the model, for the whole fleet
    SERVER_ERROR = "server_error"  # another 5xx, 408, 409
    CONNECTION_ERROR = "connection_error"  # timeout, refused, reset, dropped stream


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Wait and call again: ``until`` is the API's own word (retry-after, reset headers)."""

    kind: Unavailability
    message: str
    until: datetime | None
    status: int | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Fail now: the same call would be refused again."""

    message: str
    status: int | None
    request_id: str | None


def classify(exc: BaseException, now: datetime | None = None) -> Unavailable | Refused | None:
    """What ``exc`` (raised by the SDK) means; None for an exception that is not the API's."""
    import anthropic  # loaded with the client already: a failure follows a call
    import httpx2  # the HTTP client of anthropic 2.x

    now = now or clock.now()
    if isinstance(exc, anthropic.APIConnectionError):  # APITimeoutError is one
        what = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "connection failed"
        return Unavailable(
            Unavailability.CONNECTION_ERROR, f"Anthropic API {what}: {exc}", None, None, None
        )
    if isinstance(exc, httpx2.TransportError):  # a stream cut while being read (not wrapped)
        return Unavailable(
            Unavailability.CONNECTION_ERROR,
            f"Anthropic API connection lost: {type(exc).__name__}: {exc}",
            None,
            None,
            None,
        )
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    status = exc.status_code
    error_type, text = _error_of(exc.body)
    request_id = exc.request_id
    message = f"Anthropic API {status} {error_type or 'error'}: {text or exc.message}"
    if request_id:
        message += f" (request {request_id})"
    if error_type == "overloaded_error" or status == 529:
        return Unavailable(Unavailability.OVERLOADED, message, None, status, request_id)
    if error_type == "rate_limit_error" or status == 429:
        until = _retry_at(exc.response.headers, now)
        return Unavailable(Unavailability.RATE_LIMITED, message, until, status, request_id)
    if status >= 500 or status in (408, 409) or error_type == "api_error":
        # the error event of a 200 stream carries the status 200: its type decides
        until = _retry_at(exc.response.headers, now) if status >= 500 else None
        return Unavailable(Unavailability.SERVER_ERROR, message, until, status, request_id)
    return Refused(message, status, request_id)


def _error_of(body: object) -> tuple[str | None, str | None]:
    """``(type, message)`` of Anthropic's error JSON ``{"type": "error", "error": {...}}``."""
    if isinstance(body, dict):
        inner: Any = body.get("error", body)
        if isinstance(inner, dict):
            kind, text = inner.get("type"), inner.get("message")
            return (
                kind if isinstance(kind, str) else None,
                text if isinstance(text, str) else None,
            )
    return None, None


def _retry_at(headers: httpx2.Headers, now: datetime) -> datetime | None:
    """When the API says to call again: ``retry-after`` (seconds or an HTTP date), else the
    latest ``anthropic-ratelimit-*-reset`` still ahead."""
    value = headers.get("retry-after")
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                moment = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                moment = None
            if moment is not None and moment.tzinfo is not None:
                return min(moment, now + timedelta(seconds=MAX_RETRY_AFTER))
        else:
            if seconds >= 0:
                return now + timedelta(seconds=min(seconds, MAX_RETRY_AFTER))
    resets: list[datetime] = []
    for name in RESET_HEADERS:
        text = headers.get(name)
        if not text:
            continue
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            continue
        if moment.tzinfo is not None and moment > now:
            resets.append(min(moment, now + timedelta(seconds=MAX_RETRY_AFTER)))
    return max(resets) if resets else None

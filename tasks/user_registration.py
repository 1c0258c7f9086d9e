"""The user-registration workflow, started by an event (seed 003).

Any producer records ``user.registered`` (``client.send_event("user.registered", {...})``, or
``SELECT taskd.send_event('user.registered', '{...}')`` inside the signup transaction, or a
bare ``NOTIFY taskd_event``), and taskd starts one ``user-registration`` run for it, a durable
workflow of two steps and a day's wait:

1. step ``welcome-email``: send the welcome email through the email API;
2. ``wait.for_(hours=24)``: the run sleeps in PostgreSQL (WAITING), holding no worker slot,
   across any restart;
3. step ``mailing-list``: add the user to the mailing list.

When the run executes again (after the wait, a crash, a retry) the recorded steps return at
once: the email is sent once per registration. Each external call also sends an
``Idempotency-Key`` made of the run id and the step name, the same on every try: when a try
fails after its request went through (a lost response), the retry repeats the request and an
API that honours the key does not deliver twice.

5xx, 408, 425 and 429 answers raise and are retried with backoff (``Retry-After`` sets the
delay); other 4xx abort the run, since the same request would be refused again.

Configuration is read from the environment at call time, never at import:

- ``EMAIL_API_URL``: the endpoint that sends an email (default a placeholder);
  ``EMAIL_API_KEY``: sent as ``Authorization: Bearer <key>`` when set.
- ``MAILING_LIST_API_URL``: the endpoint that subscribes an address (default a placeholder);
  ``MAILING_LIST_API_KEY``: likewise.
"""

from __future__ import annotations

import math
import os
from typing import Any

import aiohttp
from pydantic import BaseModel, Field

from taskd import AbortRun, Context, Retry, task, wait

DEFAULT_EMAIL_API_URL = "https://email.example/v1/send"
DEFAULT_MAILING_LIST_API_URL = "https://lists.example/v1/members"
FOLLOW_UP_HOURS = 24

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0

API_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)


class UserRegistered(BaseModel):
    """The ``user.registered`` event's payload (and the follow-up's)."""

    user_id: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = ""


class RegistrationResult(BaseModel):
    user_id: str
    welcome_email_id: str | None
    """The email API's id for the message, when it returns one."""
    subscribed: bool


class MailingListResult(BaseModel):
    user_id: str
    email: str
    subscribed: bool = True


class ApiError(Exception):
    """An API answered with a status worth retrying; ``retry_after`` is read by taskd."""

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.status = status
        self.retry_after = retry_after


# the tasks --------------------------------------------------------------------------------------

# Seed 003 versions every job ("to manage changes safely"): a run started on 1.0.0 resumes after
# its day's wait only on a daemon serving 1.0.0 (README: "Versions: runs pinned to their code").
# Change it with any change that would not replay the recorded steps of a run in flight.
VERSION = "1.0.0"


@task(id="user-registration", on_event="user.registered", retry=API_RETRY, version=VERSION)
async def user_registration(payload: UserRegistered, ctx: Context) -> RegistrationResult:
    """Welcome email now, mailing list a day later: one durable run."""
    ctx.log.info(f"welcoming {payload.user_id}", user_id=payload.user_id)
    email_id = await ctx.step("welcome-email", send_welcome_email, payload, ctx)
    await wait.for_(hours=FOLLOW_UP_HOURS)
    await ctx.step("mailing-list", subscribe, payload, ctx)
    ctx.log.info(f"subscribed {payload.user_id}", user_id=payload.user_id)
    return RegistrationResult(user_id=payload.user_id, welcome_email_id=email_id, subscribed=True)


@task(id="add-to-mailing-list", retry=API_RETRY, version=VERSION)
async def add_to_mailing_list(payload: UserRegistered, ctx: Context) -> MailingListResult:
    """Subscribe a user to the mailing list on its own (an admin's re-subscription, say)."""
    await subscribe(payload, ctx)
    return MailingListResult(user_id=payload.user_id, email=payload.email)


# the steps --------------------------------------------------------------------------------------


async def send_welcome_email(payload: UserRegistered, ctx: Context) -> str | None:
    answer = await post_json(
        os.environ.get("EMAIL_API_URL") or DEFAULT_EMAIL_API_URL,
        {"to": payload.email, "template": "welcome", "data": {"name": payload.name}},
        api_key=os.environ.get("EMAIL_API_KEY"),
        idempotency_key=f"{ctx.run_id}:send-welcome-email",
        ctx=ctx,
    )
    email_id = answer.get("id") if isinstance(answer, dict) else None
    return str(email_id) if email_id is not None else None


async def subscribe(payload: UserRegistered, ctx: Context) -> None:
    await post_json(
        os.environ.get("MAILING_LIST_API_URL") or DEFAULT_MAILING_LIST_API_URL,
        {"email": payload.email, "name": payload.name, "user_id": payload.user_id},
        api_key=os.environ.get("MAILING_LIST_API_KEY"),
        idempotency_key=f"{ctx.run_id}:add-to-mailing-list",
        ctx=ctx,
    )


# HTTP -------------------------------------------------------------------------------------------


async def post_json(
    url: str, body: dict[str, Any], *, api_key: str | None, idempotency_key: str, ctx: Context
) -> Any:
    """POST ``body`` as JSON; return the decoded answer (None if not JSON); raise unless 2xx."""
    headers = {"Idempotency-Key": idempotency_key, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    async with (
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        status = response.status
        ctx.log.info(f"POST {url} -> {status}", status=status)
        text = await response.text(errors="replace")
        if not 200 <= status < 300:
            detail = text[:200].strip() or response.reason or ""
            if 400 <= status < 500 and status not in RETRYABLE_4XX:
                raise AbortRun(f"{url} refused the request with HTTP {status}: {detail}")
            raise ApiError(status, url, detail, _retry_after(response.headers.get("Retry-After")))
        if response.content_type != "application/json":
            return None
        return await response.json()


def _retry_after(value: str | None) -> float | None:
    """Delta-seconds from a ``Retry-After`` header; None (the Retry policy decides) otherwise."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None

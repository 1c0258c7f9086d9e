"""The user-registration workflow, started by an event: the events example (seed 003).

Any producer records ``user.registered`` (``client.send_event("user.registered", {...})``, or
``SELECT taskd.send_event('user.registered', '{...}')`` inside the signup transaction, or a
bare ``NOTIFY taskd_event``), and taskd starts one ``user-registration`` run for it:

1. send the welcome email through the email API;
2. schedule the follow-up a day later: a run of ``add-to-mailing-list`` with ``delay="24h"``,
   which adds the user to the mailing list.

Each external call sends an ``Idempotency-Key`` made of the run id and the step name, the same
on every attempt of that run: when an attempt fails after a request went through (a lost
response, a crash before completion), the retry repeats the request and an API that honours
the key does not send a second email. The follow-up is created at most once per registration
run (see ``schedule_follow_up``).

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
import uuid
from typing import Any

import aiohttp
from pydantic import BaseModel, Field

from daemon import AbortRun, Context, Retry, current_client, task

DEFAULT_EMAIL_API_URL = "https://email.example/v1/send"
DEFAULT_MAILING_LIST_API_URL = "https://lists.example/v1/members"
FOLLOW_UP_DELAY = "24h"

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
    follow_up_run_id: uuid.UUID


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


@task(id="user-registration", on_event="user.registered", retry=API_RETRY)
async def user_registration(payload: UserRegistered, ctx: Context) -> RegistrationResult:
    """Send the welcome email, then schedule the mailing-list follow-up a day later."""
    ctx.log.info(f"welcoming {payload.user_id}", user_id=payload.user_id)
    answer = await post_json(
        os.environ.get("EMAIL_API_URL") or DEFAULT_EMAIL_API_URL,
        {"to": payload.email, "template": "welcome", "data": {"name": payload.name}},
        api_key=os.environ.get("EMAIL_API_KEY"),
        idempotency_key=f"{ctx.run_id}:send-welcome-email",
        ctx=ctx,
    )
    follow_up = await schedule_follow_up(payload, ctx)
    email_id = answer.get("id") if isinstance(answer, dict) else None
    return RegistrationResult(
        user_id=payload.user_id,
        welcome_email_id=str(email_id) if email_id is not None else None,
        follow_up_run_id=follow_up,
    )


@task(id="add-to-mailing-list", retry=API_RETRY)
async def add_to_mailing_list(payload: UserRegistered, ctx: Context) -> MailingListResult:
    """Subscribe the user to the mailing list (the registration's follow-up)."""
    await post_json(
        os.environ.get("MAILING_LIST_API_URL") or DEFAULT_MAILING_LIST_API_URL,
        {"email": payload.email, "name": payload.name, "user_id": payload.user_id},
        api_key=os.environ.get("MAILING_LIST_API_KEY"),
        idempotency_key=f"{ctx.run_id}:add-to-mailing-list",
        ctx=ctx,
    )
    ctx.log.info(f"subscribed {payload.user_id}", user_id=payload.user_id)
    return MailingListResult(user_id=payload.user_id, email=payload.email)


# the follow-up ----------------------------------------------------------------------------------

# The follow-up carries a tag naming the registration run. A retried attempt (the previous one
# created the follow-up, then failed before its completion was recorded) finds it instead of
# scheduling a second one; the advisory lock makes a superseded attempt still running
# elsewhere take turns with its successor.
FIND_FOLLOW_UP = """
SELECT id FROM taskd.runs WHERE task_id = $1 AND tags @> ARRAY[$2::text] ORDER BY id LIMIT 1
"""


async def schedule_follow_up(payload: UserRegistered, ctx: Context) -> uuid.UUID:
    """Create the ``add-to-mailing-list`` run due in 24 h, once per registration run.

    This delayed run is the pattern until taskd has a durable ``wait.for_`` (the seed's
    ``io.wait("wait-for-24-hours")``): then the registration run itself can wait a day
    without holding a worker, and this step becomes ``await wait.for_(hours=24)`` followed by
    the mailing-list call.
    """
    tag = f"registration:{ctx.run_id}"
    async with current_client().pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", tag)
        existing: uuid.UUID | None = await connection.fetchval(
            FIND_FOLLOW_UP, add_to_mailing_list.id, tag
        )
        if existing is not None:
            ctx.log.info("follow-up already scheduled", follow_up_run_id=str(existing))
            return existing
        run_id = await add_to_mailing_list.trigger(
            payload, delay=FOLLOW_UP_DELAY, tags=[tag], connection=connection
        )
    ctx.log.info(f"mailing-list follow-up due in {FOLLOW_UP_DELAY}", follow_up_run_id=str(run_id))
    return run_id


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

"""Batch ingestion of a runner's history, a Claude-written "run letter" per activity (seed 004).

``batch-ingest-run-history`` (payload ``{user_id, tier, max_activities}``) is one durable run:

1. step ``list-activities``: the user's most recent activities from the app's API (``GET
   {ACTIVITIES_API_URL}/users/{user_id}/activities``, page by page, newest first): 20 at most
   for the ``free`` tier (a larger ``max_activities`` is capped), ``max_activities`` or the
   whole history for ``premium``. Activities that already have a letter are skipped.
2. the rest in batches (5 for free, 10 for premium): each batch is one
   ``generate_run_letter.batch_trigger_and_wait([...], concurrency_key=user_id)``; the parent
   waits without a slot until the batch has ended, then stores its progress with
   ``ctx.set_metadata`` (``progress`` from 0 to 1, ``processed``, ``total``, ``generated``,
   ``failed``: the UI polls ``client.get_run(id).metadata`` or ``/api/runs/{id}``);
3. ``wait.for_(seconds=2)`` between batches (``pause_seconds`` in the payload, else
   ``RUN_HISTORY_BATCH_PAUSE_SECONDS``);
4. returns a summary: letters generated, skipped, failed (with their activity ids), tokens.

``generate-run-letter`` (payload ``{user_id, activity_id}``) runs in the ``anthropic`` queue,
``Queue("anthropic", concurrency=5)``: at most 5 letters are being written at once across
every daemon on the database, whatever the number of users ingesting; the children carry the
user as their concurrency key, so when the queue is busy the users' letters take turns. The
run fetches the activity (step ``fetch-activity``), asks Claude for the letter (step
``write-letter``: ``POST {ANTHROPIC_BASE_URL}/v1/messages``) and saves it in the app (step
``save-letter``). The letter is recorded by its step: when a later step fails and the run is
retried, the recorded letter is saved without asking Claude again, so a letter is paid for once
per run. An activity that already has a letter (a replayed ingestion, two ingestions of one
user) is not written again. (A request whose answer is lost in transit can still be billed
twice: the Messages API takes no idempotency key.)

Claude's 429 (rate limited), 529 (overloaded), other 5xx, 408 and 409 answers raise and the
run is retried with backoff (``retry-after`` sets the delay; ``x-should-retry`` is honoured);
the run goes back to the queue meanwhile, so the backoff holds none of the 5 slots. Other 4xx
(a bad request, a bad key) abort the letter's run: the ingestion counts it as failed and goes
on. Replaying the ingestion (``taskd runs replay <id>``) retries exactly the letters that
failed: the others are skipped.

Trigger one ingestion per user at a time, e.g. ``client.trigger("batch-ingest-run-history",
{"user_id": "u-1", "tier": "free"}, idempotency_key="ingest-u-1", idempotency_ttl="10m")``.

Configuration, read from the environment at call time, never at import:

- ``ACTIVITIES_API_URL`` (default a placeholder), ``ACTIVITIES_API_KEY`` (Bearer);
- ``ANTHROPIC_BASE_URL`` (default ``https://api.anthropic.com``), ``ANTHROPIC_API_KEY``
  (required: without it the letter runs abort), ``ANTHROPIC_MODEL`` (``claude-haiku-4-5``);
- ``RUN_HISTORY_BATCH_PAUSE_SECONDS``: the pause between batches (default 2).

The HTTP calls use aiohttp directly (the ``anthropic`` package is not a dependency).
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, Field

from taskd import AbortRun, Context, Queue, Retry, RunFailed, task, wait

DEFAULT_ACTIVITIES_API_URL = "https://app.example/api"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-haiku-4-5"
ANTHROPIC_VERSION = "2023-06-01"
LETTER_MAX_TOKENS = 600

FREE_TIER_LIMIT = 20
BATCH_SIZE = {"free": 5, "premium": 10}
BATCH_PAUSE_SECONDS = 2.0
PAGE_SIZE = 100
MAX_PAGES = 10_000

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120, connect=10)
MAX_RETRY_AFTER = 3600.0
# Statuses the Anthropic SDK retries: timeouts, conflicts, rate limits, 5xx (529: overloaded).
RETRYABLE_4XX = frozenset({408, 409, 429})

# Letters: 4 attempts, 1 s then 1-2 s, 2-4 s (retry-after overrides), each under 2 minutes.
LETTER_RETRY = Retry(max_attempts=4, min_delay=1.0, max_delay=30.0, factor=2.0, jitter=True)
API_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)

# Letters being written at once, across every daemon on the database.
ANTHROPIC = Queue("anthropic", concurrency=5)

SYSTEM_PROMPT = (
    "You are a warm, observant running coach. Write a short letter (120 words at most, plain "
    "text, no markdown) to the runner about the run described, as if the run could write back "
    "to them: what it asked of them, what it gave them. Use the numbers sparingly."
)


class IngestIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=200)
    tier: Literal["free", "premium"] = "free"
    max_activities: int | None = Field(None, ge=1)
    """The most recent activities to consider; free is capped at 20, premium has no cap."""
    pause_seconds: float | None = Field(None, ge=0, le=3600)
    """The pause between batches; None: ``RUN_HISTORY_BATCH_PAUSE_SECONDS`` or 2."""


class IngestSummary(BaseModel):
    user_id: str
    tier: str
    considered: int
    """The most recent activities looked at (20 at most for free)."""
    skipped: int
    """Of those, the ones that already had a letter."""
    generated: int
    failed: int
    failed_activities: list[str]
    batches: int
    batch_size: int
    input_tokens: int
    output_tokens: int


class LetterIn(BaseModel):
    user_id: str = Field(min_length=1)
    activity_id: str = Field(min_length=1)


class LetterOut(BaseModel):
    user_id: str
    activity_id: str
    generated: bool
    """False when the activity already had a letter (nothing was asked of Claude)."""
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class ApiError(Exception):
    """An API answered with a status worth retrying; ``retry_after`` is read by taskd."""

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.status = status
        self.retry_after = retry_after


# one letter -------------------------------------------------------------------------------------


@task(id="generate-run-letter", queue=ANTHROPIC, retry=LETTER_RETRY, max_duration="2m")
async def generate_run_letter(payload: LetterIn, ctx: Context) -> LetterOut:
    """Fetch the activity, have Claude write its letter (once per run), save it."""
    activity = await ctx.step("fetch-activity", fetch_activity, payload, ctx)
    if activity.get("letter"):
        ctx.log.info("the activity already has a letter", activity=payload.activity_id)
        return LetterOut(user_id=payload.user_id, activity_id=payload.activity_id, generated=False)
    letter = await ctx.step("write-letter", write_letter, payload, activity, ctx)
    await ctx.step("save-letter", save_letter, payload, letter["text"], ctx)
    return LetterOut(
        user_id=payload.user_id,
        activity_id=payload.activity_id,
        generated=True,
        model=letter["model"],
        input_tokens=letter["input_tokens"],
        output_tokens=letter["output_tokens"],
    )


async def fetch_activity(payload: LetterIn, ctx: Context) -> dict[str, Any]:
    url = f"{_activities_url(payload.user_id)}/{quote(payload.activity_id, safe='')}"
    activity: dict[str, Any] = await request_json(
        "GET", url, headers=_bearer("ACTIVITIES_API_KEY"), ctx=ctx
    )
    return activity


async def write_letter(payload: LetterIn, activity: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """One Messages API call; the letter's text, the model and the tokens billed."""
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    if not api_key:
        raise AbortRun("ANTHROPIC_API_KEY is not set")
    base = (os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_ANTHROPIC_BASE_URL).rstrip("/")
    body = {
        "model": os.environ.get("ANTHROPIC_MODEL") or DEFAULT_MODEL,
        "max_tokens": LETTER_MAX_TOKENS,
        "system": SYSTEM_PROMPT,
        "messages": [{"role": "user", "content": describe(payload.activity_id, activity)}],
        "metadata": {"user_id": payload.user_id},
    }
    headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    message = await request_json("POST", f"{base}/v1/messages", body=body, headers=headers, ctx=ctx)
    text = "".join(
        block.get("text", "")
        for block in message.get("content") or []
        if block.get("type") == "text"
    ).strip()
    if not text:  # asking again would be billed again, for the same answer most likely
        raise AbortRun(
            f"Claude's answer {message.get('id')} has no text ({message.get('stop_reason')})"
        )
    usage = message.get("usage") or {}
    return {
        "text": text,
        "model": message.get("model"),
        "message_id": message.get("id"),
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
    }


async def save_letter(payload: LetterIn, text: str, ctx: Context) -> None:
    url = f"{_activities_url(payload.user_id)}/{quote(payload.activity_id, safe='')}/letter"
    headers = _bearer("ACTIVITIES_API_KEY") | {"Idempotency-Key": f"{ctx.run_id}:save-letter"}
    await request_json("PUT", url, body={"letter": text}, headers=headers, ctx=ctx)


def describe(activity_id: str, activity: dict[str, Any]) -> str:
    """The prompt: the run's facts, one per line."""
    lines = [f"Run {activity_id}: {activity.get('name') or 'a run'}"]
    if activity.get("start_date"):
        lines.append(f"Date: {activity['start_date']}")
    distance = float(activity.get("distance_m") or 0)
    seconds = int(activity.get("moving_time_s") or 0)
    if distance > 0:
        lines.append(f"Distance: {distance / 1000:.2f} km")
    if seconds > 0:
        lines.append(f"Moving time: {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}")
    if distance > 0 and seconds > 0:
        pace = seconds / (distance / 1000)
        lines.append(f"Pace: {int(pace // 60)}:{int(pace % 60):02d} /km")
    for key, label in (("elevation_gain_m", "Elevation gain (m)"), ("average_hr", "Average HR")):
        if activity.get(key) is not None:
            lines.append(f"{label}: {activity[key]}")
    return "\n".join(lines)


# the history ------------------------------------------------------------------------------------


@task(id="batch-ingest-run-history", retry=API_RETRY)
async def batch_ingest_run_history(payload: IngestIn, ctx: Context) -> IngestSummary:
    """A letter for each of the user's recent activities that has none, batch by batch."""
    limit = (
        min(payload.max_activities or FREE_TIER_LIMIT, FREE_TIER_LIMIT)
        if payload.tier == "free"
        else payload.max_activities
    )
    size = BATCH_SIZE[payload.tier]
    activities = await ctx.step("list-activities", list_activities, payload.user_id, limit, ctx)
    pending = [a["id"] for a in activities if not a["has_letter"]]
    batches = [pending[i : i + size] for i in range(0, len(pending), size)]
    pause = _pause(payload.pause_seconds)
    failed: list[str] = []
    generated = tokens_in = tokens_out = 0
    await _progress(ctx, 0, generated=0, failed=0, total=len(pending), batches=len(batches))
    for number, batch in enumerate(batches, 1):
        if number > 1:
            await wait.for_(seconds=pause)
        results = await generate_run_letter.batch_trigger_and_wait(
            [LetterIn(user_id=payload.user_id, activity_id=a) for a in batch],
            concurrency_key=payload.user_id,
        )
        for activity_id, result in zip(batch, results, strict=True):
            if isinstance(result, RunFailed):
                failed.append(activity_id)
                continue
            letter = LetterOut.model_validate(result)  # the child's output, as stored JSON
            generated += letter.generated
            tokens_in += letter.input_tokens
            tokens_out += letter.output_tokens
        await _progress(
            ctx, number, generated=generated, failed=len(failed), total=len(pending), batches=None
        )
    ctx.log.info(
        f"{generated} letters for {payload.user_id}, {len(failed)} failed",
        user_id=payload.user_id,
    )
    return IngestSummary(
        user_id=payload.user_id,
        tier=payload.tier,
        considered=len(activities),
        skipped=len(activities) - len(pending),
        generated=generated,
        failed=len(failed),
        failed_activities=failed,
        batches=len(batches),
        batch_size=size,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )


async def list_activities(user_id: str, limit: int | None, ctx: Context) -> list[dict[str, Any]]:
    """The ``limit`` most recent activities (all when None), newest first, as ``{id,
    has_letter}``: all the parent needs, so the recorded step stays small."""
    url = _activities_url(user_id)
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        want = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
        params = {"limit": str(want)} | ({"cursor": cursor} if cursor else {})
        page = await request_json(
            "GET", url, params=params, headers=_bearer("ACTIVITIES_API_KEY"), ctx=ctx
        )
        for activity in page.get("activities") or []:
            found.append({"id": str(activity["id"]), "has_letter": bool(activity.get("letter"))})
        cursor = page.get("next_cursor")
        if not cursor or (limit is not None and len(found) >= limit):
            return found[:limit]
    raise RuntimeError(f"{url}: more than {MAX_PAGES} pages")


async def _progress(
    ctx: Context, batch: int, *, generated: int, failed: int, total: int, batches: int | None
) -> None:
    """Store the progress after ``batch`` batches (0: before the first). The run executes
    again from the top after every batch: what an earlier execution stored is not stored
    again (one write per batch, not one per batch per execution)."""
    if ctx.metadata.get("batches_done", -1) >= batch:
        return
    processed = generated + failed
    values: dict[str, Any] = {
        "progress": round(processed / total, 4) if total else 1.0,
        "processed": processed,
        "total": total,
        "generated": generated,
        "failed": failed,
        "batches_done": batch,
    }
    if batches is not None:
        values["batches"] = batches
    await ctx.set_metadata(**values)


# HTTP -------------------------------------------------------------------------------------------


async def request_json(
    method: str,
    url: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str],
    ctx: Context,
) -> Any:
    """Send one request; return the decoded JSON answer ({} if none); raise unless 2xx."""
    async with (
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
        session.request(
            method, url, json=body, params=params, headers={"Accept": "application/json"} | headers
        ) as response,
    ):
        status = response.status
        ctx.log.info(f"{method} {url} -> {status}", status=status)
        if not 200 <= status < 300:
            detail = (await response.text(errors="replace"))[:300].strip() or response.reason
            retryable = status >= 500 or status in RETRYABLE_4XX
            should_retry = response.headers.get("x-should-retry")  # Anthropic's own hint
            if should_retry in ("true", "false"):
                retryable = should_retry == "true"
            if not retryable:
                raise AbortRun(f"{url} refused the request with HTTP {status}: {detail}")
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise ApiError(status, url, detail or "", retry_after)
        if response.content_type != "application/json":
            return {}
        return await response.json()


def _activities_url(user_id: str) -> str:
    base = (os.environ.get("ACTIVITIES_API_URL") or DEFAULT_ACTIVITIES_API_URL).rstrip("/")
    return f"{base}/users/{quote(user_id, safe='')}/activities"


def _bearer(variable: str) -> dict[str, str]:
    key = os.environ.get(variable)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _pause(given: float | None) -> float:
    if given is not None:
        return given
    try:
        value = float(os.environ.get("RUN_HISTORY_BATCH_PAUSE_SECONDS") or BATCH_PAUSE_SECONDS)
    except ValueError:
        return BATCH_PAUSE_SECONDS
    return value if math.isfinite(value) and value >= 0 else BATCH_PAUSE_SECONDS


def _retry_after(value: str | None) -> float | None:
    """Delta-seconds from a ``retry-after`` header; None (the Retry policy decides) otherwise."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None

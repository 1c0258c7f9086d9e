"""Batch ingestion of a runner's history: a Claude-written "run letter" and a coaching insight
per activity (seed 004), every Claude call through ``ctx.llm``.

``batch-ingest-run-history`` (payload ``{user_id, tier, max_activities}``) is one durable run:

1. step ``list-activities``: the user's most recent activities from the app's API (``GET
   {ACTIVITIES_API_URL}/users/{user_id}/activities``, page by page, newest first): 20 at most
   for the ``free`` tier (a larger ``max_activities`` is capped), ``max_activities`` or the
   whole history for ``premium``. Activities that already have both a letter and an insight
   are skipped; one that has only one of them gets the other.
2. the rest in batches of activities (5 for free, 10 for premium), written by the tier's
   writer (:data:`WRITERS`), then the progress stored with ``ctx.set_metadata`` (``progress``
   from 0 to 1, ``processed`` and ``total`` activities, ``letters``, ``insights``, ``failed``:
   the UI polls ``client.get_run(id).metadata`` or ``/api/runs/{id}``);
3. ``wait.for_(seconds=2)`` between batches (``pause_seconds`` in the payload, else
   ``RUN_HISTORY_BATCH_PAUSE_SECONDS``);
4. returns a summary: letters and insights written, activities skipped, what failed, tokens.

The free tier's writer, :func:`write_with_children`, writes the batch's letters as one
``generate_run_letter.batch_trigger_and_wait([...], concurrency_key=user_id)``, then its
insights as one ``generate_coaching_insight.batch_trigger_and_wait(...)``; the parent waits
without a slot while they are written. ``generate-run-letter`` and
``generate-coaching-insight`` (payload ``{user_id, activity_id}``) run in the ``anthropic``
queue, ``Queue("anthropic", concurrency=5)``: at most 5 Claude calls of this module at once
across every daemon on the database, whatever the number of users ingesting; the children
carry the user as their concurrency key, so users take turns in a busy queue and ``taskd
costs --by key`` sums what each user's ingestion cost. Each run fetches the activity (step
``fetch-activity``), asks Claude (step ``write-letter`` / ``write-insight``: ``await
ctx.llm.messages.create(...)``, Claude Haiku 4.5) and saves the text in the app (step
``save-letter`` / ``save-insight``). The text is recorded by its step: when a later step fails
and the run is retried, the recorded text is saved without asking Claude again, so each text
is paid for once per run. An activity that already has its text is not written again.

The premium tier's writer, :func:`write_premium_batch`, uses Anthropic's Message Batches at
half price: it fetches the batch's activities (step ``fetch-activities:<first activity id>``),
then submits the batch's missing letters and insights as ONE Message Batch, ``await
ctx.llm.batch(requests)`` (custom ids ``letter-<i>`` / ``insight-<i>``, ``i`` the activity's
place in the batch). The batch's id is recorded as the step ``llm-batch:N``, so it is
submitted once whatever happens next; the ingestion waits without a slot and without a
process (the daemons poll the batch, minutes or hours, across restarts) and executes again
when it ends, with the results in request order. Each text is then saved in its own step
(``save-letter:<activity id>`` / ``save-insight:<activity id>``, 3 tries): a retry of the
ingestion after a failed save saves only what is not saved yet and never submits again. An
errored or expired request (or an answer without text, or a save the app refuses) is a failed
item, like a failed child of the free tier. The batch's calls are the ingestion's own (kind
``batch``, at half the price): trigger a premium ingestion with the user as its concurrency
key, and ``taskd costs --by key`` sums them per user. :func:`letter_request` and
:func:`insight_request` build the requests of both tiers.

Claude's bad days are the daemon's business, not this module's: a 429, a 529, an overload, a
5xx or a lost connection hands the run back to the queue until the API is expected back,
without spending one of its attempts and without holding one of the 5 slots; a refused request
(400, a bad key, no credit) fails the child at once with the API's message (``[llm]`` in the
daemon's config: the key's variable, ``max_wait``, prices). The same holds for the
submission of a Message Batch, except that a refused one fails the ingestion (replay it once
the cause is fixed: what is saved stays saved). The ingestion counts a failed child or batch
item and goes on; replaying it (``taskd runs replay <id>``) writes exactly what is missing.

Trigger one ingestion per user at a time, keyed by the user, e.g.
``client.trigger("batch-ingest-run-history", {"user_id": "u-1", "tier": "premium"},
concurrency_key="u-1", idempotency_key="ingest-u-1", idempotency_ttl="10m")``.

The app's API is read from the environment at call time, never at import:
``ACTIVITIES_API_URL`` (default a placeholder), ``ACTIVITIES_API_KEY`` (Bearer);
``RUN_HISTORY_BATCH_PAUSE_SECONDS``: the pause between batches (default 2).
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from anthropic.types import Message
from pydantic import BaseModel, Field

from taskd import (
    AbortRun,
    BatchRequestFailed,
    Context,
    Queue,
    Retry,
    RunFailed,
    task,
    wait,
)

DEFAULT_ACTIVITIES_API_URL = "https://app.example/api"
MODEL = "claude-haiku-4-5"

FREE_TIER_LIMIT = 20
BATCH_SIZE = {"free": 5, "premium": 10}
BATCH_PAUSE_SECONDS = 2.0
PAGE_SIZE = 100
MAX_PAGES = 10_000

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120, connect=10)
MAX_RETRY_AFTER = 3600.0
RETRYABLE_4XX = frozenset({408, 409, 429})

# The app's API failing (a save, a fetch): 3 attempts, 1 s then 2 s (retry-after overrides).
# Claude's failures spend no attempt: the daemon waits for the API with the run in the queue.
CONTENT_RETRY = Retry(max_attempts=3, min_delay=1.0, max_delay=10.0, factor=2.0, jitter=True)
API_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)

# Claude calls of this module at once, across every daemon on the database.
ANTHROPIC = Queue("anthropic", concurrency=5)


@dataclass(frozen=True)
class Kind:
    """One kind of text written per activity."""

    name: Literal["letter", "insight"]
    field: str
    """The activity's field holding it in the app (``PUT .../{field}`` saves it)."""
    system: str
    max_tokens: int


LETTER = Kind(
    "letter",
    "letter",
    "You are a warm, observant running coach. Write a short letter (120 words at most, plain "
    "text, no markdown) to the runner about the run described, as if the run could write back "
    "to them: what it asked of them, what it gave them. Use the numbers sparingly.",
    600,
)
INSIGHT = Kind(
    "insight",
    "insight",
    "You are an experienced running coach. Analyse the run described for the runner (plain "
    "text, no markdown, 150 words at most): pacing, heart rate, effort for the distance and "
    "the climbing, then two concrete recommendations for the next runs.",
    800,
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
    """Of those, the ones that already had a letter and an insight."""
    letters: int
    insights: int
    failed: int
    failed_items: list[str]
    """``"letter:<activity id>"``, ``"insight:<activity id>"``."""
    batches: int
    batch_size: int
    input_tokens: int
    output_tokens: int


class ContentIn(BaseModel):
    user_id: str = Field(min_length=1)
    activity_id: str = Field(min_length=1)


class ContentOut(BaseModel):
    user_id: str
    activity_id: str
    kind: str
    generated: bool
    """False when the activity already had it (nothing was asked of Claude)."""
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class ApiError(Exception):
    """The app's API answered with a status worth retrying; ``retry_after`` is read by taskd."""

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.status = status
        self.retry_after = retry_after


# one text -----------------------------------------------------------------------------------


@task(id="generate-run-letter", queue=ANTHROPIC, retry=CONTENT_RETRY, max_duration="2m")
async def generate_run_letter(payload: ContentIn, ctx: Context) -> ContentOut:
    """Fetch the activity, have Claude write its letter (once per run), save it."""
    return await generate(LETTER, payload, ctx)


@task(id="generate-coaching-insight", queue=ANTHROPIC, retry=CONTENT_RETRY, max_duration="2m")
async def generate_coaching_insight(payload: ContentIn, ctx: Context) -> ContentOut:
    """Fetch the activity, have Claude write its coaching insight (once per run), save it."""
    return await generate(INSIGHT, payload, ctx)


async def generate(kind: Kind, payload: ContentIn, ctx: Context) -> ContentOut:
    activity = await ctx.step("fetch-activity", fetch_activity, payload, ctx)
    if activity.get(kind.field):
        ctx.log.info(f"the activity already has its {kind.name}", activity=payload.activity_id)
        return ContentOut(
            user_id=payload.user_id,
            activity_id=payload.activity_id,
            kind=kind.name,
            generated=False,
        )
    written = await ctx.step(f"write-{kind.name}", write, kind, payload, activity, ctx)
    await ctx.step(f"save-{kind.name}", save, kind, payload, written["text"], ctx)
    return ContentOut(
        user_id=payload.user_id,
        activity_id=payload.activity_id,
        kind=kind.name,
        generated=True,
        model=written["model"],
        input_tokens=written["input_tokens"],
        output_tokens=written["output_tokens"],
    )


async def fetch_activity(payload: ContentIn, ctx: Context) -> dict[str, Any]:
    url = f"{_activities_url(payload.user_id)}/{quote(payload.activity_id, safe='')}"
    activity: dict[str, Any] = await request_json(
        "GET", url, headers=_bearer("ACTIVITIES_API_KEY"), ctx=ctx
    )
    return activity


def letter_request(user_id: str, activity_id: str, activity: dict[str, Any]) -> dict[str, Any]:
    """The Messages API parameters of an activity's letter."""
    return _request(LETTER, user_id, activity_id, activity)


def insight_request(user_id: str, activity_id: str, activity: dict[str, Any]) -> dict[str, Any]:
    """The Messages API parameters of an activity's coaching insight."""
    return _request(INSIGHT, user_id, activity_id, activity)


def _request(
    kind: Kind, user_id: str, activity_id: str, activity: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": kind.max_tokens,
        "system": kind.system,
        "messages": [{"role": "user", "content": describe(activity_id, activity)}],
        "metadata": {"user_id": user_id},
    }


REQUESTS: dict[str, Callable[[str, str, dict[str, Any]], dict[str, Any]]] = {
    "letter": letter_request,
    "insight": insight_request,
}


async def write(
    kind: Kind, payload: ContentIn, activity: dict[str, Any], ctx: Context
) -> dict[str, Any]:
    """One Claude call (inside its step: a replay returns what it wrote, unpaid): the text,
    the model and the tokens billed."""
    params = REQUESTS[kind.name](payload.user_id, payload.activity_id, activity)
    message = await ctx.llm.messages.create(**params)
    return written(message)


def written(message: Message) -> dict[str, Any]:
    """What a step keeps of Claude's answer."""
    text = text_of(message)
    if not text:  # asking again would be billed again, for the same answer most likely
        raise AbortRun(f"Claude's answer {message.id} has no text ({message.stop_reason})")
    return {
        "text": text,
        "model": message.model,
        "message_id": message.id,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }


async def save(
    kind: Kind, payload: ContentIn, text: str, ctx: Context, idempotency_key: str | None = None
) -> None:
    url = f"{_activities_url(payload.user_id)}/{quote(payload.activity_id, safe='')}/{kind.field}"
    key = idempotency_key or f"{ctx.run_id}:save"
    headers = _bearer("ACTIVITIES_API_KEY") | {"Idempotency-Key": key}
    await request_json("PUT", url, body={kind.field: text}, headers=headers, ctx=ctx)


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


@dataclass(frozen=True)
class Written:
    """One text of a batch: written, already there, or failed."""

    kind: str
    activity_id: str
    output: ContentOut | None  # None: failed

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.activity_id}"


Writer = Callable[[Context, str, list[dict[str, Any]]], Awaitable[list[Written]]]


async def write_with_children(
    ctx: Context, user_id: str, batch: list[dict[str, Any]]
) -> list[Written]:
    """The batch's missing letters as child runs, then its missing insights, each child
    keyed by the user in the anthropic queue; the parent waits without a slot."""
    done: list[Written] = []
    for kind, child in (("letter", generate_run_letter), ("insight", generate_coaching_insight)):
        missing = [a["id"] for a in batch if not a[f"has_{kind}"]]
        if not missing:
            continue
        results = await child.batch_trigger_and_wait(
            [ContentIn(user_id=user_id, activity_id=a) for a in missing],
            concurrency_key=user_id,
        )
        for activity_id, result in zip(missing, results, strict=True):
            output = None if isinstance(result, RunFailed) else ContentOut.model_validate(result)
            done.append(Written(kind, activity_id, output))
    return done


async def write_premium_batch(
    ctx: Context, user_id: str, batch: list[dict[str, Any]]
) -> list[Written]:
    """The premium tier's writer: the batch's missing letters and insights as ONE Anthropic
    Message Batch (``ctx.llm.batch``, half price), the run suspended without a slot until it
    ends; then each text saved in its own step. Errored and expired requests are failed items
    (a replay of the ingestion writes them)."""
    first = batch[0]["id"]
    wanted = [a["id"] for a in batch]
    activities: dict[str, dict[str, Any]] = await ctx.step(
        f"fetch-activities:{first}", fetch_activities, user_id, wanted, ctx
    )
    done: list[Written] = []
    asked: list[tuple[Kind, str]] = []
    requests: list[dict[str, Any]] = []
    for kind in (LETTER, INSIGHT):
        for index, entry in enumerate(batch):
            activity_id = entry["id"]
            if entry[f"has_{kind.name}"]:
                continue
            activity = activities[activity_id]
            if activity.get(kind.field):  # written meanwhile (another ingestion, the app)
                done.append(Written(kind.name, activity_id, _already(kind, user_id, activity_id)))
                continue
            params = REQUESTS[kind.name](user_id, activity_id, activity)
            requests.append({"custom_id": f"{kind.name}-{index}", "params": params})
            asked.append((kind, activity_id))
    if not requests:
        return done
    # Submitted once (its id is the step llm-batch:N); a re-execution reads the results.
    results = await ctx.llm.batch(requests)
    # (why a request failed is in its call record: taskd runs show <id>; not logged here, as
    # every later execution of the ingestion reads these results again)
    for (kind, activity_id), result in zip(asked, results, strict=True):
        text = "" if isinstance(result, BatchRequestFailed) else text_of(result)
        if isinstance(result, BatchRequestFailed) or not text:
            done.append(Written(kind.name, activity_id, None))
            continue
        saved = await ctx.step(
            f"save-{kind.name}:{activity_id}",
            save_item,
            kind,
            ContentIn(user_id=user_id, activity_id=activity_id),
            text,
            ctx,
            retry=CONTENT_RETRY,
        )
        if not saved:
            done.append(Written(kind.name, activity_id, None))
            continue
        output = ContentOut(
            user_id=user_id,
            activity_id=activity_id,
            kind=kind.name,
            generated=True,
            model=result.model,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
        )
        done.append(Written(kind.name, activity_id, output))
    return done


async def fetch_activities(
    user_id: str, activity_ids: list[str], ctx: Context
) -> dict[str, dict[str, Any]]:
    """The batch's activities from the app, by id (one step per batch: a re-execution builds
    the same requests from what it recorded)."""
    found: dict[str, dict[str, Any]] = {}
    for activity_id in activity_ids:
        found[activity_id] = await fetch_activity(
            ContentIn(user_id=user_id, activity_id=activity_id), ctx
        )
    return found


async def save_item(kind: Kind, payload: ContentIn, text: str, ctx: Context) -> bool:
    """Save one text of a Message Batch (in its own step: saved once per run). True when
    saved; False when the app refuses it for good (a failed item, not a failed ingestion)."""
    key = f"{ctx.run_id}:save-{kind.name}:{payload.activity_id}"
    try:
        await save(kind, payload, text, ctx, idempotency_key=key)
    except AbortRun as refused:
        ctx.log.warning(f"{kind.name}:{payload.activity_id} not saved: {refused}")
        return False
    return True


def text_of(message: Message) -> str:
    """The text of Claude's answer."""
    return "".join(block.text for block in message.content if block.type == "text").strip()


def _already(kind: Kind, user_id: str, activity_id: str) -> ContentOut:
    return ContentOut(user_id=user_id, activity_id=activity_id, kind=kind.name, generated=False)


WRITERS: dict[str, Writer] = {"free": write_with_children, "premium": write_premium_batch}


@task(id="batch-ingest-run-history", retry=API_RETRY)
async def batch_ingest_run_history(payload: IngestIn, ctx: Context) -> IngestSummary:
    """A letter and a coaching insight for each of the user's recent activities that lacks
    them, batch by batch."""
    limit = (
        min(payload.max_activities or FREE_TIER_LIMIT, FREE_TIER_LIMIT)
        if payload.tier == "free"
        else payload.max_activities
    )
    size = BATCH_SIZE[payload.tier]
    activities = await ctx.step("list-activities", list_activities, payload.user_id, limit, ctx)
    pending = [a for a in activities if not (a["has_letter"] and a["has_insight"])]
    batches = [pending[i : i + size] for i in range(0, len(pending), size)]
    writer = WRITERS[payload.tier]
    first_execution = "batches_done" not in ctx.metadata
    if payload.tier == "premium" and ctx.concurrency_key != payload.user_id and first_execution:
        ctx.log.warning(
            "a premium ingestion's Message Batches are its own calls: trigger it with "
            f"concurrency_key={payload.user_id!r} for taskd costs --by key to count them",
            user_id=payload.user_id,
        )
    pause = _pause(payload.pause_seconds)
    everything: list[Written] = []
    processed = 0
    await _progress(ctx, 0, everything, 0, len(pending), batches=len(batches))
    for number, batch in enumerate(batches, 1):
        if number > 1:
            await wait.for_(seconds=pause)
        everything += await writer(ctx, payload.user_id, batch)
        processed += len(batch)
        await _progress(ctx, number, everything, processed, len(pending), batches=None)
    failed = [w.label for w in everything if w.output is None]
    outputs = [w.output for w in everything if w.output is not None and w.output.generated]
    letters = sum(o.kind == "letter" for o in outputs)
    insights = len(outputs) - letters
    ctx.log.info(
        f"{letters} letters and {insights} insights for {payload.user_id}, {len(failed)} failed",
        user_id=payload.user_id,
    )
    return IngestSummary(
        user_id=payload.user_id,
        tier=payload.tier,
        considered=len(activities),
        skipped=len(activities) - len(pending),
        letters=letters,
        insights=insights,
        failed=len(failed),
        failed_items=failed,
        batches=len(batches),
        batch_size=size,
        input_tokens=sum(o.input_tokens for o in outputs),
        output_tokens=sum(o.output_tokens for o in outputs),
    )


async def list_activities(user_id: str, limit: int | None, ctx: Context) -> list[dict[str, Any]]:
    """The ``limit`` most recent activities (all when None), newest first, as ``{id,
    has_letter, has_insight}``: all the parent needs, so the recorded step stays small."""
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
            found.append(
                {
                    "id": str(activity["id"]),
                    "has_letter": bool(activity.get("letter")),
                    "has_insight": bool(activity.get("insight")),
                }
            )
        cursor = page.get("next_cursor")
        if not cursor or (limit is not None and len(found) >= limit):
            return found[:limit]
    raise RuntimeError(f"{url}: more than {MAX_PAGES} pages")


async def _progress(
    ctx: Context,
    batch: int,
    written: list[Written],
    processed: int,
    total: int,
    *,
    batches: int | None,
) -> None:
    """Store the progress after ``batch`` batches (0: before the first). The run executes
    again from the top after every batch: what an earlier execution stored is not stored
    again (one write per batch, not one per batch per execution)."""
    if ctx.metadata.get("batches_done", -1) >= batch:
        return
    made = [w.output for w in written if w.output is not None and w.output.generated]
    values: dict[str, Any] = {
        "progress": round(processed / total, 4) if total else 1.0,
        "processed": processed,
        "total": total,
        "letters": sum(o.kind == "letter" for o in made),
        "insights": sum(o.kind == "insight" for o in made),
        "failed": sum(w.output is None for w in written),
        "batches_done": batch,
    }
    if batches is not None:
        values["batches"] = batches
    await ctx.set_metadata(**values)


# the app's API ----------------------------------------------------------------------------------


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
            if not (status >= 500 or status in RETRYABLE_4XX):
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

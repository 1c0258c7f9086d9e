"""Dump PulseFinder data (players, teams) into PostgreSQL: the first example taskd task.

The shape follows the Trigger.dev tasks this replaces (seed 000): a task fetches one entity
from the PulseFinder API with aiohttp and stores it. The difference is in how failures are
reported: instead of catching errors and returning ``success: false`` (which hides them from
the retry machinery), a failed request raises, so taskd retries it with backoff and records
each attempt's error. Only a request that can never succeed (404, other client errors) aborts.

Configuration is read from the environment on every call, never at import, so the module
imports cleanly anywhere (``make run`` loads it with nothing set) and tests can point it at a
local server:

- ``PULSEFINDER_API_URL``: base URL of the API (default ``https://api.pulsefinder.example``).
- ``PULSEFINDER_API_KEY``: sent as the ``X-API-Key`` header when set.
- ``DUMP_DATABASE_URL``: store the dumps in this database (own pool) instead of the daemon's.

Trigger it with ``taskd trigger player-dump --payload '{"player_id": "p-42"}'``, from Python
with ``await player_dump.trigger(PlayerDumpInput(player_id="p-42"))``, or from SQL with
``SELECT taskd.trigger('player-dump', '{"player_id": "p-42"}')``.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson
from pydantic import BaseModel, Field

from taskd import AbortRun, Context, Retry, current_client, task

DEFAULT_API_URL = "https://api.pulsefinder.example"
API_KEY_HEADER = "X-API-Key"

# One request should not hold an attempt for its whole max_duration: a hung connection fails
# the attempt after this long and the next attempt gets a fresh one.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)

# A server may ask for a long pause; beyond an hour we would rather spend a retry than park
# the run for days on one header.
MAX_RETRY_AFTER = 3600.0

# Statuses worth another attempt: timeouts, "too early", rate limits and server errors. Any
# other 4xx means the request itself is wrong and will be refused again.
RETRYABLE_4XX = frozenset({408, 425, 429})

# Transient API errors are retried quickly at first (1 s, then 1-2 s, 2-4 s, 4-8 s with
# jitter) so a blip costs seconds, while a rate limit answers with Retry-After, which
# overrides the computed delay.
DUMP_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)


# payloads and results -------------------------------------------------------------------------


class PlayerDumpInput(BaseModel):
    player_id: str = Field(min_length=1)


class TeamDumpInput(BaseModel):
    team_id: str = Field(min_length=1)


class DumpResult(BaseModel):
    """What a successful dump returns (the run's output), as in the seed's ``DumpResult``.

    There is no ``error`` field: a failed dump raises, and the error lives on the attempt.
    """

    success: bool = True
    entity_id: str
    entity_type: str
    message: str
    timestamp: datetime


class PulseFinderError(Exception):
    """The API answered with a status that is worth retrying.

    ``retry_after`` (seconds, from the ``Retry-After`` header) is read by taskd's executor and
    replaces the backoff delay for the next attempt; None lets the task's Retry decide.
    """

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"PulseFinder API answered HTTP {status} for {url}: {detail}")
        self.status = status
        self.url = url
        self.retry_after = retry_after


# the tasks --------------------------------------------------------------------------------------


@task(id="player-dump", retry=DUMP_RETRY, max_duration=300)
async def player_dump(payload: PlayerDumpInput, ctx: Context) -> DumpResult:
    """Fetch one player's profile and upsert it into ``pulsefinder_dumps``."""
    return await _dump("player", payload.player_id, "players", ctx)


@task(id="team-dump", retry=DUMP_RETRY, max_duration=300)
async def team_dump(payload: TeamDumpInput, ctx: Context) -> DumpResult:
    """Fetch one team and upsert it into ``pulsefinder_dumps``."""
    return await _dump("team", payload.team_id, "teams", ctx)


async def _dump(entity_type: str, entity_id: str, collection: str, ctx: Context) -> DumpResult:
    ctx.log.info(f"dumping {entity_type} {entity_id}", entity_type=entity_type, entity_id=entity_id)
    data = await fetch_entity(collection, entity_id, ctx)
    dumped_at = await store_dump(entity_type, entity_id, data)
    # Players have a displayName, teams a name; fall back to the id for anything else.
    label = data.get("displayName") or data.get("name") or entity_id
    message = f"Successfully dumped {entity_type} data for {label}"
    ctx.log.info(message, entity_type=entity_type, entity_id=entity_id)
    return DumpResult(
        entity_id=entity_id, entity_type=entity_type, message=message, timestamp=dumped_at
    )


# the API ----------------------------------------------------------------------------------------


async def fetch_entity(collection: str, entity_id: str, ctx: Context) -> dict[str, Any]:
    """GET ``{PULSEFINDER_API_URL}/{collection}/{id}``; raise on anything but a JSON 2xx."""
    base = os.environ.get("PULSEFINDER_API_URL") or DEFAULT_API_URL
    # Quote the id so that "../admin" or "a/b" stays one path segment.
    url = f"{base.rstrip('/')}/{collection}/{quote(entity_id, safe='')}"
    headers = {"Accept": "application/json"}
    api_key = os.environ.get("PULSEFINDER_API_KEY")
    if api_key:
        headers[API_KEY_HEADER] = api_key
    # A session per attempt: a task makes one request, and a module-level session would be
    # tied to one event loop and outlive the daemon's shutdown.
    async with (
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT, headers=headers) as session,
        session.get(url) as response,
    ):
        status = response.status
        ctx.log.info(f"GET {url} -> {status}", status=status)
        if status == 404:
            # The entity does not exist; no retry will change that.
            raise AbortRun(f"{collection} {entity_id!r} not found (HTTP 404 from {url})")
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            # A request the API rejects (bad key, bad id) will be rejected again: fail now
            # rather than spend the retry budget. Fix the cause, then trigger again.
            detail = await _excerpt(response)
            raise AbortRun(f"PulseFinder API refused {url} with HTTP {status}: {detail}")
        if not 200 <= status < 300:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise PulseFinderError(status, url, await _excerpt(response), retry_after)
        # content_type=None: some gateways label JSON as text/plain; a body that is not JSON
        # still fails (and is retried) with the decoder's error.
        body = await response.json(content_type=None, loads=orjson.loads)
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object from {url}, got {type(body).__name__}")
    return body


async def _excerpt(response: aiohttp.ClientResponse, limit: int = 200) -> str:
    text = await response.text(errors="replace")
    return text[:limit].strip() or response.reason or ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # unreadable: let the Retry policy decide
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


# storage ----------------------------------------------------------------------------------------

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS pulsefinder_dumps (
    entity_type text        NOT NULL,
    entity_id   text        NOT NULL,
    data        jsonb       NOT NULL,
    dumped_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, entity_id)
)
"""

# A retry or a replay of the same entity overwrites the row instead of failing or duplicating.
# The data travels as text cast to jsonb, so this works on the daemon's pool (which has jsonb
# codecs) and on a plain asyncpg pool alike.
UPSERT = """
INSERT INTO pulsefinder_dumps (entity_type, entity_id, data, dumped_at)
VALUES ($1, $2, $3::text::jsonb, now())
ON CONFLICT (entity_type, entity_id)
DO UPDATE SET data = EXCLUDED.data, dumped_at = EXCLUDED.dumped_at
RETURNING dumped_at
"""

_own_pool: asyncpg.Pool | None = None
_own_pool_url: str | None = None
_own_pool_lock = asyncio.Lock()


async def store_dump(entity_type: str, entity_id: str, data: dict[str, Any]) -> datetime:
    """Upsert one entity's data; returns the time it was stored."""
    pool = await _pool()
    args = (entity_type, entity_id, orjson.dumps(data).decode())
    try:
        dumped_at: datetime = await pool.fetchval(UPSERT, *args)
    except asyncpg.UndefinedTableError:
        # The first dump into this database: create the table, then store. Checking on
        # failure keeps the DDL off the path of every other dump.
        await _create_table(pool)
        dumped_at = await pool.fetchval(UPSERT, *args)
    return dumped_at


async def _pool() -> asyncpg.Pool:
    url = os.environ.get("DUMP_DATABASE_URL")
    if not url:
        # The daemon sets a current client for the tasks it runs: share its pool rather
        # than open connections of our own.
        return current_client().pool
    global _own_pool, _own_pool_url
    async with _own_pool_lock:
        if _own_pool is None or _own_pool_url != url:
            await close_pool()
            _own_pool = await asyncpg.create_pool(url, min_size=1, max_size=5)
            _own_pool_url = url
        return _own_pool


async def close_pool() -> None:
    """Close the pool opened for ``DUMP_DATABASE_URL``, if any (tests, embedding apps)."""
    global _own_pool, _own_pool_url
    pool, _own_pool, _own_pool_url = _own_pool, None, None
    if pool is not None:
        await pool.close()


async def _create_table(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection, connection.transaction():
        # Two daemons (or two runs) creating the table at once can collide even with IF NOT
        # EXISTS; an advisory lock held until commit makes them take turns.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('pulsefinder_dumps'))")
        await connection.execute(CREATE_TABLE)

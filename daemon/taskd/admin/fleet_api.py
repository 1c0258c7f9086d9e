"""The console's fleet routes (issue 16, items 7-11): set and reset a queue's limits, complete
a wait token, events with the runs they created, LLM costs per day, budgets and their spend,
one schedule. api.py's ROUTES ends with FLEET_ROUTES."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskd.admin.fleet_schemas import (
    DailyCostsQuery,
    EventEntry,
    EventListQuery,
    EventPage,
    QueueLimitsUpdate,
    TokenCompleteResult,
    TokenCompletion,
)
from taskd.admin.routing import RequestInvalid, Route
from taskd.admin.schemas import MAX_LIST_ITEMS
from taskd.admin.state import AdminState
from taskd.errors import QueueNotFound, TokenFinished, TokenNotFound
from taskd.models import Budgets, DailyCosts, QueueDepth, Schedule
from taskd.sdk.queues import Rate, check_queue_name


async def set_queue_limits(
    state: AdminState, request: web.Request, query: Any, body: QueueLimitsUpdate
) -> QueueDepth:
    name = request.match_info["name"]
    given = body.model_fields_set
    if not given:
        raise RequestInvalid(
            422, "give at least one of concurrency, concurrency_per_key, rate_limit, rate_period"
        )
    changes: dict[str, Any] = {}
    if "concurrency" in given:
        changes["concurrency"] = body.concurrency
    if "concurrency_per_key" in given:
        changes["concurrency_limit_per_key"] = body.concurrency_per_key
    try:
        check_queue_name(name)
        if "rate_limit" in given or "rate_period" in given:
            changes["rate_limit"] = await _rate(state, name, body, given)
        await state.client.set_queue_limits(name, **changes)
    except ValueError as exc:  # an empty or oversized name, a rate without a limit
        raise RequestInvalid(422, str(exc)) from None
    return await _depth(state, name)


async def _rate(
    state: AdminState, name: str, body: QueueLimitsUpdate, given: set[str]
) -> Rate | None:
    """The queue's new rate: null rate_limit removes it; a field left out keeps the queue's."""
    if "rate_limit" in given and body.rate_limit is None:
        if body.rate_period is not None:
            raise ValueError("rate_period without a rate_limit: rate_limit null removes the rate")
        return None
    if "rate_period" in given and body.rate_period is None:
        raise ValueError(
            "rate_period cannot be removed alone: set rate_limit to null to remove the rate"
        )
    current = await state.store.queues.depth(name) or {}
    limit = body.rate_limit if "rate_limit" in given else current.get("rate_limit")
    if limit is None:
        raise ValueError(f"queue {name!r} has no rate limit: give rate_limit with rate_period")
    period = body.rate_period if "rate_period" in given else current.get("rate_period")
    return Rate(limit, per=period or 1.0)


async def reset_queue(state: AdminState, request: web.Request, query: Any, body: Any) -> QueueDepth:
    name = request.match_info["name"]
    try:
        await state.client.reset_queue(name)
    except ValueError as exc:
        raise RequestInvalid(422, str(exc)) from None
    except QueueNotFound as exc:
        raise RequestInvalid(404, str(exc)) from None
    return await _depth(state, name)


async def _depth(state: AdminState, name: str) -> QueueDepth:
    found = await state.store.queues.depth(name)
    # set_limits and reset leave a row in taskd.queues: the queue is there
    return QueueDepth(**(found or {"queue": name, "due": 0, "delayed": 0, "oldest_due": None}))


async def complete_token(
    state: AdminState, request: web.Request, query: Any, body: TokenCompletion
) -> TokenCompleteResult:
    token_id = request.match_info["id"]
    try:
        await state.client.complete_token(token_id, body.output)
    except TokenNotFound as exc:
        raise RequestInvalid(404, str(exc)) from None
    except TokenFinished:
        return TokenCompleteResult(id=token_id, completed=False)
    return TokenCompleteResult(id=token_id, completed=True)


async def list_events(
    state: AdminState, request: web.Request, query: EventListQuery, body: Any
) -> EventPage:
    rows = await state.store.events.page(query.name, query.cursor, query.limit + 1)
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return EventPage(
        events=[EventEntry(**row) for row in page],
        next_cursor=page[-1]["id"] if more else None,
    )


async def daily_costs(
    state: AdminState, request: web.Request, query: DailyCostsQuery, body: Any
) -> DailyCosts:
    return await state.client.daily_costs(days=query.days, by=query.by, top=query.top)


async def budgets(state: AdminState, request: web.Request, query: Any, body: Any) -> Budgets:
    return await state.client.budgets(limit=MAX_LIST_ITEMS)


async def get_schedule(state: AdminState, request: web.Request, query: Any, body: Any) -> Schedule:
    return await state.client.get_schedule(request.match_info["id"])


def _routes() -> list[Route]:
    queue_name = {422: "The queue name is empty or over 200 characters"}
    return [
        Route(
            "PATCH",
            "/api/queues/{name}",
            set_queue_limits,
            "Set a queue's limits on every daemon (fields left out keep their value, null "
            "removes a limit); they hold over the code's until reset",
            body=QueueLimitsUpdate,
            response=QueueDepth,
            errors={
                400: "The body is not JSON",
                422: "A limit is out of range, none is given, or the queue name is not valid",
            },
        ),
        Route(
            "POST",
            "/api/queues/{name}/reset",
            reset_queue,
            "Back to the limits the code declares",
            response=QueueDepth,
            errors={404: "No queue of this name has settings", **queue_name},
        ),
        Route(
            "POST",
            "/api/tokens/{id}/complete",
            complete_token,
            "Complete a wait token: the run waiting on it gets the output and resumes",
            body=TokenCompletion,
            response=TokenCompleteResult,
            errors={
                400: "The body is not JSON",
                404: "No wait token with this id",
                413: "The output is over [tasks] max_payload_bytes",
                422: "The body does not fit",
            },
        ),
        Route(
            "GET",
            "/api/events",
            list_events,
            "Recorded events, newest first, each with the first 20 runs it created; keyset "
            "pagination through next_cursor",
            query=EventListQuery,
            response=EventPage,
            errors={400: "A parameter is not valid"},
        ),
        Route(
            "GET",
            "/api/costs/daily",
            daily_costs,
            "What LLM calls cost per UTC day, per task, tag, key (tenant) or model",
            query=DailyCostsQuery,
            response=DailyCosts,
            errors={400: "A parameter is not valid"},
        ),
        Route(
            "GET",
            "/api/budgets",
            budgets,
            "Every LLM budget and its spend: queue budgets per concurrency key in their "
            "current window, task budgets by their most spending unfinished run",
            response=Budgets,
        ),
        Route(
            "GET",
            "/api/schedules/{id}",
            get_schedule,
            "One schedule, with its next fire time",
            response=Schedule,
            errors={404: "No schedule with this id"},
        ),
    ]


FLEET_ROUTES: list[Route] = _routes()

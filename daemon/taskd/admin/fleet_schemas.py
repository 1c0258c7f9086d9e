"""The request and response models of the console's fleet routes (fleet_api.py): queue limits,
wait tokens, events with their runs, daily costs and budgets (issue 16, items 7-11)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from taskd.admin.schemas import RunLink, Text, _Model, _no_nul, _Strict
from taskd.models import DailyCostDimension
from taskd.sdk.queues import MAX_LIMIT, MAX_RATE_PERIOD
from taskd.store.llm import MAX_COST_DAYS


def _without_nul(value: Any) -> Any:
    """jsonb refuses \\u0000 in strings and keys: walked without recursion (deep values)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _no_nul(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class QueueLimitsUpdate(_Strict):
    """An operator's limits for a queue (client.set_queue_limits): a field left out keeps its
    value, null removes the limit. They hold over what the code declares until
    POST /api/queues/{name}/reset."""

    concurrency: int | None = Field(None, ge=1, le=MAX_LIMIT)
    """Runs of the queue executing at once, over all daemons."""
    concurrency_per_key: int | None = Field(None, ge=1, le=MAX_LIMIT)
    """Runs of one concurrency key executing at once."""
    rate_limit: int | None = Field(None, ge=1, le=MAX_LIMIT)
    """Starts per rate_period (null removes the rate). Given without rate_period: the queue's
    current period, else 1 s."""
    rate_period: float | None = Field(None, gt=0, le=MAX_RATE_PERIOD)
    """The rate's window in seconds (at most a day). Given without rate_limit: the queue's
    current limit in the new window."""


class TokenCompletion(_Strict):
    output: Any = None
    """What the waiting run's ``wait.for_token`` returns (any JSON)."""

    @field_validator("output")
    @classmethod
    def _output_without_nul(cls, value: Any) -> Any:
        return _without_nul(value)


class TokenCompleteResult(_Model):
    id: str
    """The token's id."""
    completed: bool
    """true: this request completed it (its run resumes); false: it was completed or timed
    out already, and nothing changed."""


class EventListQuery(_Strict):
    name: Text | None = None
    """Only events of this name."""
    cursor: uuid.UUID | None = None
    """``next_cursor`` of the previous page."""
    limit: int = Field(50, ge=1, le=200)

    @field_validator("name")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("must not be empty (leave it out for every event)")
        return value


class EventEntry(_Model):
    id: uuid.UUID
    name: str
    payload: Any
    created_at: datetime
    runs: int
    """How many runs it created."""
    run_links: list[RunLink]
    """The first 20 runs it created, oldest first (runs pruned since are not listed)."""


class EventPage(_Model):
    events: list[EventEntry]
    """Newest first."""
    next_cursor: uuid.UUID | None
    """Pass as ``cursor`` for the next page; null on the last page."""


class DailyCostsQuery(_Strict):
    days: int = Field(30, ge=1, le=MAX_COST_DAYS)
    """The last N UTC days, today included (at most 400)."""
    by: DailyCostDimension = "task"
    """Sum per task, tag, key (the concurrency key: the tenant) or model."""
    top: int = Field(10, ge=1, le=200)
    """The groups that cost the most over the range listed per day; the others are summed per
    day in one row with group null."""

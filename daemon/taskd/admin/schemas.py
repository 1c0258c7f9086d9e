"""The admin API's request and response models (pydantic): the handlers validate with them and
the OpenAPI document is generated from them, so the two cannot drift apart."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from taskd.client import moment_of
from taskd.durations import to_seconds
from taskd.field_docs import describe_own_fields
from taskd.models import (
    CostDimension,
    CostSums,
    LLMBackoff,
    LLMCallRecord,
    QueueDepth,
    Run,
    RunLogLine,
    RunStatus,
    RunSummary,
    Schedule,
    WorkerInfo,
    describe_fields,
)

# before the models below embed them: the OpenAPI document shows their fields' docstrings
describe_fields()

MAX_LOG_LINES = 1000
"""Most log lines one run detail carries (``log_limit``)."""
MAX_CHILDREN = 1000
"""Most child runs one run detail lists."""
MAX_STEPS = 1000
"""Most steps one run detail carries."""
MAX_LIST_ITEMS = 1000
"""Most entries of an unpaginated list (tasks, queues, schedules)."""
MAX_LLM_CALLS = 1000
"""Most LLM calls one run detail carries (its totals count them all)."""

MAX_DELAY_SECONDS = 100 * 365.25 * 86400
"""The longest delay or ttl a trigger takes (100 years): the run's times must stay within
what PostgreSQL intervals and Python datetimes hold."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000): PostgreSQL refuses them")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string that goes to PostgreSQL as text: NUL characters are refused (a 400/422, not a
database error)."""


class _Model(BaseModel):
    # The attribute docstrings below become the descriptions of the OpenAPI document: one parse
    # of each module (taskd.field_docs), not pydantic's parse of each class. The validators are
    # built at their first use, on the event loop: the daemon imports this module in a thread
    # while it runs its first claims, and building them all took a tenth of that import.
    model_config = ConfigDict(defer_build=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        describe_own_fields(cls)


class _Strict(_Model):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Model):
    error: str
    """One line saying what was wrong."""
    detail: Any = None
    """Field-level problems, for a request that failed validation."""


class Liveness(_Model):
    status: str = "ok"


class Readiness(_Model):
    ready: bool
    database: bool
    """A query answered within 2 s."""
    listener: bool
    """The LISTEN connection is up."""
    worker_lock: bool
    """The worker's advisory lock is held (without it the daemon claims nothing)."""
    reconciled: bool
    """The startup reconciliation has run."""
    draining: bool


def _split(value: Any) -> Any:
    """``status=queued,failed`` and ``status=queued&status=failed`` mean the same."""
    if isinstance(value, str):
        return [part for part in value.split(",") if part]
    if isinstance(value, list):
        return [part for item in value for part in str(item).split(",") if part]
    return value


MAX_BULK_RUNS = 100_000
"""Most runs one bulk action touches (and its preview counts)."""
SearchField = Literal["payload", "output", "metadata"]


class RunFilterQuery(_Strict):
    """The filters of the runs list (GET /api/runs, /api/runs/counts, /api/runs/bulk)."""

    status: list[RunStatus] | None = None
    """One or more statuses, comma-separated or repeated."""
    task: Text | None = None
    tag: Text | None = None
    queue: Text | None = None
    schedule: Text | None = None
    event: Text | None = None
    """An event name: runs that events of this name created."""
    key: Text | None = Field(None, max_length=200)
    """A concurrency key (exact): one tenant's runs."""
    error_group: Text | None = Field(None, min_length=1, max_length=64)
    """A fingerprint from GET /api/errors: runs with a failed attempt in that group."""
    version: Text | None = Field(None, min_length=1, max_length=200)
    """A version of the task's code (exact): runs it started (see the README's Versions)."""
    created_after: datetime | None = None
    created_before: datetime | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _split_status(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("created_after", "created_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-11-23T09:00:00Z)")
        return value


class RunSearchQuery(RunFilterQuery):
    search: Text | None = Field(None, max_length=400)
    """A run id (that run), JSON (an object or array: runs whose payload, output or metadata
    contains it, jsonb @>; a scalar: runs holding it as a value at any depth) or other text
    (taken as a JSON string: ``acme`` finds ``{"customer": "acme"}``). Answered by a bounded
    scan: see ``search_complete``."""
    search_in: list[SearchField] | None = None
    """Where to search: payload, output, metadata (comma-separated; default all three)."""

    @field_validator("search_in", mode="before")
    @classmethod
    def _split_fields(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("search")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None


class RunListQuery(RunSearchQuery):
    cursor: uuid.UUID | None = None
    """``next_cursor`` of the previous page."""
    limit: int = Field(50, ge=1, le=200)


class RunPage(_Model):
    runs: list[RunSummary]
    """Newest first, without payload and output (GET /api/runs/{id} has them)."""
    next_cursor: uuid.UUID | None
    """Pass as ``cursor`` for the next page; null on the last page."""
    scanned: int = 0
    """Rows examined for this page (at most the scan budget: 30,000; 12,000 for a search of
    a JSON scalar)."""
    search_complete: bool = True
    """False when the page stopped at the scan budget before filling: it may hold fewer than
    ``limit`` runs, and ``next_cursor`` continues the scan."""


class StatusCounts(_Model):
    queued: int
    executing: int
    waiting: int
    completed: int
    failed: int
    canceled: int
    expired: int


class RunCounts(_Model):
    counts: StatusCounts
    """Runs matching the filters, per status (0 for a status the filter leaves out)."""
    estimated: list[RunStatus]
    """The statuses whose number is the planner's estimate (counting would read the
    history): exact when the filters narrow the runs to 30,000 or to an indexed set."""


BulkAction = Literal["cancel", "replay"]


class BulkPreviewQuery(RunSearchQuery):
    action: BulkAction


class BulkPreview(_Model):
    action: BulkAction
    matching: int
    """Runs the action would touch (cancel: the unfinished ones), counted up to 100,000."""
    capped: bool
    """Counting stopped at 100,000: at least that many."""
    estimated: bool = False
    """The number is an estimate (the filters leave more than the scan budget of runs to
    read and no index narrows them): the matches among the newest runs read, extrapolated
    to the planner's estimate of the runs to read. The page shows "about"."""


class BulkFilter(RunSearchQuery):
    """The filters of GET /api/runs as JSON values (``status``: a list)."""


class BulkRequest(_Strict):
    action: BulkAction
    filter: BulkFilter = BulkFilter()
    expected: int = Field(ge=0)
    """The number the confirmation showed (``matching`` of the preview): refused (409) when
    more than 10% + 10 more runs match now (the 409's detail holds the exact ``matching``)."""


class BulkResult(_Model):
    action: BulkAction
    matched: int
    """Runs matching when the action began, counted exactly (at most 100,000), however the
    preview counted."""
    done: int
    """Runs canceled (or asked to cancel, executing) / replayed."""
    skipped: int
    """Runs that finished or vanished meanwhile."""
    runs: list[uuid.UUID]
    """The first 100 canceled runs' ids, or new runs' ids (replay)."""


class ReplayRequest(_Strict):
    """Optional: a payload for the new run instead of the original's."""

    payload: Any = None
    """Checked against the task's payload model like a trigger's (422)."""


class ErrorsQuery(_Strict):
    since: Text = "24h"
    """Failures finished at or after: an ISO 8601 time or a duration before now (24h, 7d)."""
    until: Text | None = None
    """Failures finished before (default now)."""
    task: Text | None = None
    limit: int = Field(50, ge=1, le=200)

    @field_validator("since", "until")
    @classmethod
    def _moment(cls, value: str | None, info: ValidationInfo) -> str | None:
        moment_of(value, info.field_name or "time")  # ValueError: a 400 saying why
        return value


class ErrorBucket(_Model):
    at: datetime
    """The bucket's start."""
    count: int


class ErrorGroup(_Model):
    fingerprint: str
    """16 hex digits of SHA-256(type, message shape, top frame of task code without its
    line number); GET /api/runs?error_group= lists its runs."""
    type: str
    message: str
    """The latest failure's message, its data replaced (<num>, <str>, <id>, <hex>)."""
    frame: str | None
    """The top frame of task code of the latest failure: "tasks/x.py:12 in fn"."""
    count: int
    """Failed attempts (failed or timed out) in the range."""
    runs: int
    """Runs they belong to."""
    first_seen: datetime
    last_seen: datetime
    tasks: list[str]
    """The tasks of the group's latest 100 failing runs."""
    series: list[ErrorBucket]
    """24 buckets over the range."""


class ErrorGroupList(_Model):
    groups: list[ErrorGroup]
    """Most recently seen first."""


class RunLink(_Model):
    id: uuid.UUID
    task_id: str
    status: RunStatus


class RunDetail(_Model):
    run: Run
    """With its attempts, output, error, metadata and its first 1,000 steps."""
    steps_truncated: bool
    """The run has more steps than ``run.steps`` lists."""
    parent: RunLink | None
    children: list[RunLink]
    """The first 1,000 children, oldest first."""
    children_truncated: bool
    """The run has more children than listed."""
    logs: list[RunLogLine]
    """The run's stored ctx.log lines, oldest first (at most ``log_limit``)."""
    logs_truncated: bool
    llm_calls: list[LLMCallRecord]
    """The run's LLM calls made through ctx.llm, oldest first (at most 1,000)."""
    llm_calls_truncated: bool
    """The run has more LLM calls than listed."""
    llm_cost: CostSums
    """All the run's LLM calls summed: tokens and dollars."""


class RunDetailQuery(_Strict):
    log_limit: int = Field(MAX_LOG_LINES, ge=0, le=MAX_LOG_LINES)
    """Most log lines in the answer (at most 1,000: a run's lines are up to 24 KiB each)."""


class CancelResult(_Model):
    id: uuid.UUID
    status: RunStatus
    """canceled, or executing when the run's daemon was asked to cancel it (it ends soon)."""


class ReplayResult(_Model):
    id: uuid.UUID
    replayed_from: uuid.UUID


class TriggerRequest(_Strict):
    payload: Any = None
    delay: float | str | None = None
    """Seconds, or a duration such as "10s", "5m", "1h30m"."""
    run_at: datetime | None = None
    priority: int = Field(0, ge=-(2**31), lt=2**31)
    max_attempts: int | None = Field(None, ge=1, lt=2**31)
    retry: dict[str, Any] | None = None
    """This run's retry policy: some of max_attempts, min_delay, max_delay (seconds or "1s"),
    factor, jitter; each field given overrides the task's."""
    max_duration: float | str | None = None
    """Seconds (or "5m") an attempt of this run may take, instead of the task's."""
    tags: list[Text] = []
    queue: Text | None = Field(None, min_length=1)
    ttl: float | str | None = None
    """A run not started within it (counted from now) ends expired."""
    idempotency_key: Text | None = Field(None, min_length=1)
    """A second trigger of the task with this key, while it holds, creates nothing and
    answers the first run's id."""
    idempotency_ttl: float | str = 86_400.0
    """How long the key holds (seconds or a duration; 24 h)."""
    concurrency_key: Text | None = Field(None, min_length=1, max_length=200)
    """Runs with one key share their queue's per-key limit; keys take turns."""

    @field_validator("payload")
    @classmethod
    def _payload_without_nul(cls, value: Any) -> Any:
        # jsonb refuses \u0000 in strings and keys; walked without recursion (deep payloads).
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

    @field_validator("delay", "ttl", "idempotency_ttl")
    @classmethod
    def _duration(cls, value: float | str | None) -> float | None:
        if value is None:
            return None
        seconds = to_seconds(value)  # ValueError: not a duration, or negative
        if not math.isfinite(seconds) or seconds > MAX_DELAY_SECONDS:
            raise ValueError(
                f"must be a finite duration of at most {MAX_DELAY_SECONDS:.0f} s (100 years)"
            )
        return seconds

    @field_validator("run_at")
    @classmethod
    def _run_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-11-23T09:00:00Z)")
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range: must fall within years 1 to 9999 in UTC") from None
        return value


class TriggerResult(_Model):
    id: uuid.UUID


CatchUpPolicy = Literal["latest", "all", "none"]


class ScheduleCreate(_Strict):
    """A schedule created at run time (client.create_schedule's arguments)."""

    task_id: Text = Field(min_length=1)
    cron: Text = Field(min_length=1)
    """5 fields, 6 with seconds first, or a shorthand such as @daily."""
    timezone: Text = "UTC"
    """An IANA name."""
    payload: Any = None
    """Extra data every run it fires gets (ScheduledRun.payload)."""
    external_id: Text | None = None
    dedup_key: Text | None = Field(None, min_length=1)
    """Creating again with the same key updates that schedule."""
    catch_up: CatchUpPolicy = "latest"


class ScheduleUpdate(_Strict):
    """What to change; a field left out keeps its value (payload and external_id: null
    clears them)."""

    cron: Text | None = Field(None, min_length=1)
    timezone: Text | None = Field(None, min_length=1)
    catch_up: CatchUpPolicy | None = None
    payload: Any = None
    external_id: Text | None = None
    active: bool | None = None
    """false pauses the schedule, true resumes it."""


class ScheduleDeleted(_Model):
    id: str
    deleted: bool = True


class ScheduleTriggerResult(_Model):
    """The run a schedule fired on demand."""

    id: uuid.UUID
    """The new run's id."""
    schedule_id: str


class TaskSchedule(_Model):
    cron: str
    timezone: str
    catch_up: str


class TaskInfo(_Model):
    id: str
    queue: str
    max_attempts: int
    retry: dict[str, Any] | None
    max_duration: float | None
    schedule: TaskSchedule | None
    events: list[str]
    """Event names that start this task."""
    served_here: bool
    """Registered in this daemon (else only known from another daemon's registration)."""
    updated_at: datetime
    payload_schema: dict[str, Any] | None = None
    """The JSON Schema of the task's payload model (pydantic), as the daemon that registered
    it last stored it; null when the task takes any JSON (or its schema was over 32 KiB)."""


class TaskList(_Model):
    tasks: list[TaskInfo]
    """At most 1,000, by id."""
    truncated: bool = False
    """There are more than listed."""


class QueueList(_Model):
    queues: list[QueueDepth]
    """At most 1,000, by name."""
    truncated: bool = False
    """There are more than listed."""
    llm_backoffs: list[LLMBackoff] = []
    """Models the fleet holds backed off: no daemon calls one before its ``until``."""


class CostsQuery(_Strict):
    by: CostDimension | None = "task"
    """Sum per task, tag, key (the concurrency key: the tenant), model or run."""
    since: Text | None = None
    """Calls started at or after: an ISO 8601 time (without a timezone: UTC) or a duration
    before now (7d, 12h)."""
    until: Text | None = None
    """Calls started before: an ISO 8601 time or a duration before now."""
    task: Text | None = None
    key: Text | None = None
    """A concurrency key: one tenant's calls."""
    tag: Text | None = None
    model: Text | None = None
    run: uuid.UUID | None = None
    limit: int = Field(MAX_LIST_ITEMS, ge=1, le=MAX_LIST_ITEMS)
    """Most rows (groups) in the answer; the total counts every call."""

    @field_validator("since", "until")
    @classmethod
    def _moment(cls, value: str | None, info: ValidationInfo) -> str | None:
        moment_of(value, info.field_name or "time")  # ValueError: a 400 saying why
        return value


class QueuePauseResult(_Model):
    queue: str
    paused: bool


class ScheduleList(_Model):
    schedules: list[Schedule]
    """At most 1,000, by id."""
    truncated: bool = False
    """There are more than listed."""


class WorkerList(_Model):
    workers: list[WorkerInfo]


class StreamQuery(_Strict):
    run: uuid.UUID | None = None
    task: Text | None = None


class NoQuery(_Strict):
    pass


class SessionInfo(_Model):
    role: Literal["admin", "read"] | None
    """What this browser session (or bearer token) may do: admin (everything), read (look,
    not act), or null (not logged in)."""
    auth_required: bool
    """A token is configured: the console needs a login."""


class SessionLogin(_Strict):
    token: str = Field(min_length=1, max_length=4096)
    """The admin token or the read-only token, as typed on the login page."""

"""The run lifecycle's data: states, runs as users read them, and what the worker passes around."""

from __future__ import annotations

import enum
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict

from taskd.field_docs import attribute_docstrings


class BaseModel(_PydanticModel):
    """The models' base. Their attribute docstrings become field descriptions (the admin API's
    OpenAPI document and docs/reference show them) through ``describe_fields``, not pydantic's
    ``use_attribute_docstrings``: that one reads and parses each class's source as the class
    is made, two thirds of this module's import, which every daemon paid at start-up for a
    document built at the first request for it. Each model's validator is built at its first
    use (``defer_build``): the worker's own data are the dataclasses below."""

    model_config = ConfigDict(defer_build=True)


_described = False
_describing = threading.Lock()


def describe_fields() -> None:
    """Give the fields of this module's models their attribute docstrings as descriptions
    (where a field has none), and rebuild those already built. Called before anything shows or
    embeds their schema (the admin API's models, docs/build_reference.py); once is enough.

    It rebuilds models that other code validates with, so the daemon calls it on its event
    loop, before the admin's modules load in a thread (taskd.app): a rebuild in that thread
    would race the loop's validations on pydantic versions without a rebuild lock."""
    global _described
    if _described:
        return
    with _describing:  # a second caller waits until the models are described
        if _described:
            return
        docs = _attribute_docstrings()
        for model in [m for m in globals().values() if _is_model(m)]:
            merged: dict[str, str] = {}
            for base in reversed(model.__mro__):  # a subclass's own docstring wins
                merged.update(docs.get(base.__name__, {}) if _is_model(base) else {})
            changed = False
            for name, info in model.model_fields.items():
                if info.description is None and name in merged:
                    info.description = merged[name]
                    changed = True
            # one not built yet (defer_build) takes its descriptions when it is: rebuilding it
            # here would build it, on the loop of a daemon that is draining
            if changed and model.__pydantic_complete__:
                model.model_rebuild(force=True)
        _described = True


def _is_model(value: object) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, BaseModel)
        and value is not BaseModel
        and value.__module__ == __name__
    )


def _attribute_docstrings() -> dict[str, dict[str, str]]:
    """class name -> {attribute: its docstring}, from this module's source (one parse)."""
    return attribute_docstrings(__name__)


class RunStatus(enum.StrEnum):
    """A run's state. QUEUED includes delayed runs (``run_at`` in the future) and retries."""

    QUEUED = "queued"
    """Waiting to start: due, delayed (``run_at`` in the future) or a retry's backoff."""
    EXECUTING = "executing"
    """An attempt runs on a daemon, which holds the run's lease."""
    WAITING = "waiting"
    """Suspended on a durable wait, child runs or a wait token; no slot held."""
    COMPLETED = "completed"
    """Terminal: the task returned (``output``)."""
    FAILED = "failed"
    """Terminal: its last attempt failed, or ``AbortRun`` (``error``)."""
    CANCELED = "canceled"
    """Terminal: canceled by request."""
    EXPIRED = "expired"
    """Terminal: not started within its ``ttl``."""

    @property
    def terminal(self) -> bool:
        """Completed, failed, canceled or expired: the run will not change again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED}
)


class AttemptOutcome(enum.StrEnum):
    """How one attempt of a run ended (``Attempt.outcome``)."""

    COMPLETED = "completed"
    """The task returned."""
    FAILED = "failed"
    """The task raised."""
    TIMED_OUT = "timed_out"
    """It ran past its ``max_duration`` and was cancelled (counts as failed)."""
    CANCELED = "canceled"
    """A cancel request stopped it."""
    LOST = "lost"
    """Its worker died or lost its lease; the attempt counts."""


class Attempt(BaseModel):
    """One finished attempt of a run (``Run.attempts``), oldest first."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    """The attempt's number, from 1."""
    worker_id: uuid.UUID | None
    """The worker (daemon process) that ran it."""
    started_at: datetime
    """When the attempt started."""
    finished_at: datetime
    """When it ended (a lost attempt: when it was found lost)."""
    outcome: AttemptOutcome
    """How it ended."""
    error: dict[str, Any] | None = None
    """The attempt's error, None when it completed. A JSON object: ``{"type": the exception's
    class name, "message": str(exception), "traceback": text or null}``; failures outside the
    task's code have a ``type`` of their own (Canceled, Expired, WorkerLost, UnknownTask,
    OutcomeNotStored, ExecutorError) and no traceback."""


class Step(BaseModel):
    """A durable step of a run (``ctx.step``): recorded once, never recomputed for the run."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Unique within its run (waits are ``wait:1``, ``wait:2``...; tokens ``token:N``; child
    runs ``children:N``)."""
    status: str
    """completed, or failed (its retries exhausted: the attempt failed; the next attempt of
    the run calls it again). A step whose function returned a value that could not be stored
    is failed with error type StepResultNotStored and is never called again."""
    result: Any = None
    """What the step's function returned, as JSON (a pydantic model as a dict)."""
    error: dict[str, Any] | None = None
    """The last call's error: ``{"type": ..., "message": ...}``."""
    attempts: int
    """Calls of the step's function so far (its own retries, over the run's attempts)."""
    run_attempt: int
    """The run's attempt that recorded it."""
    started_at: datetime
    """When its first call started."""
    finished_at: datetime
    """When it was recorded."""


class RunSummary(BaseModel):
    """A run without its payload, output and attempts (listings)."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    """The run id, a UUIDv7 (ids sort by creation)."""
    task_id: str
    """The task it runs."""
    queue: str
    """The queue it waits in."""
    status: RunStatus
    """Where it stands (see RunStatus)."""
    error: dict[str, Any] | None = None
    """The last attempt's error (the final one once failed), None if none failed. A JSON
    object: ``{"type": the exception's class name, "message": str(exception), "traceback":
    text or null}``; failures outside the task's code have a ``type`` of their own (Canceled,
    Expired, WorkerLost, UnknownTask, OutcomeNotStored, ExecutorError) and no traceback."""
    priority: int
    """Higher starts first."""
    run_at: datetime
    """When it may start (queued), or when it next looks (waiting)."""
    attempt: int
    """Attempts started so far (0 before the first)."""
    max_attempts: int | None
    """The trigger's override, else the task's retry policy; None if no daemon knows the task."""
    tags: list[str]
    """The trigger's tags."""
    created_at: datetime
    """When it was triggered."""
    started_at: datetime | None
    """When its first attempt started."""
    finished_at: datetime | None
    """When it reached a terminal state."""
    worker_id: uuid.UUID | None
    """The worker holding it while it executes."""
    expires_at: datetime | None = None
    """The ttl's deadline: a run not started by then ends expired."""
    cancel_requested_at: datetime | None = None
    """When a cancel was asked for while it executed."""
    replayed_from: uuid.UUID | None = None
    """The run this one replays (``client.replay``)."""
    event_id: uuid.UUID | None = None
    """The event that created this run (one run per subscribed task)."""
    schedule_id: str | None = None
    """The schedule that fired it."""
    scheduled_for: datetime | None = None
    """The fire time of the schedule this run is for."""
    metadata: dict[str, Any] | None = None
    """What the task set with ``ctx.set_metadata`` (progress, stage...), kept after it ends."""
    parent_id: uuid.UUID | None = None
    """The run that created this one (child runs)."""
    concurrency_key: str | None = None
    """Runs of one key share the queue's per-key limit (one at a time per user...)."""
    retry: dict[str, Any] | None = None
    """The trigger's own backoff: some of ``min_delay`` and ``max_delay`` (seconds),
    ``factor``, ``jitter``, each overriding the task's; None: the task's (its attempt limit is
    ``max_attempts``)."""
    max_duration: float | None = None
    """Seconds an attempt may run, given at trigger; None: the task's ``max_duration``."""
    version: str | None = None
    """The version of the task's code that started it (``@task(version=...)``, else the
    daemon's ``[worker] version``; a child's: its task's version in its parent's deployment,
    given at trigger); None before it starts."""


class Run(RunSummary):
    """A run as producers and operators see it."""

    payload: Any
    """The JSON payload it was triggered with."""
    output: Any = None
    """What the task returned, as JSON (completed runs)."""
    attempts: list[Attempt] = []
    """Its finished attempts, oldest first."""
    steps: list[Step] = []
    """Its recorded steps (``ctx.step``, waits, tokens, child runs)."""


class Schedule(BaseModel):
    """A cron schedule, declared in code or created through the API."""

    id: str
    """The task id for a schedule declared in code; ``sched_`` and 32 hex digits for one
    created at run time."""
    task_id: str
    """The task it fires."""
    cron: str
    """5 fields, 6 with seconds first, or a shorthand such as ``@daily``."""
    timezone: str
    """The IANA timezone the cron is read in."""
    payload: Any = None
    """Extra data every run it fires gets (``ScheduledRun.payload``)."""
    external_id: str | None = None
    """The creator's own reference (a user id...), in every run's payload."""
    dedup_key: str | None = None
    """Creating again with this key updates this schedule instead of adding one."""
    catch_up: str
    """Fire times missed by more than 60 s: ``latest`` (one run), ``all`` (one per time, the
    latest 100) or ``none``."""
    declared: bool
    """Declared in code (``@schedules.task``), synced at each daemon start."""
    active: bool
    """False: paused, it fires nothing."""
    last_fired_at: datetime | None
    """The latest fire time that got its run."""
    last_run_id: uuid.UUID | None = None
    """The run fired for ``last_fired_at``, while it is kept."""
    next_fire_at: datetime | None = None
    """The next fire time, in the schedule's timezone (None when paused)."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it was last changed."""


class Event(BaseModel):
    """A recorded event and how many runs it started."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    """The event id (each run it created carries it as ``event_id``)."""
    name: str
    """The event's name (what ``@task(on_event=...)`` subscribes to)."""
    payload: Any
    """Its JSON payload (each run it created got it)."""
    runs: int
    """How many runs it created."""
    created_at: datetime
    """When it was sent."""


class WorkerReport(BaseModel):
    """What a worker's start-up reconciliation (``trigger`` startup), or its last rescue that
    found something (``rescue``), found. ``counts`` per kind: handed_back (runs of gone workers,
    or with an expired lease, back in the queue), failed (the same, attempts used up), canceled
    (the same, a cancel requested), expired (not started within their ttl), unknown_task (no
    daemon served their task within unknown_task_timeout), version_unavailable (no daemon served
    their version within version_timeout). Counts are exact; ``by_task`` keeps
    the 20 tasks with the most runs of each kind, ``run_ids`` the first 20 ids of each kind
    (per task)."""

    at: datetime
    trigger: str
    gone_workers: list[str]
    gone_worker_count: int
    counts: dict[str, int]
    by_task: dict[str, dict[str, int]]
    run_ids: dict[str, dict[str, list[str]]]


class WorkerInfo(BaseModel):
    id: uuid.UUID
    host: str
    pid: int
    version: str
    concurrency: int
    queues: list[str]
    tasks: list[str]
    started_at: datetime
    heartbeat_at: datetime
    executing: int
    last_report: WorkerReport | None = None
    task_versions: list[str | None] | None = None
    """The version of its code for each of ``tasks`` (the same positions)."""
    version_policy: str | None = None
    """Its ``[worker] version_policy``: pinned or latest."""


class QueueDepth(BaseModel):
    """A queue's depth, runs executing and limits (``client.list_queues``, ``taskd queues
    list``)."""

    queue: str
    """The queue's name."""
    due: int
    """Queued runs whose time has come."""
    delayed: int
    """Queued runs waiting for their run_at (delays, retry backoffs)."""
    oldest_due: datetime | None
    """The ``run_at`` of its oldest due run (None: none due)."""
    executing: int = 0
    """Runs of the queue executing now, over all daemons."""
    paused: bool = False
    """Paused (``taskd queues pause``): no run of it starts."""
    concurrency: int | None = None
    """Runs of the queue executing at once, over all daemons (None: no limit)."""
    concurrency_limit_per_key: int | None = None
    """Runs of one concurrency key executing at once (None: no limit)."""
    rate_limit: int | None = None
    """Starts per ``rate_period`` seconds (None: no limit)."""
    rate_period: float | None = None
    """The rate limit's window, in seconds."""
    overridden: bool = False
    """Limits set by an operator (``taskd queues set``), kept until ``taskd queues reset``."""
    llm_rate: str | None = None
    """Limits on its runs' LLM calls per window (``"tokens=400000,requests=50/60s"``)."""
    llm_budget: str | None = None
    """Its LLM budget per concurrency key (``"$5/86400s per key"``)."""


class UnservedTask(BaseModel):
    """Queued runs of a task that no live worker serves."""

    task_id: str
    queued: int
    oldest: datetime


class UnservedVersion(BaseModel):
    """Queued runs pinned to a version of their task's code that no live worker serves (see
    the README's Versions): they start when a daemon of that version does, or fail after
    ``[worker] version_timeout``."""

    task_id: str
    version: str
    queued: int
    oldest: datetime
    """When the oldest of them was triggered."""
    due_since: datetime
    """The ``run_at`` of the one due longest."""


class Health(BaseModel):
    """What `taskd status` prints (and the admin endpoint serves)."""

    workers: list[WorkerInfo]
    """The live workers (daemon processes)."""
    queues: list[QueueDepth]
    """Every queue with runs or settings."""
    unserved: list[UnservedTask]
    """Tasks with queued runs that no live worker serves."""
    executing: int
    """Runs executing now, over all workers."""
    oldest_due: datetime | None
    """The oldest queued run whose time has come, over all queues."""
    unserved_versions: list[UnservedVersion] = []
    """Queued runs pinned to a version no live worker serves, per task and version."""


class SchemaStatus(BaseModel):
    """Where a database's schema ``taskd`` stands against the migrations this taskd ships
    (what ``taskd.schema_status`` returns and ``taskd status`` prints).

    ``state`` is one of:

    - ``"current"``: every migration this taskd ships is applied, and no other;
    - ``"behind"``: some are not applied yet (``pending``): ``taskd.migrate`` applies them;
    - ``"ahead"``: the database holds migrations this taskd does not know (``unknown``): a
      newer taskd migrated it, and this one refuses to migrate it or run a daemon on it
      (upgrade taskd). Ahead wins over behind when both hold;
    - ``"uninitialised"``: no taskd migration is applied (no table ``taskd.migrations``, or
      an empty one): ``taskd.migrate`` creates the schema.

    Migrations are named as their files are, without ``.sql``: ``"0002_cancel_wakes_parent"``.
    """

    state: Literal["current", "behind", "ahead", "uninitialised"]
    """Where the schema stands (see above)."""
    applied: list[str]
    """The migrations recorded in ``taskd.migrations``, oldest first."""
    pending: list[str]
    """Migrations this taskd ships that the database has not applied yet, in order."""
    unknown: list[str]
    """Migrations the database has applied that this taskd does not ship."""
    database_version: int
    """The highest migration version applied (0: none)."""
    code_version: int
    """The highest migration version this taskd ships."""


@dataclass(slots=True)
class ClaimedRun:
    """A run this daemon has just claimed (holds its lease)."""

    id: uuid.UUID
    task_id: str
    payload: Any
    attempt: int
    max_attempts: int | None
    queue: str
    tags: list[str]
    metadata: dict[str, Any] | None = None
    log_lines: int = 0  # lines earlier attempts stored (the cap is per run)
    concurrency_key: str = ""
    retry: dict[str, Any] | None = None  # the trigger's backoff fields over the task's
    max_duration: float | None = None  # the trigger's max_duration (None: the task's)
    started: float = 0.0  # time.monotonic() when this daemon started the attempt
    cancel_requested: bool = False  # set by in_flight when a cancel arrives for it
    superseded: bool = False  # the run was handed back and claimed again: this attempt is moot


@dataclass(slots=True)
class Outcome:
    """The result of one attempt, waiting to be written by the completer.

    ``output`` and ``error`` are JSON already encoded to bytes (or None), so that a value that
    cannot be stored fails its own attempt in the executor instead of a whole batch.
    """

    run_id: uuid.UUID
    attempt: int
    status: RunStatus  # the run's next state: COMPLETED, FAILED or QUEUED (retry)
    attempt_outcome: AttemptOutcome
    output: bytes | None = None
    error: bytes | None = None
    retry_delay: float = 0.0
    replaces_refused: bool = False  # written instead of an outcome the database refused
    # a failure the executor did not decide (so on_failure has not run): a daemon serving the
    # task runs the hook later (taskd.failure_hooks)
    owes_failure_hook: bool = False
    task_id: str = ""  # set by in_flight, for the run-change stream and metrics
    duration: float | None = None  # the attempt's wall time in seconds (set by in_flight)


@dataclass(slots=True)
class LogLine:
    """A ``ctx.log`` line waiting to be stored with its run; ``fields`` is JSON already."""

    run_id: uuid.UUID
    task_id: str
    attempt: int
    at: datetime
    level: str  # debug, info, warning, error
    message: str
    fields: bytes | None


@dataclass(slots=True)
class LLMCall:
    """One call made through ``ctx.llm``, waiting to be stored (``taskd.llm_calls``)."""

    run_id: uuid.UUID | None
    task_id: str
    attempt: int | None
    step: str | None
    queue: str | None
    concurrency_key: str | None
    tags: list[str]
    model: str
    kind: str  # message, stream, count_tokens, batch
    outcome: str  # ok, rate_limited, overloaded, server_error, connection_error, refused
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_usd: Decimal | None
    latency_ms: int | None
    stop_reason: str | None
    request_id: str | None
    error: str | None
    started_at: datetime


@dataclass(frozen=True, slots=True)
class LLMGate:
    """What stands before a call of a model by a run, on the database's clock: the model's
    backoff (no daemon calls it before ``backoff_until``) and the run's wait for the API."""

    now: datetime
    backoff_until: datetime | None
    backoff_reason: str | None
    overloads: int
    deferred_since: datetime | None
    deferrals: int
    queue_limits: dict[str, Any] | None = None
    """The run's queue's LLM call limits and budget (``Queue.llm_limits``), or None."""


@dataclass(frozen=True, slots=True)
class LLMDeferral:
    """A run handed back to the queue for the API: waiting since, how often, and now (all on
    the database's clock)."""

    since: datetime
    deferrals: int
    now: datetime


@dataclass(frozen=True, slots=True)
class LLMAdmission:
    """The answer to a call asking admission under its queue's LLM limits and budget (on the
    database's clock): admitted (``id``, the reservation to true up; None when the queue
    holds no limit), else when the window has room (``retry_at``) or, for a budget that
    fails, that it is exceeded (``exceeded``); ``reason`` says which limit."""

    now: datetime
    admitted: bool
    id: int | None = None
    admitted_at: datetime | None = None
    retry_at: datetime | None = None
    exceeded: bool = False
    reason: str | None = None


class RunLogLine(BaseModel):
    """A stored ``ctx.log`` line, as `taskd logs` and the API show it."""

    model_config = ConfigDict(frozen=True)

    id: int
    """Increasing: orders the lines (``list_logs(after=...)`` pages on it)."""
    run_id: uuid.UUID
    """The run that logged it."""
    task_id: str
    """The run's task."""
    attempt: int
    """The attempt that logged it."""
    at: datetime
    """When it was logged."""
    level: str
    """debug, info, warning or error."""
    message: str
    """The message."""
    fields: dict[str, Any] | None = None
    """The keyword arguments given with it (``ctx.log.info("sent", to=address)``)."""


@dataclass(slots=True)
class Claim:
    """What one claim got: the runs, and whether a queue's limits held due runs back."""

    runs: list[ClaimedRun] = field(default_factory=list)
    held_back: bool = False
    """A limit (or another daemon claiming the same limited queue) kept runs from starting:
    claim again when a slot frees."""
    retry_in: float | None = None
    """Seconds until a rate window lets more runs start (or a busy queue is worth a retry)."""
    cursors: dict[str, str | None] = field(default_factory=dict)
    """Per queue, the last concurrency key the claim examined (None: the next claim starts
    from the top): where the next claim goes on."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's limits as a task's code declares them."""

    name: str
    concurrency: int | None = None
    concurrency_per_key: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    llm_limits: dict[str, Any] | None = None
    """The LLM call limits and budget (``Queue.llm_limits``); they always follow the code."""

    def declared(self) -> dict[str, Any]:
        declared: dict[str, Any] = {
            "concurrency": self.concurrency,
            "concurrency_per_key": self.concurrency_per_key,
            "rate_limit": self.rate_limit,
            "rate_period": self.rate_period,
        }
        if self.llm_limits is not None:
            declared["llm_limits"] = self.llm_limits
        return declared


CostDimension = Literal["task", "tag", "key", "model", "run"]
"""What ``client.costs(by=...)`` sums per: the task, each tag, the concurrency key (the
tenant), the model, or the run."""
COST_DIMENSIONS: tuple[CostDimension, ...] = ("task", "tag", "key", "model", "run")


class CostSums(BaseModel):
    """What LLM calls cost, summed in the database (exact: tokens as integers, dollars as
    NUMERIC, never floats)."""

    model_config = ConfigDict(frozen=True)

    calls: int
    """Calls recorded (every outcome: a 429 or an overload is a call too, without tokens)."""
    input_tokens: int
    """Input tokens (without those written to or read from the prompt cache)."""
    output_tokens: int
    """Output tokens."""
    cache_write_tokens: int
    """Input tokens written to the prompt cache."""
    cache_read_tokens: int
    """Input tokens read from the prompt cache."""
    cost_usd: Decimal
    """US dollars at the ``[llm] prices`` in force when each call was recorded (Message
    Batches at half); calls of a model without a price add nothing (see
    ``unpriced_calls``)."""
    unpriced_calls: int
    """Calls that used tokens of a model without a price: their tokens are in the sums, their
    cost is not."""


class CostRow(CostSums):
    """The sums of one group of ``client.costs``."""

    name: str | None
    """The group: a task id, a tag, a concurrency key, a model or a run id; null for the calls
    without one (no concurrency key, no tag)."""


class Costs(BaseModel):
    """``client.costs(...)``: the sums per group, largest cost first, and their total."""

    model_config = ConfigDict(frozen=True)

    by: CostDimension | None
    """What the rows are summed per (null: only the total)."""
    since: datetime | None
    """Calls started at or after this moment (null: from the first)."""
    until: datetime | None
    """Calls started before this moment (null: up to now)."""
    rows: list[CostRow]
    """Largest cost first. By tag, a call with several tags counts in each of their rows."""
    truncated: bool
    """There are more groups than ``rows`` lists (``limit``)."""
    total: CostSums
    """All matching calls, each counted once (whatever ``rows`` lists)."""


class LLMCallRecord(BaseModel):
    """A stored LLM call (``taskd.llm_calls``), as ``taskd runs show`` and the API show it."""

    model_config = ConfigDict(frozen=True)

    id: int
    """Increasing: orders the calls."""
    run_id: uuid.UUID | None
    """The run that made it (its row may have been pruned since: costs outlive runs)."""
    task_id: str
    """The run's task."""
    attempt: int | None
    """The run's attempt that made it."""
    step: str | None
    """The ``ctx.step`` the call was made in, if any."""
    queue: str | None
    """The run's queue."""
    concurrency_key: str | None
    """The run's concurrency key (the tenant), if any."""
    tags: list[str]
    """The run's tags."""
    model: str
    """The model id as the call named it."""
    kind: str
    """message, stream, count_tokens or batch."""
    outcome: str
    """ok, rate_limited, overloaded, server_error, connection_error, refused or budget."""
    input_tokens: int
    """Input tokens (the API's ``usage.input_tokens``)."""
    output_tokens: int
    """Output tokens."""
    cache_write_tokens: int
    """Input tokens written to the prompt cache (``cache_creation_input_tokens``)."""
    cache_read_tokens: int
    """Input tokens read from the prompt cache (``cache_read_input_tokens``)."""
    cost_usd: Decimal | None
    """US dollars; null when no price is known for the model (or a failed call used no
    tokens)."""
    latency_ms: int | None
    """Milliseconds the call took."""
    stop_reason: str | None
    """Why the model stopped (end_turn, max_tokens, tool_use...)."""
    request_id: str | None
    """The API's request id (``request-id`` header)."""
    error: str | None
    """The API's message for a call that failed."""
    started_at: datetime
    """When the call was sent (the time ranges of cost reports are on it)."""


class LLMBackoff(BaseModel):
    """A model no daemon calls before ``until`` (after a 429 or overload answers)."""

    model_config = ConfigDict(frozen=True)

    model: str
    """The model id (or ``count_tokens``, whose limit is the organisation's)."""
    until: datetime
    """No call of it starts before this moment, on any daemon."""
    overloads: int
    """Overload answers in a row (the adaptive backoff's exponent)."""
    reason: str
    """The API's message that set the backoff."""
    updated_at: datetime
    """When the backoff was last set or changed."""


DailyCostDimension = Literal["task", "tag", "key", "model"]


class DailyCost(BaseModel):
    """What one group's LLM calls cost on one UTC day (``client.daily_costs``)."""

    model_config = ConfigDict(frozen=True)

    day: date
    """The UTC day the calls started on."""
    group: str | None
    """The task id, tag, concurrency key or model ('' for calls without a tag or key); null
    for the other groups summed (those past ``top``)."""
    cost_usd: Decimal
    """US dollars (calls without a known price count none)."""
    input_tokens: int
    """Input tokens."""
    output_tokens: int
    """Output tokens."""
    calls: int
    """Calls recorded."""


class DailyCosts(BaseModel):
    """``client.daily_costs(...)``: the sums per day and group, oldest day first."""

    model_config = ConfigDict(frozen=True)

    days: list[DailyCost]
    """Per day (oldest first), the ``top`` groups by cost over the whole range, then the
    others summed in one row with group null; days without calls are left out."""
    total_usd: Decimal
    """Every call of the range, each once (by tag, a call with several tags is in the rows of
    each)."""
    others: int
    """How many groups were summed into the rows with group null."""


class BudgetStatus(BaseModel):
    """An LLM budget and what it has spent (``client.budgets``)."""

    model_config = ConfigDict(frozen=True)

    scope: Literal["queue", "task"]
    """A queue's ``Budget`` (per concurrency key, over a window) or a task's ``budget_usd``
    (per run)."""
    name: str
    """The queue or the task."""
    key: str | None
    """The concurrency key this entry's spend is of ('' for runs without a key); null for a
    task budget, and for a queue budget that nothing spent in its window."""
    limit_usd: Decimal
    """The budget in US dollars (per key and window, or per run)."""
    per: str | None
    """The queue budget's window ("1d", "12h"); null for a task budget (per run)."""
    spent_usd: Decimal
    """What the key spent (or reserved) in the current window; for a task, the most any of
    its unfinished runs has spent."""
    window_start: datetime | None
    """Where the queue budget's sliding window starts now; null for a task budget."""
    on_exceed: str
    """What a call that would pass it does: "fail" (BudgetExceeded) or "wait"."""


class Budgets(BaseModel):
    """``client.budgets()``: every LLM budget, with its spend."""

    model_config = ConfigDict(frozen=True)

    budgets: list[BudgetStatus]
    """Queue budgets by queue (keys that spent most first), then task budgets by task."""
    truncated: bool = False
    """More keys spent than listed (at most 1,000 entries)."""

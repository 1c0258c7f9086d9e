"""The admin API's request and response models (pydantic): the handlers validate with them and
the OpenAPI document is generated from them, so the two cannot drift apart."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from daemon.models import QueueDepth, Run, RunLogLine, RunStatus, Schedule, WorkerInfo


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str
    """One line saying what was wrong."""
    detail: Any = None
    """Field-level problems, for a request that failed validation."""


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    ready: bool
    database: bool
    """A query answered within 2 s."""
    listener: bool
    """The LISTEN connection is up."""
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


class RunListQuery(_Strict):
    status: list[RunStatus] | None = None
    """One or more statuses, comma-separated or repeated."""
    task: str | None = None
    tag: str | None = None
    queue: str | None = None
    schedule: str | None = None
    event: str | None = None
    """An event name: runs that events of this name created."""
    created_after: datetime | None = None
    created_before: datetime | None = None
    cursor: uuid.UUID | None = None
    """``next_cursor`` of the previous page."""
    limit: int = Field(50, ge=1, le=500)

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


class RunPage(BaseModel):
    runs: list[Run]
    """Newest first."""
    next_cursor: uuid.UUID | None
    """Pass as ``cursor`` for the next page; null on the last page."""


class RunLink(BaseModel):
    id: uuid.UUID
    task_id: str
    status: RunStatus


class RunDetail(BaseModel):
    run: Run
    """With its attempts, output, error and metadata."""
    parent: RunLink | None
    children: list[RunLink]
    logs: list[RunLogLine]
    """The run's stored ctx.log lines, oldest first (at most ``log_limit``)."""
    logs_truncated: bool


class RunDetailQuery(_Strict):
    log_limit: int = Field(1000, ge=0, le=10_000)


class CancelResult(BaseModel):
    id: uuid.UUID
    status: RunStatus
    """canceled, or executing when the run's daemon was asked to cancel it (it ends soon)."""


class ReplayResult(BaseModel):
    id: uuid.UUID
    replayed_from: uuid.UUID


class TriggerRequest(_Strict):
    payload: Any = None
    delay: float | str | None = None
    """Seconds, or a duration such as "10s", "5m", "1h30m"."""
    run_at: datetime | None = None
    priority: int = Field(0, ge=-(2**31), lt=2**31)
    max_attempts: int | None = Field(None, ge=1, lt=2**31)
    tags: list[str] = []
    queue: str | None = Field(None, min_length=1)
    ttl: float | str | None = None
    """A run not started within it (counted from now) ends expired."""


class TriggerResult(BaseModel):
    id: uuid.UUID


class TaskSchedule(BaseModel):
    cron: str
    timezone: str
    catch_up: str


class TaskInfo(BaseModel):
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


class TaskList(BaseModel):
    tasks: list[TaskInfo]


class QueueList(BaseModel):
    queues: list[QueueDepth]


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


class StreamQuery(_Strict):
    run: uuid.UUID | None = None
    task: str | None = None


class NoQuery(_Strict):
    pass

"""taskd: durable background tasks for Python teams that run their own PostgreSQL.

The task SDK and the client are the public surface; everything else is the engine.
"""

from daemon.client import Client
from daemon.errors import (
    AbortRun,
    ConfigError,
    InvalidPayload,
    InvalidRunId,
    PayloadTooLarge,
    RunFinished,
    RunNotFound,
    ScheduleNotFound,
    TaskdError,
    UnknownTask,
)
from daemon.models import Attempt, AttemptOutcome, Event, Health, Run, RunStatus, Schedule
from daemon.sdk.context import Context
from daemon.sdk.current import current_client
from daemon.sdk.retry import Retry
from daemon.sdk.schedules import ScheduledRun, schedules
from daemon.sdk.task import Queue, TaskDefinition, task

__all__ = [
    "AbortRun",
    "Attempt",
    "AttemptOutcome",
    "Client",
    "ConfigError",
    "Context",
    "Event",
    "Health",
    "InvalidPayload",
    "InvalidRunId",
    "PayloadTooLarge",
    "Queue",
    "Retry",
    "Run",
    "RunFinished",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleNotFound",
    "ScheduledRun",
    "TaskDefinition",
    "TaskdError",
    "UnknownTask",
    "current_client",
    "schedules",
    "task",
]

"""taskd: durable background tasks for Python teams that run their own PostgreSQL.

The task SDK and the client are the public surface; everything else is the engine.
"""

from taskd.client import Client
from taskd.errors import (
    AbortRun,
    ConfigError,
    InvalidPayload,
    InvalidRunId,
    MetadataTooLarge,
    MigrationError,
    OutcomeNotStored,
    PayloadTooLarge,
    QueueNotFound,
    RunFailed,
    RunFinished,
    RunNotFound,
    ScheduleNotFound,
    StepNameRepeated,
    StepResultNotStored,
    TaskdError,
    TokenFinished,
    TokenNotFound,
    UnknownTask,
    WaitTimeout,
)
from taskd.models import (
    Attempt,
    AttemptOutcome,
    CostRow,
    Costs,
    CostSums,
    Event,
    Health,
    LLMBackoff,
    LLMCallRecord,
    QueueDepth,
    Run,
    RunLogLine,
    RunStatus,
    Schedule,
    SchemaStatus,
    Step,
)
from taskd.sdk.context import Context
from taskd.sdk.current import current_client
from taskd.sdk.queues import Queue, Rate
from taskd.sdk.retry import Retry
from taskd.sdk.schedules import ScheduledRun, schedules
from taskd.sdk.task import TaskDefinition, task
from taskd.sdk.wait import WaitToken, wait
from taskd.store.migrations import migrate, schema_status

__all__ = [
    "AbortRun",
    "Attempt",
    "AttemptOutcome",
    "Client",
    "ConfigError",
    "Context",
    "CostRow",
    "CostSums",
    "Costs",
    "Event",
    "Health",
    "InvalidPayload",
    "InvalidRunId",
    "LLMBackoff",
    "LLMCallRecord",
    "MetadataTooLarge",
    "MigrationError",
    "OutcomeNotStored",
    "PayloadTooLarge",
    "Queue",
    "QueueDepth",
    "QueueNotFound",
    "Rate",
    "Retry",
    "Run",
    "RunFailed",
    "RunFinished",
    "RunLogLine",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleNotFound",
    "ScheduledRun",
    "SchemaStatus",
    "Step",
    "StepNameRepeated",
    "StepResultNotStored",
    "TaskDefinition",
    "TaskdError",
    "TokenFinished",
    "TokenNotFound",
    "UnknownTask",
    "WaitTimeout",
    "WaitToken",
    "current_client",
    "migrate",
    "schedules",
    "schema_status",
    "task",
    "wait",
]

"""Errors raised by taskd, at the bottom of the dependency graph."""

from __future__ import annotations


class TaskdError(Exception):
    """Base class of every error taskd raises on purpose."""


class ConfigError(TaskdError):
    """A configuration value is missing, unknown or invalid (one line, names the key)."""


class MigrationError(TaskdError):
    """The schema cannot be migrated or used as it is; start-up stops (one line, says what to do).

    Raised by ``taskd.migrate``, ``taskd.schema_status``, ``taskd migrate`` and a starting
    daemon: the database holds a migration this taskd does not know (a newer taskd migrated
    it), an applied migration's file changed, the database cannot be reached, or a migration
    failed (the message names it; nothing of that migration was applied).
    """


class PayloadTooLarge(TaskdError):
    """A payload is over the configured byte limit; nothing was enqueued."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class InvalidPayload(TaskdError):
    """A payload is not JSON-serialisable or not a JSON object/value taskd accepts."""


class RunNotFound(TaskdError):
    """No run has the given id."""


class RunFinished(TaskdError):
    """The run has already reached a terminal state (it cannot be canceled)."""


class ScheduleNotFound(TaskdError):
    """No schedule has the given id."""


class QueueNotFound(TaskdError):
    """No queue of that name has settings (limits or a pause)."""


class WebhookNotFound(TaskdError):
    """No status webhook subscription (or delivery) has the given name (or id)."""


class WebhookExists(TaskdError):
    """A status webhook subscription of that name exists already."""


class InvalidRunId(TaskdError):
    """A string that is not a run id (a UUID) was given where one was expected."""


class DuplicateTask(ConfigError):
    """Two task definitions share one id (a startup configuration error)."""


class UnknownTask(TaskdError):
    """A task id is not registered in this process."""


class NoClient(TaskdError):
    """A typed trigger was called with no client given and none current."""


class AbortRun(Exception):
    """Raise inside a task to fail the run now, without any further retry."""


class LLMRequestRefused(AbortRun):
    """The LLM API refused a call for good (400, 401, 403, 404, 413, a credit or billing
    error): the run fails at once with the API's message, without a retry."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class LLMUnavailable(AbortRun):
    """The LLM API stayed unavailable (rate limited, overloaded, failing, unreachable) for
    longer than ``[llm] max_wait``: the run fails with the API's last message."""


class BudgetExceeded(AbortRun):
    """An LLM call would take a run (``@task(budget_usd=...)``) or a tenant (a queue's
    ``Budget``) past its budget: it is not sent, and the run fails with this reason."""


class FailedOutsideAttempt(TaskdError):
    """What ``on_failure`` receives for a run that failed outside its attempt's code: its
    worker was lost on the last attempt (``type`` WorkerLost), no daemon served its task
    within ``unknown_task_timeout`` (UnknownTask), or its outcome could not be stored
    (OutcomeNotStored). ``type`` and ``message`` are the run's stored error."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class MetadataTooLarge(TaskdError, ValueError):
    """``ctx.set_metadata`` would grow the run's metadata past ``[tasks] max_metadata_bytes``;
    nothing was stored."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"run metadata would be {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class StepNameRepeated(AbortRun):
    """Two ``ctx.step`` calls of one run used the same name. Step names identify recorded
    results, so they must be unique within a run (put an index in a name used in a loop). It
    fails the run at once: a retry would repeat the same code."""


class StepResultNotStored(AbortRun):
    """A step's function returned a value that cannot be stored: not JSON-serialisable (a
    ``Decimal``, ``bytes``, a ``set``...), a string holding NUL or a lone surrogate, or over
    ``[tasks] max_output_bytes``. The function has run (its side effect happened), so it is
    not called again for the run: the run fails for good. Caught by the task, it is raised
    again, without the call, wherever the run reaches the step again."""


class OutcomeNotStored(AbortRun):
    """A run's output cannot be stored (see StepResultNotStored for the reasons): the run
    fails for good rather than running its function again."""


class WaitTimeout(TaskdError):
    """``wait.for_token``: the token was not completed within its timeout."""


class TokenNotFound(TaskdError):
    """No wait token has the given id."""


class TokenFinished(TaskdError):
    """The wait token was already completed or has timed out."""


class RunFailed(TaskdError):
    """A child run (``trigger_and_wait``) ended failed, canceled or expired; ``error`` is its
    error (type, message) and ``run_id`` its id."""

    def __init__(self, run_id: object, status: str, error: dict[str, object] | None) -> None:
        error = error or {}
        super().__init__(
            f"child run {run_id} {status}: {error.get('type', '?')}: {error.get('message', '')}"
        )
        self.run_id = run_id
        self.status = status
        self.error = error

"""``ctx``: what a running task knows about its run."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from daemon.logs import RunLogger

task_logger = logging.getLogger("taskd.task")


class Context:
    """Passed to every task function as its second argument.

    ``run_id``, ``task_id``, ``attempt`` (1-based), ``max_attempts``, ``payload`` (validated),
    ``tags``, ``queue``, and ``log``: a logger whose lines carry run id, task and attempt.
    """

    __slots__ = ("_log", "attempt", "max_attempts", "payload", "queue", "run_id", "tags", "task_id")

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        task_id: str,
        attempt: int,
        max_attempts: int,
        payload: Any,
        queue: str,
        tags: list[str],
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.payload = payload
        self.queue = queue
        self.tags = tags
        self._log: RunLogger | None = None

    @property
    def log(self) -> RunLogger:
        if self._log is None:  # built on first use: most no-op runs never log
            self._log = RunLogger(task_logger, str(self.run_id), self.task_id, self.attempt)
        return self._log

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id}, task_id={self.task_id!r}, attempt={self.attempt})"

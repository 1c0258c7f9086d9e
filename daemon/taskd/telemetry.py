"""What the daemon's parts report for its metrics, without depending on how they are exported.

The parts call these hooks on their paths; the admin server's metrics (taskd.admin.metrics)
override them. This base ignores everything, so a daemon without the admin endpoint pays
nothing for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from taskd.models import ClaimedRun, LLMCall, Outcome


class Telemetry:
    def claimed(self, runs: Sequence[ClaimedRun]) -> None:
        """A claim returned these runs (each starts an attempt)."""

    def ended(self, outcomes: Sequence[Outcome], written: Mapping[uuid.UUID, str]) -> None:
        """A batch of outcomes was written: ``written`` maps the runs whose write won to their
        new status (completed, failed, canceled, queued for a retry)."""

    def changed(self, kind: str, task_id: str) -> None:
        """A run changed outside the hot path (maintenance: expired, rescued...)."""

    def db_error(self, component: str) -> None:
        """A database call of ``component`` (claim, complete, heartbeat...) failed."""

    def log_lines_dropped(self, count: int) -> None:
        """Run log lines that could not be stored (the buffer was full)."""

    def llm_calls(self, calls: Sequence[LLMCall]) -> None:
        """Records of LLM calls were stored (their tokens and cost count from now)."""

    def hook_request(self, source: str, result: str) -> None:
        """The webhook listener answered a request of ``source`` (a configured name, or
        ``(unknown)``): ``accepted``, ``duplicate``, or why it was refused."""

    def served_versions(self, versions: Mapping[str, str]) -> None:
        """The version of each task this daemon serves (task id: version), once at start."""

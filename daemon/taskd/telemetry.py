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


class LateTelemetry(Telemetry):
    """Telemetry whose exporter comes later: the admin endpoint's metrics are built once the
    daemon's first claims are made (its code loads then), and the reports made before are
    kept and handed to them in order, so that none is missing from the counts."""

    def __init__(self) -> None:
        self._target: Telemetry | None = None
        self._kept: list[tuple[str, tuple[object, ...]]] = []

    def attach(self, target: Telemetry) -> None:
        kept, self._kept = self._kept, []
        for name, args in kept:
            getattr(target, name)(*args)
        self._target = target

    def _report(self, name: str, *args: object) -> None:
        if self._target is not None:
            getattr(self._target, name)(*args)
        else:
            self._kept.append((name, args))

    def claimed(self, runs: Sequence[ClaimedRun]) -> None:
        if self._target is not None:  # the hot path: no lookup by name once attached
            self._target.claimed(runs)
        else:
            self._kept.append(("claimed", (runs,)))

    def ended(self, outcomes: Sequence[Outcome], written: Mapping[uuid.UUID, str]) -> None:
        if self._target is not None:
            self._target.ended(outcomes, written)
        else:
            self._kept.append(("ended", (outcomes, written)))

    def changed(self, kind: str, task_id: str) -> None:
        self._report("changed", kind, task_id)

    def db_error(self, component: str) -> None:
        self._report("db_error", component)

    def log_lines_dropped(self, count: int) -> None:
        self._report("log_lines_dropped", count)

    def llm_calls(self, calls: Sequence[LLMCall]) -> None:
        self._report("llm_calls", calls)

    def hook_request(self, source: str, result: str) -> None:
        self._report("hook_request", source, result)

    def served_versions(self, versions: Mapping[str, str]) -> None:
        self._report("served_versions", versions)

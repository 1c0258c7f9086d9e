"""What the daemon's parts report for its metrics, without depending on how they are exported.

The parts call these hooks on their paths; the admin server's metrics (taskd.admin.metrics)
override them. This base ignores everything, so a daemon without the admin endpoint pays
nothing for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    kept and handed to them in order, so that none is missing from the counts.

    Every public hook of Telemetry is forwarded (the class is completed below), so a hook
    added there later reaches the exporter without a line here; only the hot path's two are
    written out, to skip the lookup by name once attached."""

    def __init__(self) -> None:
        self._target: Telemetry | None = None
        self._kept: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def attach(self, target: Telemetry) -> None:
        kept, self._kept = self._kept, []
        for name, args, kwargs in kept:
            getattr(target, name)(*args, **kwargs)
        self._target = target

    def _report(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self._target is not None:
            getattr(self._target, name)(*args, **kwargs)
        else:
            self._kept.append((name, args, kwargs))

    def claimed(self, runs: Sequence[ClaimedRun]) -> None:
        if self._target is not None:
            self._target.claimed(runs)
        else:
            self._kept.append(("claimed", (runs,), {}))

    def ended(self, outcomes: Sequence[Outcome], written: Mapping[uuid.UUID, str]) -> None:
        if self._target is not None:
            self._target.ended(outcomes, written)
        else:
            self._kept.append(("ended", (outcomes, written), {}))


def hooks() -> list[str]:
    """The public hooks of Telemetry, in the order the class defines them."""
    return [name for name, value in vars(Telemetry).items() if callable(value) and name[0] != "_"]


def _forward(name: str) -> Callable[..., None]:
    def forward(self: LateTelemetry, *args: Any, **kwargs: Any) -> None:
        self._report(name, *args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    forward.__doc__ = getattr(Telemetry, name).__doc__
    return forward


for _name in hooks():
    if _name not in vars(LateTelemetry):
        setattr(LateTelemetry, _name, _forward(_name))

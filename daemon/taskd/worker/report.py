"""The reconciliation report: what a daemon's start-up reconciliation, or one of its rescues,
found. It becomes one log line with counts and the worker's ``last_report`` (taskd status,
/api/workers).

Counts are exact; the run ids (the first ``MAX_IDS`` of each kind, per task) and the tasks
(the ``MAX_TASKS`` with the most runs of each kind) are capped, so a rescue of a million runs
still writes a small row and a short line.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_IDS = 20
MAX_TASKS = 20
MAX_WORKERS = 20

KINDS = ("handed_back", "failed", "canceled", "expired", "unknown_task", "version_unavailable")
"""handed_back: runs of gone workers (or with an expired lease) back in the queue; failed: the
same with their attempts used up (WorkerLost); canceled: the same with a cancel requested;
expired: queued runs past their ttl; unknown_task: runs failed because no daemon served their
task within unknown_task_timeout; version_unavailable: runs pinned to a version that no daemon
served within version_timeout (worker/version_failer.py)."""

RESCUED_KINDS = {"queued": "handed_back", "failed": "failed", "canceled": "canceled"}


@dataclass
class Report:
    trigger: str
    """``startup`` (the reconciliation before READY) or ``rescue`` (a later maintenance pass)."""
    gone_workers: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    by_task: dict[str, Counter[str]] = field(default_factory=dict)
    run_ids: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per kind, per task: the first run ids (MAX_IDS of each kind in all)."""

    def add(self, kind: str, run_id: uuid.UUID, task_id: str) -> None:
        self.counts[kind] += 1
        self.by_task.setdefault(kind, Counter())[task_id] += 1
        if self.counts[kind] <= MAX_IDS:
            self.run_ids.setdefault(kind, {}).setdefault(task_id, []).append(str(run_id))

    @property
    def empty(self) -> bool:
        return not self.gone_workers and not any(self.counts.values())

    def summary(self) -> str:
        parts = [f"{self.counts[k]} {k.replace('_', ' ')}" for k in KINDS if self.counts[k]]
        return ", ".join(parts) if parts else "nothing found"

    def fields(self) -> dict[str, Any]:
        """The structured fields of the log line (also the stored report, with ``at``)."""
        by_task: dict[str, dict[str, int]] = {}
        for kind, tasks in self.by_task.items():
            top = dict(tasks.most_common(MAX_TASKS))
            rest = sum(tasks.values()) - sum(top.values())
            if rest:
                top["(other tasks)"] = rest
            by_task[kind] = top
        return {
            "trigger": self.trigger,
            "gone_workers": self.gone_workers[:MAX_WORKERS],
            "gone_worker_count": len(self.gone_workers),
            "counts": {kind: self.counts[kind] for kind in KINDS},
            "by_task": by_task,
            "run_ids": self.run_ids,
        }

    def stored(self) -> dict[str, Any]:
        return {"at": datetime.now(UTC).isoformat(), **self.fields()}

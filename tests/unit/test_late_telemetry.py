"""LateTelemetry (taskd.telemetry): the reports a daemon makes before its admin endpoint's
metrics exist (they are built after the first claims) reach them, in order, once attached."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from taskd.telemetry import LateTelemetry, Telemetry


class Recorder(Telemetry):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def claimed(self, runs: Sequence[Any]) -> None:
        self.calls.append(("claimed", list(runs)))

    def ended(self, outcomes: Sequence[Any], written: Mapping[uuid.UUID, str]) -> None:
        self.calls.append(("ended", (list(outcomes), dict(written))))

    def changed(self, kind: str, task_id: str) -> None:
        self.calls.append(("changed", (kind, task_id)))

    def served_versions(self, versions: Mapping[str, str]) -> None:
        self.calls.append(("served_versions", dict(versions)))

    def db_error(self, component: str) -> None:
        self.calls.append(("db_error", component))


def test_reports_before_the_exporter_exists_reach_it_in_order_then_pass_straight() -> None:
    late = LateTelemetry()
    run = uuid.uuid4()
    late.served_versions({"t": "1"})
    late.claimed(["r1", "r2"])  # type: ignore[list-item]
    late.ended(["o1"], {run: "completed"})  # type: ignore[list-item]
    late.changed("rescued", "t")
    recorder = Recorder()
    late.attach(recorder)
    assert recorder.calls == [
        ("served_versions", {"t": "1"}),
        ("claimed", ["r1", "r2"]),
        ("ended", (["o1"], {run: "completed"})),
        ("changed", ("rescued", "t")),
    ]
    late.db_error("claim")
    late.claimed(["r3"])  # type: ignore[list-item]
    assert recorder.calls[-2:] == [("db_error", "claim"), ("claimed", ["r3"])]
    late.log_lines_dropped(3)  # a report the exporter ignores is still handed on, harmlessly
    assert len(recorder.calls) == 6

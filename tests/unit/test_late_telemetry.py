"""LateTelemetry (taskd.telemetry): the reports a daemon makes before its admin endpoint's
metrics exist (they are built after the first claims) reach them, in order, once attached;
every public hook of Telemetry is forwarded, including one added later."""

from __future__ import annotations

import inspect
from typing import Any

from taskd.telemetry import LateTelemetry, Telemetry, hooks


class Recorder(Telemetry):
    """Records every public hook of Telemetry, whatever hooks it has (made from the class)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name in hooks():
            calls = object.__getattribute__(self, "calls")
            return lambda *args: calls.append((name, args))
        return object.__getattribute__(self, name)


def arguments(name: str, tag: str) -> tuple[str, ...]:
    """As many distinct arguments as the hook takes."""
    count = len(inspect.signature(getattr(Telemetry, name)).parameters) - 1  # self
    return tuple(f"{name}:{tag}:{i}" for i in range(count))


def test_the_hooks_are_telemetrys_public_methods() -> None:
    names = hooks()
    assert {"claimed", "ended", "changed", "db_error", "served_versions"} <= set(names)
    assert "attach" not in names and all(not n.startswith("_") for n in names)


def test_every_hook_reaches_the_exporter_once_in_order_before_and_after_attach() -> None:
    late = LateTelemetry()
    before = [(name, arguments(name, "before")) for name in hooks()]
    for name, args in before:
        getattr(late, name)(*args)
    recorder = Recorder()
    assert recorder.calls == []
    late.attach(recorder)
    assert recorder.calls == before
    after = [(name, arguments(name, "after")) for name in reversed(hooks())]
    for name, args in after:
        getattr(late, name)(*args)
    assert recorder.calls == before + after


def test_a_hook_added_to_telemetry_later_is_forwarded_too() -> None:
    for name in hooks():
        assert name in vars(LateTelemetry), f"{name} is not forwarded by LateTelemetry"
        assert getattr(LateTelemetry, name) is not getattr(Telemetry, name)

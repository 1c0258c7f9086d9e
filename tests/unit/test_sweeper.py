"""The sweeper's pass and its errors (no database: chores that record their calls stand in).

One pass: the expirer, then every heartbeat the unknown-task failer, the rescuer and the
subscription retirer, in that order. A database error ends the pass; once the expirer has
succeeded, the heartbeat-paced chores count as started, so the ones after a failure wait for
the next heartbeat. The loop logs the error, naming the chore, and counts it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from taskd.config import WorkerSettings
from taskd.telemetry import Telemetry
from taskd.worker.sweeper import Sweeper


class Chore:
    def __init__(self, name: str, calls: list[str], fails: list[str]) -> None:
        self._name = name
        self._calls = calls
        self._fails = fails
        self.then: Callable[[], None] | None = None

    async def run_once(self) -> None:
        self._calls.append(self._name)
        if self._name in self._fails:
            self._fails.remove(self._name)  # once
            raise OSError("connection lost")
        if self.then is not None:
            self.then()
            await anyio.lowlevel.checkpoint()


class Counted(Telemetry):
    def __init__(self) -> None:
        self.db_errors: list[str] = []

    def db_error(self, component: str) -> None:
        self.db_errors.append(component)


def sweeper(
    calls: list[str], fails: list[str], settings: WorkerSettings | None = None
) -> tuple[Sweeper, Chore, Counted]:
    chores = [Chore(name, calls, fails) for name in ("expire", "fail", "rescue", "retire")]
    telemetry = Counted()
    built = Sweeper(settings or WorkerSettings(), *chores, telemetry=telemetry)  # type: ignore[arg-type]
    return built, chores[0], telemetry


async def test_a_pass_runs_the_chores_in_order_and_the_heartbeat_ones_once_per_heartbeat() -> None:
    calls: list[str] = []
    sweep, _, _ = sweeper(calls, [])
    await sweep.run_once()
    assert calls == ["expire", "fail", "rescue", "retire"]
    calls.clear()
    await sweep.run_once()
    assert calls == ["expire"], "within the heartbeat, a pass only expires"


async def test_a_failed_heartbeat_chore_ends_the_pass_the_rest_wait_a_heartbeat() -> None:
    calls: list[str] = []
    sweep, _, _ = sweeper(calls, ["fail"])
    with pytest.raises(OSError):
        await sweep.run_once()
    assert calls == ["expire", "fail"]
    calls.clear()
    await sweep.run_once()
    assert calls == ["expire"]


async def test_a_failed_expirer_leaves_the_heartbeat_chores_to_the_next_pass() -> None:
    calls: list[str] = []
    sweep, _, _ = sweeper(calls, ["expire"])
    with pytest.raises(OSError):
        await sweep.run_once()
    assert calls == ["expire"]
    calls.clear()
    await sweep.run_once()
    assert calls == ["expire", "fail", "rescue", "retire"]


async def test_the_loop_logs_and_counts_a_database_error_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskd.maintenance")
    calls: list[str] = []
    # a heartbeat as short as the tick: every pass runs every chore
    sweep, expirer, telemetry = sweeper(calls, ["rescue"], WorkerSettings(heartbeat=0.01))
    async with anyio.create_task_group() as group:

        def stop_at_the_third_pass() -> None:
            if calls.count("expire") == 3:
                group.cancel_scope.cancel()

        expirer.then = stop_at_the_third_pass
        group.start_soon(sweep.run)
    assert calls == ["expire", "fail", "rescue", "expire", "fail", "rescue", "retire", "expire"]
    assert [r.getMessage() for r in caplog.records] == [
        "maintenance failed, retrying (rescuer): connection lost"
    ]
    assert telemetry.db_errors == ["maintenance"]

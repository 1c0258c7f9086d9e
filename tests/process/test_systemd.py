"""sd_notify: the messages systemd reads, the watchdog fed by the event loop, the unit file.

systemd's side is played by a real unix datagram socket given as ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from taskd.config import Settings
from taskd.systemd import SystemdNotifier
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

UNIT = ROOT / "systemd" / "taskd.service"
UNIT_BINARY = "/opt/taskd/.venv/bin/taskd"


@pytest.fixture
def systemd_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The socket systemd would listen on, announced in ``NOTIFY_SOCKET``."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield receiver


def pending(receiver: socket.socket) -> list[str]:
    """Every message already queued on the socket, without waiting."""
    messages = []
    timeout = receiver.gettimeout()
    receiver.setblocking(False)
    try:
        while True:
            messages.append(receiver.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        receiver.settimeout(timeout)


async def collect_until(
    receiver: socket.socket, done: Callable[[list[str]], bool], timeout: float = 5.0
) -> list[str]:
    """Read messages as they come until ``done(messages)``; fail after ``timeout``."""
    messages: list[str] = []
    with anyio.fail_after(timeout):
        while not done(messages):
            messages += pending(receiver)
            await anyio.sleep(0.01)
    return messages


def test_ready_status_stopping_and_watchdog_arrive_exactly(systemd_socket: socket.socket) -> None:
    notifier = SystemdNotifier.from_environment()
    assert notifier.enabled
    assert notifier.watchdog_interval is None

    notifier.ready()
    assert systemd_socket.recv(4096) == b"READY=1"
    notifier.ready("serving 3 task(s)")
    assert systemd_socket.recv(4096) == b"READY=1\nSTATUS=serving 3 task(s)"
    notifier.status("12 executing, 40 queued")
    assert systemd_socket.recv(4096) == b"STATUS=12 executing, 40 queued"
    notifier.stopping("draining 12 run(s)")
    assert systemd_socket.recv(4096) == b"STOPPING=1\nSTATUS=draining 12 run(s)"
    notifier.stopping()
    assert systemd_socket.recv(4096) == b"STOPPING=1"
    notifier.watchdog()
    assert systemd_socket.recv(4096) == b"WATCHDOG=1"
    # A newline would end the STATUS= line and start a bogus assignment.
    notifier.status("two\nlines")
    assert systemd_socket.recv(4096) == b"STATUS=two lines"
    assert pending(systemd_socket) == []
    notifier.close()


def test_abstract_socket_name(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"taskd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = SystemdNotifier.from_environment()
        assert notifier.enabled
        notifier.ready("up")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    notifier = SystemdNotifier.from_environment()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_a_missing_socket_never_raises_and_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = SystemdNotifier.from_environment()
    with caplog.at_level(logging.WARNING, logger="taskd.systemd"):
        notifier.ready()
        notifier.watchdog()
        notifier.status("still here")
    warnings = [r for r in caplog.records if r.name == "taskd.systemd"]
    assert len(warnings) == 1, caplog.text
    assert "sd_notify" in warnings[0].getMessage()


def test_watchdog_interval_is_half_of_watchdog_usec(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    assert SystemdNotifier.from_environment().watchdog_interval == pytest.approx(0.1)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SystemdNotifier.from_environment().watchdog_interval == pytest.approx(0.1)
    # Inherited from a parent that systemd watches: not ours to feed.
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SystemdNotifier.from_environment().watchdog_interval is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.delenv("WATCHDOG_USEC")
    assert SystemdNotifier.from_environment().watchdog_interval is None


async def test_run_watchdog_feeds_the_watchdog_and_sends_status(
    systemd_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    notifier = SystemdNotifier.from_environment()
    counter = iter(range(1000))
    async with anyio.create_task_group() as group:
        group.start_soon(notifier.run_watchdog, lambda: f"status {next(counter)}", 0.2)
        # ...and a tick measured a lag near zero: the lag is the lateness of a wake-up, not
        # the tick itself (a condition a busy machine meets sooner or later, not a bound)
        messages = await collect_until(
            systemd_socket,
            lambda m: (
                m.count("WATCHDOG=1") >= 4 and "STATUS=status 1" in m and notifier.last_lag < 0.05
            ),
        )
        group.cancel_scope.cancel()
    assert messages.count("WATCHDOG=1") >= 4, messages
    assert set(messages) - {"WATCHDOG=1"} >= {"STATUS=status 0", "STATUS=status 1"}, messages
    notifier.close()


async def test_a_blocked_loop_misses_the_watchdog_and_is_reported(
    systemd_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    notifier = SystemdNotifier.from_environment()
    caplog.set_level(logging.WARNING, logger="taskd.loop")
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: notifier.run_watchdog(lag_warning=0.3))
        await collect_until(systemd_socket, lambda m: m.count("WATCHDOG=1") >= 2)
        time.sleep(0.6)  # a task running blocking code on the loop  # noqa: ASYNC251
        # Nothing on the loop ran during the block, so nothing fed the watchdog.
        assert pending(systemd_socket) == []
        # fed again once the loop is free, and a later tick measures a normal lag
        await collect_until(systemd_socket, lambda m: "WATCHDOG=1" in m and notifier.last_lag < 0.5)
        group.cancel_scope.cancel()
    assert notifier.max_lag >= 0.5
    assert notifier.last_lag < 0.5
    blocked = [r.getMessage() for r in caplog.records if r.name == "taskd.loop"]
    assert len(blocked) == 1, blocked
    assert blocked[0].startswith("event loop blocked for 0.")
    assert "anyio.to_thread" in blocked[0]
    notifier.close()


async def test_lag_is_measured_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    class Counting(SystemdNotifier):
        ticks = 0

        def _record_lag(self, lag: float, threshold: float) -> None:
            self.ticks += 1
            super()._record_lag(lag, threshold)

    notifier = Counting.from_environment()
    assert isinstance(notifier, Counting)

    async def ticked(more_than: int) -> bool:
        return notifier.ticks > more_than

    async with anyio.create_task_group() as group:
        group.start_soon(notifier.run_watchdog)
        await wait_for(lambda: ticked(0))  # the watchdog loop runs
        before = notifier.ticks
        time.sleep(0.5)  # noqa: ASYNC251
        await wait_for(lambda: ticked(before))  # and ticked after the block
        group.cancel_scope.cancel()
    assert notifier.max_lag >= 0.25


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_gives_the_drain_time_to_finish() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"][0].startswith(UNIT_BINARY + " run ")
    # The drain gets shutdown_grace, then the final flush up to 10 s, then the admin server
    # and the pools close (5 s each at most), before SIGKILL.
    grace = Settings().worker.shutdown_grace
    assert float(unit["TimeoutStopSec"][0]) > grace + 25
    # The daemon feeds the watchdog at half the period; a block shorter than that is survived.
    assert float(unit["WatchdogSec"][0]) >= 20


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail(
            "systemd-analyze is not installed: install it (Debian: apt-get install "
            "--no-install-recommends systemd; .ci/run does) to check systemd/taskd.service"
        )
    binary = ROOT / ".venv" / "bin" / "taskd"
    assert binary.exists(), f"{binary} is missing: run `make test` to build the venv"
    # verify checks that ExecStart's binary exists: point it at this checkout's.
    unit = tmp_path / "taskd.service"
    text = UNIT.read_text()
    assert UNIT_BINARY in text
    unit.write_text(text.replace(UNIT_BINARY, str(binary)))
    result = subprocess.run(
        [tool, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        # Messages to stderr even when it is a journal stream (CI under systemd).
        env={**os.environ, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_LOG_LEVEL": "info"},
    )
    output = result.stdout + result.stderr
    print(output)
    # An unknown or misspelt key is only a message (exit 0): any line about the unit fails.
    about_unit = [line for line in output.splitlines() if "taskd.service" in line]
    assert result.returncode == 0, output
    assert about_unit == [], output

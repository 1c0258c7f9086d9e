"""The real daemon speaks sd_notify: READY after reconciliation and LISTEN, STATUS, a
watchdog fed from the event loop (silent while a task blocks it), STOPPING on SIGTERM."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from taskd import Client
from tests.support.daemon_process import DAEMON_DEFAULTS, daemons
from tests.support.paths import ROOT
from tests.support.waiting import wait_for, wait_for_run

TASKS = """
import time
from taskd import task

@task(id="notify.block")
async def block(payload, ctx):
    time.sleep(1.0)  # blocks the event loop on purpose
    return "done"
"""


class Receiver:
    """Collects (monotonic time, message) from a unix datagram socket, as systemd would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def times(self, prefix: str) -> list[float]:
        return [at for at, line in list(self.messages) if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


async def test_the_daemon_notifies_systemd(database: str, tmp_path: Path) -> None:
    (tmp_path / "notify_tasks.py").write_text(TASKS)
    receiver = Receiver(tmp_path / "notify.sock")
    try:
        async with daemons() as group:
            daemon = await group.start(
                database,
                cwd=tmp_path,
                **(DAEMON_DEFAULTS | {"log_format": "json"}),
                NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
                WATCHDOG_USEC="200000",  # WatchdogSec=0.2s: a WATCHDOG=1 every 0.1 s
                TASKD_TASKS__MODULES='["notify_tasks"]',
                PYTHONPATH=str(ROOT),
            )
            await wait_for(lambda: _has(receiver, "READY=1"), timeout=20)
            async with Client.connect(database) as client:
                worker = await client.health()
                assert len(worker.workers) == 1, "READY=1 comes after the worker is registered"
                ready_status = [m for _, m in receiver.messages if m.startswith("STATUS=")]
                assert ready_status and "running" in ready_status[0]
                await wait_for(lambda: _count(receiver, "WATCHDOG=1", 3), timeout=5)

                run_id = await client.trigger("notify.block", {})
                run = await wait_for_run(client, run_id, timeout=10)
                assert run.output == "done"
                watchdogs = receiver.times("WATCHDOG=1")
                gaps = [b - a for a, b in itertools.pairwise(watchdogs)]
                assert max(gaps) >= 0.9, "no WATCHDOG=1 while the task blocked the loop"
                await wait_for(
                    lambda: _count(receiver, "WATCHDOG=1", len(watchdogs) + 2), timeout=5
                )

            code = await daemon.stop(signal.SIGTERM, timeout=20)
            assert code == 0
            assert receiver.times("STOPPING=1"), receiver.messages
            assert receiver.times("READY=1")[0] < receiver.times("STOPPING=1")[0]
    finally:
        receiver.close()


async def _has(receiver: Receiver, prefix: str) -> bool:
    return bool(receiver.times(prefix))


async def _count(receiver: Receiver, prefix: str, n: int) -> bool:
    return len(receiver.times(prefix)) >= n


SLOW_TASKS = """
import anyio
from taskd import task

@task(id="drain.slow")
async def slow(payload, ctx):
    await anyio.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_second_signal_cancels_at_once(
    database: str, tmp_path: Path, signum: signal.Signals
) -> None:
    (tmp_path / "slow_tasks.py").write_text(SLOW_TASKS)
    async with daemons() as group, Client.connect(database) as client:
        daemon = await group.start(
            database,
            cwd=tmp_path,
            # the first SIGINT alone would wait a minute
            **(DAEMON_DEFAULTS | {"shutdown_grace": "60s"}),
            TASKD_TASKS__MODULES='["slow_tasks"]',
            PYTHONPATH=str(ROOT),
        )
        await wait_for(lambda: _workers(client), timeout=20)
        run_id = await client.trigger("drain.slow", {})
        await wait_for(lambda: _executing(client, run_id), timeout=10)
        daemon.process.send_signal(signum)
        marker = f"received {signum.name}: draining"
        await daemon.wait_for_line(lambda line: marker in line, timeout=10)
        assert daemon.alive, "the first signal drains: the run keeps running"
        stopped_at = time.monotonic()
        code = await daemon.stop(signum, timeout=30)
        # far sooner than the grace (60 s): the bound leaves a busy machine 20 s
        assert code == 0 and time.monotonic() - stopped_at < 20
        run = await client.get_run(run_id)
    assert run.status == "queued" and run.attempt == 0, "handed back, attempt not spent"


async def _workers(client: Client) -> bool:
    return bool((await client.health()).workers)


async def _executing(client: Client, run_id: object) -> bool:
    return (await client.get_run(run_id)).status == "executing"  # type: ignore[arg-type]

"""`taskd run` as its own process: readiness, log lines (JSON and text), clean stop on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from taskd import Client, RunStatus
from tests.support.daemon_process import DAEMON_DEFAULTS, DaemonProcess, daemons
from tests.support.waiting import wait_for_run

TASK_MODULE = """
import anyio

from taskd import task


@task(id="logs.hello")
async def hello(payload, ctx):
    ctx.log.info("hello", n=1)
    return {"said": "hello"}


@task(id="logs.slow")
async def slow(payload, ctx):
    ctx.log.info("slow started")
    await anyio.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}
"""


@asynccontextmanager
async def taskd_run(database: str, folder: Path, **env: str) -> AsyncIterator[DaemonProcess]:
    """`taskd run` in ``folder`` with the log tasks and the daemon's own defaults (the log
    format "auto" among them): only the poll interval is shortened."""
    (folder / "log_tasks.py").write_text(TASK_MODULE)
    async with daemons() as group:
        yield await group.start(
            database,
            cwd=folder,
            **(DAEMON_DEFAULTS | {"poll_interval": "0.2"}),
            TASKD_TASKS__MODULES='["log_tasks"]',
            **env,
        )


def is_ready(line: str) -> bool:
    return "taskd ready" in line


async def executing_runs(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE status = 'executing'"
        )
    finally:
        await connection.close()
    return count


async def test_json_lines_and_a_clean_stop_on_sigterm(
    database: str, client: Client, tmp_path: Path
) -> None:
    async with taskd_run(database, tmp_path) as daemon:
        await daemon.wait_for_line(is_ready)
        hello_id = await client.trigger("logs.hello", {})
        hello = await wait_for_run(client, hello_id)
        assert hello.status is RunStatus.COMPLETED, daemon.output()
        assert hello.output == {"said": "hello"}

        slow_id = await client.trigger("logs.slow", {"seconds": 0.5})
        await daemon.wait_for_line(lambda line: "slow started" in line)
        code = await daemon.stop(signal.SIGTERM)

    assert code == 0, daemon.output()
    assert not any("Traceback" in line for line in daemon.stderr), daemon.output()
    assert await executing_runs(database) == 0
    slow = await client.get_run(slow_id)
    assert slow.status is RunStatus.COMPLETED, "the running attempt finished within the grace"
    assert slow.output == {"slept": 0.5}

    records: list[dict[str, Any]] = []
    for line in daemon.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{daemon.output()}") from None
        assert isinstance(record, dict), line
        assert {"ts", "level", "msg"} <= record.keys(), line
        datetime.fromisoformat(record["ts"])
        assert record["level"] in {"debug", "info", "warning", "error"}, line
        records.append(record)
    assert any(r["msg"].startswith("taskd ready") for r in records)
    said = [r for r in records if r["msg"] == "hello"]
    assert len(said) == 1, daemon.output()
    assert said[0]["run_id"] == str(hello_id)
    assert said[0]["task"] == "logs.hello"
    assert said[0]["attempt"] == 1
    assert said[0]["n"] == 1
    started = next(r for r in records if r["msg"] == "slow started")
    assert (started["run_id"], started["task"]) == (str(slow_id), "logs.slow")


async def test_text_format_gives_readable_lines(
    database: str, client: Client, tmp_path: Path
) -> None:
    async with taskd_run(database, tmp_path, TASKD_LOG__FORMAT="text") as daemon:
        await daemon.wait_for_line(is_ready)
        run_id = await client.trigger("logs.hello", {})
        assert (await wait_for_run(client, run_id)).status is RunStatus.COMPLETED
        said = await daemon.wait_for_line(lambda line: " hello " in line)
        code = await daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.output()
    for line in daemon.stdout:
        try:
            json.loads(line)
        except ValueError:
            continue
        raise AssertionError(f"a JSON line in text format: {line!r}")
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO +hello ", said), said
    for field in (f"run_id={run_id}", "task=logs.hello", "attempt=1", "n=1"):
        assert field in said, said


async def test_sigterm_right_after_ready_stops_cleanly(database: str, tmp_path: Path) -> None:
    """Once taskd has said it is ready, SIGTERM must drain it, not kill it outright.

    A supervisor (systemd, a deploy script) may stop a daemon the moment it reports ready:
    the signal is sent as soon as the ready line is read. The window is narrow, so the
    daemon is started a few times.
    """
    for start in range(3):
        async with taskd_run(database, tmp_path) as daemon:
            daemon.signal_on = (is_ready, signal.SIGTERM)
            await daemon.wait_for_line(is_ready)
            code = await daemon.stop(None)
        assert code == 0, f"start {start + 1}: exit code {code} (-15: killed by the signal)\n" + (
            daemon.output()
        )
        assert any("taskd stopped" in line for line in daemon.stdout), daemon.output()
    connection = await asyncpg.connect(database)
    try:
        running = await connection.fetchval(
            "SELECT count(*) FROM taskd.workers WHERE stopped_at IS NULL"
        )
    finally:
        await connection.close()
    assert running == 0, "every stopped daemon recorded its stop"

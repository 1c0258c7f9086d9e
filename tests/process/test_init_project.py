"""A new user's first hour, black-box: the built wheel pip-installed into a fresh venv, `taskd
init` in an existing project, `taskd dev` in the background, `taskd tasks list --json`, and a
run triggered from the project's own script through `taskd.Client.connect()` (no argument: the
project's configured database, here the embedded server `taskd dev` runs) that completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.support.daemon_process import DaemonProcess
from tests.support.wheel import build_wheel, clean_env, venv_with

pytestmark = pytest.mark.timeout(900)

TRIGGER_SCRIPT = '''\
"""The application's side: trigger the sample task, wait for its run to end, print it."""
import asyncio
import json
import sys
import time

import taskd


async def main() -> None:
    async with taskd.Client.connect() as client:
        run_id = await client.trigger("hello", {"name": "Ada"})
        deadline = time.monotonic() + 60
        run = await client.get_run(run_id)
        while run.status.value not in ("completed", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            run = await client.get_run(run_id)
    print(json.dumps({
        "taskd": taskd.__file__,
        "status": run.status.value,
        "output": run.output,
        "attempts": len(run.attempts),
    }))


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Not under pytest's basetemp: the embedded server runs as another user when the tests run
    as root, and a concurrent pytest session resets its basetemp's folder to mode 0700, which
    that user then cannot traverse (tests/conftest.py keeps its server out of it too)."""
    path = Path(tempfile.mkdtemp(prefix="taskd-init-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def venv_bin(workdir: Path) -> Path:
    """A fresh venv with taskd installed from its wheel, as `pip install taskd` would."""
    (workdir / "build").mkdir()
    wheel = build_wheel(workdir / "build")
    return venv_with(wheel, workdir / "venv")


@pytest.fixture
def project(workdir: Path) -> Path:
    """An existing project: a pyproject.toml, a package in src/, a .gitignore, a script."""
    root = workdir / "shop"
    (root / "src" / "shop").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "0.1.0"\n')
    (root / "src" / "shop" / "__init__.py").write_text("")
    (root / ".gitignore").write_text("__pycache__/\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "trigger_hello.py").write_text(TRIGGER_SCRIPT)
    return root


def run(command: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


async def test_taskd_init_then_dev_then_a_run_triggered_from_the_app_completes(
    venv_bin: Path, project: Path
) -> None:
    taskd = str(venv_bin / "taskd")
    before = run([taskd, "tasks", "list"], project)
    assert before.returncode == 2, before
    assert before.stderr.count("\n") == 1 and "run taskd init" in before.stderr, before

    init = run([taskd, "init"], project)
    assert init.returncode == 0, init
    assert "taskd dev" in init.stdout
    assert (project / "taskd.toml").is_file()
    assert (project / "src" / "shop" / "tasks.py").is_file()
    assert ".taskd/" in (project / ".gitignore").read_text().splitlines()

    again = run([taskd, "init"], project)
    assert again.returncode == 1
    assert again.stderr == "taskd: taskd.toml exists; not overwriting it (--force replaces it)\n"

    # from a folder below the root, as a user in their package's folder: the config is found
    listed = run([taskd, "tasks", "list", "--json"], project / "src" / "shop")
    assert listed.returncode == 0, listed
    (hello,) = json.loads(listed.stdout)
    assert hello["id"] == "hello"
    assert hello["module"] == "shop.tasks"
    assert hello["retry"]["max_attempts"] == 3

    async with dev_daemon(taskd, project) as daemon:
        await daemon.wait_for_line(lambda line: "taskd ready" in line, timeout=120)
        with anyio.fail_after(120):
            done = await anyio.run_process(
                [str(venv_bin / "python"), "scripts/trigger_hello.py"],
                cwd=project,
                env=clean_env(),
                check=False,
            )
        assert done.returncode == 0, done.stderr.decode()
        result = json.loads(done.stdout.decode().splitlines()[-1])
        assert Path(result["taskd"]).is_relative_to(venv_bin.parent), "not the installed taskd"
        assert result == result | {
            "status": "completed",
            "output": {"greeting": "Hello, Ada!"},
            "attempts": 1,
        }, daemon.output()
        assert any("saying hello" in line for line in daemon.stdout), daemon.output()

        code = await daemon.stop(signal.SIGTERM, timeout=60)
        assert code == 0, daemon.output()
    # the last process using the embedded server stopped it
    assert not (project / ".taskd" / "pgdata" / "postmaster.pid").exists()


@asynccontextmanager
async def dev_daemon(taskd: str, project: Path) -> AsyncIterator[DaemonProcess]:
    """`taskd dev` in the project's root, its output read as it comes; on the way out it is
    SIGKILLed if still running, and so is an embedded server it left behind."""
    # another test run may hold the admin port of the written config
    env = clean_env(TASKD_ADMIN__LISTEN="127.0.0.1:0")
    process = await anyio.open_process([taskd, "dev"], cwd=project, env=env)
    daemon = DaemonProcess(process, "taskd dev")
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(daemon.pump, process.stdout, daemon.stdout)
            group.start_soon(daemon.pump, process.stderr, daemon.stderr)
            try:
                yield daemon
            finally:
                await daemon.kill()
    finally:
        _stop_leftover_server(project / ".taskd" / "pgdata")


def _stop_leftover_server(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL under ``data_dir`` if a failure left it running."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
    except (ProcessLookupError, ValueError, IndexError):
        pass

"""The wheel a user installs: one top-level package, `taskd`, with its SQL and its type marker,
and the `taskd` command pointing into it. The repository's own task modules (tasks/) stay out."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.console_files import console_files
from tests.support.paths import ROOT

NOT_SOURCES = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".taskd",
    ".*_cache",
    "test-artifacts",
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # from a copy of the sources: setuptools reuses an in-tree build/ folder, whose stale files
    # (a module or migration deleted since) would end up in the wheel
    source = tmp_path_factory.mktemp("source") / "taskd"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=280,
    )
    (built,) = out.glob("taskd-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_exactly_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {top for top in tops if top.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert tops - dist_info == {"taskd"}
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["taskd"]


def test_the_wheel_carries_its_sql_and_type_marker(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "taskd/py.typed" in names
    assert "taskd/store/runs.sql" in names
    assert "taskd/store/schema.sql" in names
    folder = "taskd/store/migrations/"
    migrations = sorted(Path(n).name for n in names if n.startswith(folder) and n.endswith(".sql"))
    on_disk = sorted(p.name for p in (ROOT / "daemon/taskd/store/migrations").glob("*.sql"))
    assert migrations == on_disk
    assert not any(n.startswith(("tasks/", "tests/", "bench/", "daemon/")) for n in names)


def test_the_wheel_carries_the_console(wheel: zipfile.ZipFile) -> None:
    """Every file of the console (admin/console/: HTML, CSS, the ES modules), as they are in
    the checkout: no build step."""
    names = set(wheel.namelist())
    shipped = sorted(
        n.removeprefix("taskd/admin/console/")
        for n in names
        if n.startswith("taskd/admin/console/") and not n.endswith("/")
    )
    assert shipped == console_files()
    assert {"index.html", "login.html", "console.css", "js/app.js", "js/lib.js"} <= set(shipped)
    for name in shipped:
        on_disk = (ROOT / "daemon/taskd/admin/console" / name).read_bytes()
        assert wheel.read(f"taskd/admin/console/{name}") == on_disk, name


def test_the_command_runs_the_package(wheel: zipfile.ZipFile) -> None:
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "taskd = taskd.cli:main" in text

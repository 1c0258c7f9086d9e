"""The wheel a user installs, built from a copy of the checkout's sources, and a fresh venv
with it installed (for black-box tests of the installed command)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def build_wheel(workdir: Path, timeout: float = 280) -> Path:
    """Build taskd's wheel into ``workdir``; returns its path.

    From a copy of the sources: setuptools reuses an in-tree build/ folder, whose stale files
    (a module or migration deleted since) would end up in the wheel.
    """
    source = workdir / "source" / "taskd"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    out = workdir / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    (built,) = out.glob("taskd-*.whl")
    return built


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the test's TASKD_ variables, no virtualenv or
    PYTHONPATH leaking the checkout's packages into the venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKD_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update(extra)
    return env


def venv_with(wheel: Path, venv: Path, timeout: float = 400) -> Path:
    """A fresh venv (``python -m venv``) with ``wheel`` installed by pip, its dependencies from
    the package registries (pip's cache reused); returns its bin/ folder. A failed install
    (no network, say) raises: the test fails, it does not skip."""
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120
    )
    bin_dir = venv / "bin"
    done = subprocess.run(
        [str(bin_dir / "pip"), "install", "--disable-pip-version-check", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )
    if done.returncode != 0:
        raise AssertionError(f"pip install of {wheel.name} failed:\n{done.stdout}\n{done.stderr}")
    return bin_dir

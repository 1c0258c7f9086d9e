"""The code's version of each task this daemon serves (README: "Versions: runs pinned to their
code").

A task's version is its ``@task(version=...)``, else the deployment's: ``[worker] version``,
else one computed at start-up from the code itself:

- the version of the installed distribution named like the top-level package of the first
  module of ``[tasks] modules`` (``myproject`` for ``myproject.tasks``: a project installed
  with pip, even editable), else taskd's own version;
- plus ``+g<commit>`` (the short hash from ``git rev-parse --short HEAD`` run in the folder of
  that module) when the module's folder is in a git checkout; no git, or no checkout: the
  version alone, never an error.

So ``1.4.0+g3f2a9c1``: a new commit deployed is a new version. A run records the version that
first started it (the claim writes it); the claim then gives a started run with durable state
only to a daemon serving that version (``[worker] version_policy = "pinned"``, the default).
"""

from __future__ import annotations

import copy
import functools
import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from taskd.config import Settings
from taskd.sdk.registry import Registry
from taskd.sdk.task import TaskDefinition

log = logging.getLogger("taskd.daemon")

GIT_TIMEOUT = 2.0  # seconds: a start-up must not hang on a slow or locked repository


@functools.cache
def taskd_package_version() -> str:
    try:
        return metadata.version("taskd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def distribution_version(module: str) -> str | None:
    """The version of the installed distribution named like ``module``'s top-level package
    (``myproject`` for ``myproject.tasks``; ``-`` and ``_`` alike), or None (a module of a
    checkout that is not installed). By name, not by a scan of every installed distribution's
    files (``packages_distributions``: 150 ms at each start)."""
    top = module.split(".", 1)[0]
    for name in dict.fromkeys((top, top.replace("_", "-"))):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # a broken installation's metadata: no version from it
            return None
    return None


def git_commit(folder: Path) -> str | None:
    """The short commit hash of the checkout ``folder`` is in, or None (no git, no checkout,
    git failing or too slow)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    if done.returncode != 0 or not commit or not commit.isalnum():
        return None
    return commit


def module_folder(module: str) -> Path | None:
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    return Path(path).resolve().parent if path else None


def deployment_version(settings: Settings) -> str:
    """``[worker] version``, else the version computed from the code (see the module's doc)."""
    if settings.worker.version:
        return settings.worker.version
    modules = settings.tasks.modules
    first = modules[0] if modules else None
    version = (distribution_version(first) if first else None) or taskd_package_version()
    folder = module_folder(first) if first else None
    commit = git_commit(folder) if folder is not None else None
    if commit is None:
        return version
    # a local version label (PEP 440): one "+", the commit after the distribution's own label
    return f"{version}.g{commit}" if "+" in version else f"{version}+g{commit}"


def with_versions(registry: Registry, deployment: str) -> Registry:
    """The tasks, each with its version: its own ``@task(version=...)``, else ``deployment``.
    Copies: the definitions stay as declared."""
    return Registry(_versioned(d, deployment) for d in registry)


def _versioned(definition: TaskDefinition[Any, Any], deployment: str) -> TaskDefinition[Any, Any]:
    if definition.version is not None:
        return definition
    resolved = copy.copy(definition)
    resolved.version = deployment
    return resolved


def task_versions(registry: Registry) -> dict[str, str]:
    """Each task's version (a registry from with_versions: every task has one)."""
    return {d.id: d.version or "" for d in registry}

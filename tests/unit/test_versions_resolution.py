"""Which version a daemon serves of each task (worker/versions.py), without git: ``@task(version=
...)`` wins, else ``[worker] version``; and the settings' checks (policy, timeout, an empty
version) as one-line errors. The git commit in the default is tested with processes
(tests/process/test_versions.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskd import Context, task
from taskd.config import Settings, WorkerSettings
from taskd.sdk.registry import Registry
from taskd.worker.versions import deployment_version, distribution_version, with_versions


@task(id="versions.own", version="3.1.4")
async def own(payload: Any, ctx: Context) -> None:
    return None


@task(id="versions.deployed")
async def deployed(payload: Any, ctx: Context) -> None:
    return None


def test_a_tasks_own_version_wins_over_the_deployments() -> None:
    settings = Settings(worker=WorkerSettings(version="2026.12.1"))
    registry = with_versions(Registry([own, deployed]), deployment_version(settings))
    assert {d.id: d.version for d in registry} == {
        "versions.own": "3.1.4",
        "versions.deployed": "2026.12.1",
    }
    assert deployed.version is None, "the declared definition is left as it was"


def test_the_package_version_is_the_installed_distribution_named_like_the_module() -> None:
    assert distribution_version("taskd.worker") is not None
    assert distribution_version("no_such_project_here.tasks") is None


def test_bad_versions_and_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="version must be a non-empty string"):
        task(id="versions.bad", version="  ")
    with pytest.raises(ValidationError, match="version_policy"):
        WorkerSettings(version_policy="newest")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="version"):
        WorkerSettings(version="")
    assert WorkerSettings(version_timeout="2h").version_timeout == 7200
    assert WorkerSettings().version_policy == "pinned"

"""Two daemon processes of different versions on one database (README: "Versions: runs pinned
to their code"): a run that a v1 daemon started and that waits resumes on the v1 daemon only,
though a v2 daemon is up and idle; with v1 stopped, `taskd status` lists the v1 run the v2
daemon leaves queued, and it fails (VersionUnavailable) once version_timeout has passed. The
waits and the timeout are skipped by moving the rows' times, never slept through."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from taskd import Client, RunStatus
from taskd.config import Settings, TasksSettings
from taskd.worker.versions import deployment_version, git_commit, taskd_package_version
from tests.support.cli import taskd
from tests.support.daemon_process import daemons
from tests.support.paths import ROOT
from tests.support.waiting import wait_for, wait_for_run

SETTINGS = {
    "TASKD_TASKS__MODULES": '["tests.support.tasks.versions"]',
    "TASKD_WORKER__WAIT_THRESHOLD": "0",  # every wait suspends the run (durable)
    "TASKD_WORKER__VERSION_TIMEOUT": "1h",
}
AN_HOUR = 3600


async def status_of(db: asyncpg.Connection, run_id: uuid.UUID) -> str:
    status: str = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id)
    return status


async def skip_the_wait(db: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """The wait's wake-up moved to now, where the run recorded it (its step ``wait:1``, which
    the resumed run reads) and where the waker looks (the run's ``run_at``)."""
    async with db.transaction():
        moved = await db.execute(
            "UPDATE taskd.runs SET run_at = now() WHERE id = $1 AND status = 'waiting'", run_id
        )
        assert moved == "UPDATE 1", moved
        moved = await db.execute(
            "UPDATE taskd.steps SET result = to_jsonb($2::text)"
            " WHERE run_id = $1 AND name = 'wait:1'",
            run_id,
            datetime.now(UTC).isoformat(),
        )
        assert moved == "UPDATE 1", moved


async def test_a_v1_run_resumes_on_v1_only_and_fails_once_no_v1_daemon_is_left(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    async with daemons() as group:
        v1 = await group.start(database, TASKD_WORKER__VERSION="1.0.0", **SETTINGS)
        await v1.ready()
        # two runs, started by v1 (the only daemon yet), each waiting an hour
        first = await client.trigger("versions.waits", {"seconds": AN_HOUR})
        second = await client.trigger("versions.waits", {"seconds": AN_HOUR})
        for run_id in (first, second):
            await wait_for(lambda r=run_id: _is(db, r, "waiting"), timeout=20)
        v2 = await group.start(database, TASKD_WORKER__VERSION="2.0.0", **SETTINGS)
        await v2.ready()

        await skip_the_wait(db, first)
        run = await wait_for_run(client, first, timeout=20)
        assert run.status is RunStatus.COMPLETED, run
        assert run.version == "1.0.0"
        assert run.output == {
            "started": {"pid": v1.pid, "version": "1.0.0"},
            "resumed": {"pid": v1.pid, "version": "1.0.0"},
        }, run.output
        workers = [str(a) for a in await _attempt_workers(db, first)]
        assert workers == [v1.worker_id], (workers, v1.worker_id, v2.worker_id)
        assert [r.id for r in await client.list_runs(version="1.0.0")] == [second, first]
        assert await client.list_runs(version="2.0.0") == []

        # v1 stops; the second run's wait is over: v2 is up, idle, and leaves it queued
        assert await v1.stop() == 0
        await skip_the_wait(db, second)
        await wait_for(lambda: _is(db, second, "queued"), timeout=20)
        shown = await taskd(database, "status")
        assert shown.code == 0, shown
        listed = shown.out.split("pinned to a version no live worker serves", 1)
        assert len(listed) == 2, shown.out
        rows = [line.split() for line in listed[1].splitlines()[2:] if line.strip()]
        assert rows[0][:3] == ["versions.waits", "1.0.0", "1"], shown.out

        # an hour later (skipped: v1's stop and the run's due time moved back), it fails
        await db.execute(
            "UPDATE taskd.workers SET stopped_at = stopped_at - interval '61 minutes'"
            " WHERE id = $1::text::uuid",
            v1.worker_id,
        )
        await db.execute(
            "UPDATE taskd.runs SET run_at = run_at - interval '61 minutes' WHERE id = $1", second
        )
        run = await wait_for_run(client, second, timeout=20)
        assert run.status is RunStatus.FAILED, run
        assert run.error is not None and run.error["type"] == "VersionUnavailable", run.error
        assert "version 1.0.0 of task versions.waits" in run.error["message"], run.error
        assert await _attempt_workers(db, second) == [], "v2 never started it"
        assert v2.alive


async def _is(db: asyncpg.Connection, run_id: uuid.UUID, status: str) -> bool:
    return await status_of(db, run_id) == status


async def _attempt_workers(db: asyncpg.Connection, run_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch(
        "SELECT worker_id FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt", run_id
    )
    return [row["worker_id"] for row in rows]


def test_the_default_version_adds_the_git_commit_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = git_commit(ROOT)
    assert commit is not None and commit.isalnum(), commit
    settings = Settings(tasks=TasksSettings(modules=["tests.support.tasks.versions"]))
    import tests.support.tasks.versions  # noqa: F401 - the version comes from its folder

    assert deployment_version(settings) == f"{taskd_package_version()}+g{commit}"
    assert git_commit(tmp_path) is None, "not a checkout"
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all: the version alone
    assert deployment_version(settings) == taskd_package_version()

"""Resume after a crash at once (issue 12, item 10): the start-up reconciliation hands back the
runs of a worker whose process provably exited (same machine and pid namespace: its pid is
gone, names another process, or a zombie) without the second look at its lock RECHECK_DELAY
later, which every other worker with a free lock still gets.

Worker rows are seeded with a lock key nobody holds and an executing run each; the
reconciliation's wait is made endless, so what it hands back before the wait is told apart
from what it hands back after it without any timing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from taskd import Client, Context, RunStatus, task
from taskd.app import Daemon
from taskd.logs import FIELDS_ATTR
from taskd.sdk.registry import Registry
from taskd.worker import process_identity, reconciler
from taskd.worker.process_identity import ProcessIdentity
from tests.support.in_process import test_settings
from tests.support.runs import insert_run, sql
from tests.support.waiting import wait_for, wait_for_run

HERE = process_identity.current()
linux_only = pytest.mark.skipif(HERE is None, reason="process identities exist on Linux only")


@task(id="fast.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


def _stat(pid: int) -> tuple[str, int]:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return fields[0], int(fields[19])


def _identity(pid: int, start_time: int) -> ProcessIdentity:
    assert HERE is not None
    return ProcessIdentity(HERE.boot_id, HERE.pid_namespace, pid, start_time)


@pytest.fixture
def exited() -> ProcessIdentity:
    """The identity of a child process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    identity = _identity(child.pid, _stat(child.pid)[1])
    child.communicate()
    return identity


@pytest.fixture
def zombie() -> Iterator[ProcessIdentity]:
    """The identity of a child process that has exited and is not reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    identity = _identity(child.pid, _stat(child.pid)[1])
    assert child.stdin is not None
    child.stdin.close()
    try:
        yield identity
    finally:
        child.wait()


async def _until_zombie(pid: int) -> None:
    async def dead() -> bool:
        return _stat(pid)[0] == "Z"

    await wait_for(dead, timeout=30)


async def seed(
    db: asyncpg.Connection, process: ProcessIdentity | None, host: str | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """A worker row (its lock held by nobody) with this process identity, and a run it
    executes with an hour of lease left."""
    worker_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO taskd.workers (id, host, pid, version, concurrency, tasks, lock_key, process)"
        " VALUES ($1, $5, $2, 'test', 10, '{fast.echo}', $3, $4::text::jsonb)",
        worker_id,
        process.pid if process else 4242,
        int.from_bytes(uuid.uuid4().bytes[:7], "big"),
        orjson.dumps(process.stored()).decode() if process else None,
        host or socket.gethostname(),
    )
    run_id = await insert_run(
        db,
        task_id="fast.echo",
        payload='"seeded"',
        status="executing",
        attempt=1,
        worker_id=worker_id,
        lease_expires_at=sql("now() + interval '1 hour'"),
        attempt_started_at=sql("now()"),
        started_at=sql("now()"),
    )
    return worker_id, run_id


@linux_only
async def test_runs_of_workers_whose_process_exited_resume_before_the_second_look(
    database: str,
    client: Client,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    exited: ProcessIdentity,
    zombie: ProcessIdentity,
) -> None:
    assert HERE is not None
    await _until_zombie(zombie.pid)
    proven = {
        "exited": await seed(db, exited),
        "pid reused": await seed(db, dataclasses.replace(HERE, start_time=HERE.start_time + 1)),
        "zombie": await seed(db, zombie),
    }
    unproven = {
        "alive (this process)": await seed(db, HERE),
        "no identity": await seed(db, None),
        "another boot": await seed(db, dataclasses.replace(exited, boot_id="another-boot")),
        "another pid namespace": await seed(
            db, dataclasses.replace(exited, pid_namespace="pid:[1]")
        ),
        # a machine resumed from the same live snapshot shares the boot id; not the name
        "another host": await seed(db, exited, host="another-host"),
    }
    # The second look never comes while this test runs.
    monkeypatch.setattr(reconciler, "RECHECK_DELAY", 1e9)
    daemon = Daemon(test_settings(database), Registry([echo]), database)
    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(daemon.run, handle_signals=False))
        for name, (_, run_id) in proven.items():
            run = await wait_for_run(client, run_id, timeout=30)
            assert run.status is RunStatus.COMPLETED, name
            assert [a.outcome for a in run.attempts] == ["lost", "completed"], name
        assert not daemon.reconciled, "handed back before the reconciliation's second look"
        for name, (worker_id, run_id) in unproven.items():
            row = await db.fetchrow(
                "SELECT r.status, r.worker_id, w.stopped_at FROM taskd.runs r"
                "  JOIN taskd.workers w ON w.id = $2 WHERE r.id = $1",
                run_id,
                worker_id,
            )
            assert (row["status"], row["worker_id"]) == ("executing", worker_id), name
            assert row["stopped_at"] is None, name
        for name, (worker_id, _) in proven.items():
            stopped = await db.fetchval(
                "SELECT stopped_at FROM taskd.workers WHERE id = $1", worker_id
            )
            assert stopped is not None, name
        group.cancel_scope.cancel()  # the daemon waits in its reconciliation: no drain to wait for


@linux_only
async def test_one_report_names_the_workers_of_both_looks(
    database: str,
    client: Client,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    exited: ProcessIdentity,
    start_daemon: Any,
) -> None:
    fast_worker, fast_run = await seed(db, exited)
    slow_worker, slow_run = await seed(db, None)
    monkeypatch.setattr(reconciler, "RECHECK_DELAY", 0)  # the second look at once
    caplog.set_level(logging.INFO, logger="taskd.maintenance")
    async with start_daemon([echo]) as daemon:
        for run_id in (fast_run, slow_run):
            assert (await wait_for_run(client, run_id, timeout=30)).status is RunStatus.COMPLETED
        stored = await db.fetchval(
            "SELECT last_report FROM taskd.workers WHERE id = $1", daemon.worker_id
        )
    report = orjson.loads(stored)
    assert report["trigger"] == "startup" and report["counts"]["handed_back"] == 2
    assert report["gone_worker_count"] == 2
    assert sorted(report["run_ids"]["handed_back"]["fast.echo"]) == sorted(
        [str(fast_run), str(slow_run)]
    )
    named = " ".join(report["gone_workers"])
    assert str(fast_worker) in named and str(slow_worker) in named
    [line] = [r for r in caplog.records if r.getMessage().startswith("reconciled:")]
    fields = getattr(line, FIELDS_ATTR)
    assert fields["rescued"] == 2 and fields["exited"] == [str(fast_worker)]
    assert sorted(fields["workers"]) == sorted([str(fast_worker), str(slow_worker)])


# process identities on their own -----------------------------------------------------------


@linux_only
def test_this_process_has_an_identity_that_is_not_exited() -> None:
    assert HERE is not None and HERE.pid == os.getpid()
    assert HERE.start_time == _stat(os.getpid())[1]
    assert not process_identity.has_exited(HERE, process_identity.current())


@linux_only
async def test_exit_is_proven_only_on_the_same_machine_and_namespace(
    exited: ProcessIdentity, zombie: ProcessIdentity
) -> None:
    assert HERE is not None
    assert process_identity.has_exited(exited, HERE)
    assert process_identity.has_exited(dataclasses.replace(HERE, start_time=0), HERE)
    await _until_zombie(zombie.pid)
    assert process_identity.has_exited(zombie, HERE)
    assert not process_identity.has_exited(exited, None)  # this process has no identity
    assert not process_identity.has_exited(dataclasses.replace(exited, boot_id="b"), HERE)
    assert not process_identity.has_exited(dataclasses.replace(exited, pid_namespace="x"), HERE)


def test_a_malformed_stored_identity_proves_nothing() -> None:
    good = {"boot_id": "b", "pid_namespace": "pid:[1]", "pid": 7, "start_time": 9}
    assert ProcessIdentity.from_stored(good) == ProcessIdentity("b", "pid:[1]", 7, 9)
    for bad in (
        None,
        "text",
        [],
        {**good, "pid": 0},  # os.kill(0, 0) would signal this process group
        {**good, "pid": -1},
        {**good, "pid": True},
        {**good, "pid": "7"},
        {**good, "start_time": 9.5},
        {**good, "boot_id": ""},
        {k: v for k, v in good.items() if k != "pid_namespace"},
    ):
        assert ProcessIdentity.from_stored(bad) is None, bad

"""Runs pinned to their code's version (README: "Versions: runs pinned to their code"), at the
store: the claim records the version that started a run, gives a run with durable state (a
step, a parent) only to a daemon of its version (``pinned``) or to any (``latest``), children
inherit their version, and the version failer ends runs whose version nobody serves."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from taskd.config import WorkerSettings
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.store.waits import ChildRuns
from taskd.store.workers import WorkerRegistration
from taskd.worker.version_failer import VersionFailer
from tests.support.runs import insert_run, sql

TASK = "versions.job"
CHILD = "versions.child"


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def claim(store: Store, version: str, *, pinned: bool = True) -> list[uuid.UUID]:
    """One claim of a daemon serving both tasks at ``version``: the ids it started."""
    got = await store.runs.claim(
        [CHILD, TASK],
        None,
        10,
        uuid.uuid4(),
        60.0,
        task_versions=[version, version],
        pinned=pinned,
    )
    return [run.id for run in got.runs]


async def requeue(db: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """The run back in the queue, due now (as a retry, a woken wait or a rescue leaves it)."""
    await db.execute(
        "UPDATE taskd.runs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL,"
        " run_at = now() - interval '1 second' WHERE id = $1",
        run_id,
    )


async def record_step(db: asyncpg.Connection, run_id: uuid.UUID, name: str = "wait:1") -> None:
    await db.execute(
        "INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt,"
        " started_at, finished_at) VALUES ($1, $2, 'completed', 'null', 1, 1, now(), now())",
        run_id,
        name,
    )


async def version_of(db: asyncpg.Connection, run_id: uuid.UUID) -> str | None:
    version: str | None = await db.fetchval("SELECT version FROM taskd.runs WHERE id = $1", run_id)
    return version


async def test_a_run_records_the_version_that_started_it_and_resumes_only_there(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id=TASK)
    assert await version_of(db, run_id) is None, "no version before it starts"

    assert await claim(store, "1.0.0") == [run_id]
    assert await version_of(db, run_id) == "1.0.0"

    # it waited (a step recorded), and is due again: a v2 daemon does not take it, v1 does
    await record_step(db, run_id)
    await requeue(db, run_id)
    assert await claim(store, "2.0.0") == []
    assert await claim(store, "1.0.0") == [run_id]
    assert await version_of(db, run_id) == "1.0.0"

    # a v2 daemon whose policy is latest takes it, and the run keeps the version it started on
    await requeue(db, run_id)
    assert await claim(store, "2.0.0", pinned=False) == [run_id]
    assert await version_of(db, run_id) == "1.0.0"


async def test_a_run_with_nothing_recorded_is_retried_by_any_version_and_takes_it_over(
    store: Store, db: asyncpg.Connection
) -> None:
    run_id = await insert_run(db, task_id=TASK)
    assert await claim(store, "1.0.0") == [run_id]
    await requeue(db, run_id)  # its first attempt failed before any step: a retry

    assert await claim(store, "2.0.0") == [run_id]
    # it started over on v2 code: what it records next binds it to v2
    assert await version_of(db, run_id) == "2.0.0"
    await record_step(db, run_id)
    await requeue(db, run_id)
    assert await claim(store, "1.0.0") == []
    assert await claim(store, "2.0.0") == [run_id]


async def test_children_inherit_their_version_and_are_pinned_to_it(
    store: Store, db: asyncpg.Connection
) -> None:
    parent = await insert_run(db, task_id=TASK)
    worker_id = uuid.uuid4()
    [claimed] = (
        await store.runs.claim(
            [CHILD, TASK], None, 1, worker_id, 60.0, task_versions=["c-1", "1.0.0"]
        )
    ).runs
    assert claimed.id == parent

    async def children(step: str, version: str | None) -> uuid.UUID:
        [child] = await store.waits.create_children(
            ChildRuns(
                parent,
                worker_id,
                1,
                step,
                CHILD,
                None,
                [uuid.uuid4()],
                [orjson.dumps({})],
                [],
                None,
                version=version,
            )
        )
        return child

    # the creating daemon's version of the child's task, else the parent's own
    given = await children("children:1", "c-1")
    inherited = await children("children:2", None)
    assert await version_of(db, given) == "c-1"
    assert await version_of(db, inherited) == "1.0.0"

    # pinned from their birth: nothing recorded yet, still only a daemon of their version
    assert await claim(store, "2.0.0") == []
    assert sorted(await claim(store, "1.0.0")) == [inherited]
    assert await claim(store, "c-1") == [given]


async def register(
    store: Store, version: str, *, policy: str = "pinned", tasks: tuple[str, ...] = (TASK,)
) -> uuid.UUID:
    worker_id = uuid.uuid4()
    await store.workers.register(
        WorkerRegistration(
            worker_id,
            host="versions-host",
            pid=4242,
            version="test",
            concurrency=10,
            queues=[],
            tasks=list(tasks),
            lock_key=int.from_bytes(os.urandom(7), "big"),
            task_versions=[version] * len(tasks),
            version_policy=policy,
        )
    )
    return worker_id


async def pinned_run(db: asyncpg.Connection, version: str, due: str = "2 hours") -> uuid.UUID:
    """A queued run of TASK started at ``version``, with a recorded step, due this long ago."""
    run_id = await insert_run(
        db,
        task_id=TASK,
        version=version,
        attempt=1,
        started_at=sql("now() - interval '3 hours'"),
        run_at=sql(f"now() - interval '{due}'"),
    )
    await record_step(db, run_id)
    return run_id


async def test_runs_of_a_version_nobody_serves_are_listed_then_failed_after_the_timeout(
    store: Store, db: asyncpg.Connection
) -> None:
    v1 = await register(store, "1.0.0")
    await register(store, "2.0.0")
    stuck = await pinned_run(db, "1.0.0")
    fresh = await insert_run(db, task_id=TASK, version="1.0.0", attempt=1)  # nothing recorded
    failer = VersionFailer(store, WorkerSettings(version_timeout=3600), uuid.uuid4())

    # v1 is live: nothing is unserved, nothing fails
    assert await store.runs.version_unserved() == []
    assert await failer.run_once() == 0

    # v1 stopped a moment ago: listed at once, failed only an hour after that stop
    await db.execute("UPDATE taskd.workers SET stopped_at = now() WHERE id = $1", v1)
    [row] = await store.runs.version_unserved()
    assert (row["task_id"], row["version"], row["queued"]) == (TASK, "1.0.0", 1)
    assert await failer.run_once() == 0

    await db.execute(
        "UPDATE taskd.workers SET stopped_at = now() - interval '61 minutes' WHERE id = $1", v1
    )
    assert await failer.run_once() == 1
    run = await db.fetchrow("SELECT status, error FROM taskd.runs WHERE id = $1", stuck)
    error = orjson.loads(run["error"])
    assert run["status"] == "failed" and error["type"] == "VersionUnavailable", run
    assert "version 1.0.0 of task versions.job" in error["message"], error
    assert await db.fetchval("SELECT count(*) FROM taskd.failure_hooks WHERE run_id = $1", stuck)
    # the run with nothing recorded is anybody's: a v2 daemon may start it over
    assert await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", fresh) == "queued"
    assert await store.runs.version_unserved() == []


async def test_a_live_daemon_with_the_latest_policy_serves_every_version(
    store: Store, db: asyncpg.Connection
) -> None:
    await register(store, "3.0.0", policy="latest")
    await pinned_run(db, "1.0.0")
    failer = VersionFailer(store, WorkerSettings(version_timeout=1), uuid.uuid4())
    assert await store.runs.version_unserved() == []
    assert await failer.run_once() == 0
    off = VersionFailer(store, WorkerSettings(version_timeout=0), uuid.uuid4())
    assert await off.run_once() == 0

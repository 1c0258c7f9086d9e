"""taskd.claim_runs's short path (migration 0020) claims what its loop claims.

When one queue and one key hold every queued run and the queue has no limit, the claim takes
them in one statement instead of its loop. Here the loop is 0017's function as it was (loaded
beside the real one as taskd.claim_runs_loop), and both claim from the same rows, each in a
transaction rolled back after it: the same runs in the same order, the same trailing row (held
back, retry, cursors), and the same rows left behind (status, attempt, worker, lease, start,
version). The states cover what the pick filters (delays, other tasks, cancels, expiry,
versions and steps, parents, priorities), and what must send the claim to the loop (two keys,
two queues, paused and limited queues, a queue the daemon does not serve), where the short path
must not be taken: counted by the scans of runs_claim_idx the claim made.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from taskd.store.migrations import baseline_function, shipped_migrations
from tests.support.runs import each, insert_run, insert_runs, sql

TASKS = ["a", "b"]
VERSIONS = ["v2", None]
WORKER = uuid.UUID("00000000-0000-7000-8000-000000000001")


def loop_function() -> str:
    """0017's claim_runs (the loop alone), as taskd.claim_runs_loop."""
    [versions] = [m for m in shipped_migrations() if m.filename == "0017_versions.sql"]
    created = baseline_function(versions, "claim_runs")
    return created.replace("taskd.claim_runs(", "taskd.claim_runs_loop(", 1)


async def runs_left(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT id, status, attempt, worker_id, version, lease_expires_at IS NOT NULL,"
        " started_at IS NOT NULL, attempt_started_at IS NOT NULL FROM taskd.runs ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def claim_with(
    db: asyncpg.Connection, function: str, args: tuple[Any, ...]
) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]], int, int]:
    """What `function` returns and leaves behind (then rolled back), the rate limit's starts it
    recorded, and the scans of runs_claim_idx it made."""
    # (the pending counts of scans are flushed only between transactions: read around the call)
    scans_sql = "SELECT pg_stat_get_xact_numscans('taskd.runs_claim_idx'::regclass)"
    tx = db.transaction()
    await tx.start()
    try:
        scans_before = await db.fetchval(scans_sql)
        rows = await db.fetch(
            f"SELECT * FROM taskd.{function}($1::text[], $2::text[], $3::int, $4::uuid,"
            " $5::float8, $6::text, $7::text::jsonb, $8::text[], $9::boolean)",
            *args,
        )
        scans = await db.fetchval(scans_sql) - scans_before
        left = await runs_left(db)
        starts = await db.fetchval("SELECT coalesce(sum(n), 0) FROM taskd.queue_starts")
    finally:
        await tx.rollback()
    result = []
    for row in rows:
        out = dict(row)
        if out["cursors"] is not None:
            out["cursors"] = orjson.loads(out["cursors"])
        for key in ("payload", "metadata", "run_retry"):
            if isinstance(out[key], str):
                out[key] = orjson.loads(out[key])
        # a rate window's reopening is read from each call's own clock
        out["retry_in"] = None if out["retry_in"] is None else round(out["retry_in"], 1)
        result.append(out)
    return result, left, int(starts), int(scans)


def calls(queues: list[str] | None = None) -> list[tuple[Any, ...]]:
    """Claims as daemons make them: one run, a few, a batch; a cursor before, at and past the
    keys; the pinned and the latest policies."""
    out = []
    for limit in (1, 3, 100):
        for key_after in ({}, {"default": "k1"}, {"default": "a"}, {"default": "zz"}):
            for pinned in (True, False):
                out.append(
                    (
                        TASKS,
                        queues,
                        limit,
                        WORKER,
                        60.0,
                        None,
                        orjson.dumps(key_after).decode(),
                        VERSIONS,
                        pinned,
                    )
                )
    return out


async def one_key_of_every_kind(db: asyncpg.Connection, key: str, queue: str = "default") -> None:
    """Runs in one queue and key: due, delayed, of a task not served, canceled, expired (and
    expired but started before), of another version with and without steps or a parent,
    with priorities, with logs from an earlier attempt."""
    rng = random.Random(18)
    n = 60
    ids = await insert_runs(
        db,
        n,
        task_id=each([rng.choice(["a", "a", "b", "c"]) for _ in range(n)]),
        queue=queue,
        concurrency_key=key,
        priority=each([rng.choice([0, 0, 5, -1]) for _ in range(n)]),
        run_at=sql(
            "now() + CASE WHEN n % 7 = 0 THEN interval '1 hour' ELSE -(n * interval '1 s') END"
        ),
        expires_at=sql("CASE WHEN n % 11 = 0 THEN now() - interval '1 s' END"),
        started_at=sql("CASE WHEN n % 22 = 0 OR n % 9 = 0 THEN now() - interval '1 min' END"),
        attempt=sql("CASE WHEN n % 9 = 0 THEN 1 ELSE 0 END"),
        cancel_requested_at=sql("CASE WHEN n % 13 = 0 THEN now() END"),
        version=each([rng.choice([None, None, "v1", "v2"]) for _ in range(n)]),
    )
    parent = await insert_run(db, task_id="a", status="waiting", queue="elsewhere")
    await db.execute("UPDATE taskd.runs SET parent_id = $1 WHERE id = ANY($2)", parent, ids[3::10])
    await db.execute(
        "INSERT INTO taskd.steps (run_id, name, status, attempts, run_attempt, started_at,"
        " finished_at) SELECT id, 's', 'completed', 1, 1, now(), now()"
        " FROM unnest($1::uuid[]) AS id",
        ids[1::4],
    )
    await db.execute(
        "INSERT INTO taskd.run_logs (run_id, task_id, attempt, at, level, message)"
        " SELECT id, 'a', 1, now(), 'info', 'before' FROM unnest($1::uuid[]) AS id",
        ids[::9],
    )
    # finished history in the same queue and key: no entry in the index's queued part
    await insert_runs(db, 20, task_id="a", queue=queue, concurrency_key=key, status="completed")


Setup = Callable[[asyncpg.Connection], Awaitable[None]]


async def no_key(db: asyncpg.Connection) -> None:
    await one_key_of_every_kind(db, "")


async def one_named_key(db: asyncpg.Connection) -> None:
    await one_key_of_every_kind(db, "k1")


async def one_run(db: asyncpg.Connection) -> None:
    await insert_run(db, task_id="a")


async def only_delayed(db: asyncpg.Connection) -> None:
    await insert_runs(
        db, 3, task_id="a", concurrency_key="k1", run_at=sql("now() + interval '1 h'")
    )


async def only_unserved(db: asyncpg.Connection) -> None:
    await insert_runs(db, 3, task_id="c")


async def declared_queue_without_limits(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO taskd.queues (name) VALUES ('default')")
    await one_key_of_every_kind(db, "")


SHORT: dict[str, Setup] = {
    "no key": no_key,
    "one named key": one_named_key,
    "one run": one_run,
    "only delayed runs": only_delayed,
    "only runs of tasks not served": only_unserved,
    "a declared queue without limits": declared_queue_without_limits,
}


async def two_keys(db: asyncpg.Connection) -> None:
    await one_key_of_every_kind(db, "k1")
    await insert_runs(db, 5, task_id="a", concurrency_key="k2")


async def two_queues(db: asyncpg.Connection) -> None:
    await one_key_of_every_kind(db, "")
    await insert_runs(db, 5, task_id="a", queue="other")


def with_limit(column: str, value: str) -> Setup:
    async def setup(db: asyncpg.Connection) -> None:
        await db.execute(f"INSERT INTO taskd.queues (name, {column}) VALUES ('default', {value})")
        await one_key_of_every_kind(db, "k1")
        await insert_runs(
            db,
            2,
            task_id="a",
            concurrency_key="k1",
            status="executing",
            attempt=1,
            lease_expires_at=sql("now() + interval '1 min'"),
        )

    return setup


async def paused(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO taskd.queues (name, paused) VALUES ('default', true)")
    await one_key_of_every_kind(db, "")


async def nothing_queued(db: asyncpg.Connection) -> None:
    await insert_runs(db, 5, task_id="a", status="completed")


LOOP: dict[str, Setup] = {
    "two keys": two_keys,
    "two queues": two_queues,
    "a concurrency limit": with_limit("concurrency", "3"),
    "a limit per key": with_limit("concurrency_per_key", "3"),
    "a rate limit": with_limit("rate_limit, rate_period", "4, 60"),
    "a paused queue": paused,
    "nothing queued": nothing_queued,
}


async def compare(
    db: asyncpg.Connection, setup: Setup, queues: list[str] | None
) -> list[tuple[int, int]]:
    """Both functions on every call; the scans of runs_claim_idx each made, per call."""
    await db.execute(loop_function())
    await setup(db)
    scans = []
    for args in calls(queues):
        fast, fast_left, fast_starts, fast_scans = await claim_with(db, "claim_runs", args)
        loop, loop_left, loop_starts, loop_scans = await claim_with(db, "claim_runs_loop", args)
        assert fast == loop, args
        assert fast_left == loop_left, args
        assert fast_starts == loop_starts, args
        scans.append((fast_scans, loop_scans))
    return scans


@pytest.mark.parametrize("name", list(SHORT))
async def test_one_queue_and_key_are_claimed_in_one_statement_as_the_loop_would(
    db: asyncpg.Connection, name: str
) -> None:
    scans = await compare(db, SHORT[name], None)
    # the short path every time: its two probes and the pick, where the loop made four or more
    assert all(fast == 3 < loop for fast, loop in scans), scans


async def test_a_daemon_serving_named_queues_gets_the_same_from_the_short_path(
    db: asyncpg.Connection,
) -> None:
    scans = await compare(db, no_key, ["default", "other"])
    # the short path (two probes, the pick), where the loop, told the queues, has no scan of
    # its own to find them but more statements to run
    assert all(fast == 3 for fast, _ in scans), scans


@pytest.mark.parametrize("name", list(LOOP))
async def test_every_other_claim_goes_through_the_loop(db: asyncpg.Connection, name: str) -> None:
    scans = await compare(db, LOOP[name], None)
    if name == "nothing queued":  # the first probe found nothing: the claim ends there
        assert all(fast == 1 for fast, _ in scans), scans
    else:  # the two probes, then the loop's own scans
        assert all(fast == loop + 2 for fast, loop in scans), scans


async def test_a_daemon_not_serving_the_queue_goes_through_the_loop(
    db: asyncpg.Connection,
) -> None:
    scans = await compare(db, no_key, ["other"])
    assert all(fast == loop + 2 for fast, loop in scans), scans

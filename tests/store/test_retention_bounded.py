"""The run pruner: a pass reads the old runs that stay once, not once per batch; a child whose
parent has not finished stays, however old.

Not a timing test: the rows the pass reads from taskd.runs are counted with the server's
statistics counters (``pg_stat_user_tables``), on a pool of one connection whose counters are
flushed before they are read.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskd.config import RetentionSettings
from taskd.ids import uuid_at
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.pruner import MAX_PAUSE, Pruner
from tests.support.runs import each, insert_runs

DAY = 86_400.0
NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=10)
TASK = "retention.bounded"


def id_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 made at ``moment`` (random below the millisecond, as ids made then are)."""
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=uuid_at(moment).int | random_bits)


def ids_from(start: datetime, count: int) -> list[uuid.UUID]:
    return sorted(id_at(start + timedelta(milliseconds=i)) for i in range(count))


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database, size=1)  # one backend: its counters are all the pass's
    try:
        yield Store(pool)
    finally:
        await pool.close()


def pruner(store: Store, batch: int) -> Pruner:
    retention = RetentionSettings(runs=DAY, events=0, workers=0, batch=batch)
    return Pruner(store, retention)


async def seed_runs(
    db: asyncpg.Connection,
    ids: list[uuid.UUID],
    status: str,
    *,
    finished: datetime | None = None,
    parent: uuid.UUID | None = None,
) -> None:
    await insert_runs(
        db,
        len(ids),
        id=each(ids),
        task_id=TASK,
        status=status,
        created_at=LONG_AGO,
        run_at=LONG_AGO,
        finished_at=finished,
        parent_id=parent,
    )


async def runs_rows_read(db: asyncpg.Connection, store: Store) -> int:
    """Rows of taskd.runs read so far by scans (sequential, and fetched through an index)."""
    async with store.pool.acquire() as connection:
        await connection.execute("SELECT pg_stat_force_next_flush()")
        await connection.execute("SELECT 1")  # the backend was idle in between: flushed
    await db.execute("SELECT pg_stat_clear_snapshot()")
    read = await db.fetchval(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_user_tables WHERE relid = 'taskd.runs'::regclass"
    )
    return int(read)


FRONT = 3_000  # old runs that stay: queued runs of a task no daemon serves
PRUNABLE = 3_000  # finished long ago, created after them
BATCH = 100


async def test_a_pass_reads_the_old_runs_that_stay_once(
    db: asyncpg.Connection, store: Store
) -> None:
    """With the table analyzed, as autovacuum keeps it (runs: analyze at 2 % of rows changed).
    Without any statistics (right after a bulk load) the planner reads the rest of the range
    and sorts it at each batch, before as after the cursor, until the first ANALYZE."""
    await db.execute("ALTER TABLE taskd.runs SET (autovacuum_enabled = false)")
    await seed_runs(db, ids_from(LONG_AGO, FRONT), "queued")
    await seed_runs(
        db, ids_from(LONG_AGO + timedelta(hours=1), PRUNABLE), "completed", finished=LONG_AGO
    )
    await db.execute("ANALYZE taskd.runs")

    before = await runs_rows_read(db, store)
    deleted = await pruner(store, BATCH).run_once(now=NOW)
    read = await runs_rows_read(db, store) - before

    assert deleted["runs"] == PRUNABLE
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == FRONT
    # Each row read a few times at most (the scan, the delete's lookup, a plan's recheck);
    # once per batch, it would be PRUNABLE / BATCH = 30 times the front.
    assert read <= 3 * (FRONT + PRUNABLE), (
        f"a pass of {PRUNABLE // BATCH} batches read {read} rows of taskd.runs"
    )


async def test_children_of_a_parent_not_finished_are_kept(
    db: asyncpg.Connection, store: Store
) -> None:
    """trigger_and_wait: a parent that waits on its children longer than the retention reads
    their outcomes when it resumes; pruned, they would come back as RunFailed 'missing'."""
    waiting, executing, finished, gone = ids_from(LONG_AGO, 4)
    await seed_runs(db, [waiting], "waiting")
    await seed_runs(db, [executing], "executing")
    await seed_runs(db, [finished], "completed", finished=LONG_AGO)
    kept = [
        *ids_from(LONG_AGO + timedelta(hours=1), 3),
        *ids_from(LONG_AGO + timedelta(hours=2), 2),
    ]
    await seed_runs(db, kept[:3], "completed", finished=LONG_AGO, parent=waiting)
    await seed_runs(db, kept[3:], "failed", finished=LONG_AGO, parent=executing)
    # Children whose parent finished, or whose parent is gone (pruned before them).
    pruned = ids_from(LONG_AGO + timedelta(hours=3), 4)
    await seed_runs(db, pruned[:2], "completed", finished=LONG_AGO, parent=finished)
    await seed_runs(db, pruned[2:], "canceled", finished=LONG_AGO, parent=gone)

    # Batches of 2: the runs kept stand in front of the ones pruned, across batches.
    deleted = await pruner(store, batch=2).run_once(now=NOW)

    assert deleted["runs"] == len(pruned) + 1  # and the finished parent
    left = {row[0] for row in await db.fetch("SELECT id FROM taskd.runs")}
    assert left == {waiting, executing, *kept}

    # The parent finishes: its children go with the next pass.
    await db.execute(
        "UPDATE taskd.runs SET status = 'completed', finished_at = $2 WHERE id = $1",
        waiting,
        LONG_AGO,
    )
    assert (await pruner(store, batch=2).run_once(now=NOW))["runs"] == 1 + 3
    left = {row[0] for row in await db.fetch("SELECT id FROM taskd.runs")}
    assert left == {executing, *kept[3:]}


BACKLOG = 20_000  # a backlog past the retention, as after a day the daemons were stopped
WINDOW = 200  # the shipped [retention] batch


async def test_a_large_backlog_is_read_once_not_once_per_batch(
    db: asyncpg.Connection, store: Store
) -> None:
    """Analyzed, the planner costs get_byte(uuid_send(id), 6) >> 4 = 7 at 0.5 % of the rows:
    it expects fewer prunable runs than a batch, and read (and sorted) the whole range below
    the cutoff at every batch: quadratic in the backlog, a day of a million runs read a million
    rows per batch of 200 (bench/history.py). The pass now walks the key a window at a time."""
    await seed_runs(
        db, ids_from(LONG_AGO, BACKLOG), "completed", finished=LONG_AGO + timedelta(seconds=1)
    )
    await db.execute("VACUUM ANALYZE taskd.runs")

    before = await runs_rows_read(db, store)
    deleted = await pruner(store, WINDOW).run_once(now=NOW)
    read = await runs_rows_read(db, store) - before

    assert deleted["runs"] == BACKLOG
    # each run: the window's look at the key, the batch's scan, the delete's lookup
    assert read <= 4 * BACKLOG, f"a pass of {BACKLOG // WINDOW} batches read {read} rows"


async def test_a_backlog_close_to_the_cutoff_is_deleted_at_the_pace(
    db: asyncpg.Connection, store: Store
) -> None:
    """Less than a tenth of the retention behind, the pruner sleeps between its batches (it
    keeps to its share of the database beside the drain); further behind, it does not."""
    retention = RetentionSettings(runs=DAY, events=0, workers=0, batch=50)
    cutoff = NOW - timedelta(seconds=DAY)
    near = ids_from(cutoff - timedelta(minutes=30), 200)  # within a tenth of a day
    await seed_runs(db, near, "completed", finished=cutoff - timedelta(minutes=30))
    took: list[float] = []  # each batch's statement, timed inside the pruner's own timing
    prune_runs = store.retention.prune_runs

    async def timed(*args: Any) -> Any:
        began = time.monotonic()
        try:
            return await prune_runs(*args)
        finally:
            took.append(time.monotonic() - began)

    pacing = Pruner(store, retention, pace=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store.retention, "prune_runs", timed)
        assert (await pacing.run_once(now=NOW))["runs"] == 200
    # at a pace of a half it sleeps as long as each of the four full windows' statements took
    # (the fifth, which reaches the cutoff, ends the pass); timed from the statements
    # themselves, not from the whole pass, whose other work a loaded machine stretches
    assert len(took) == 5, took
    assert pacing.paced >= sum(min(one, MAX_PAUSE) for one in took[:-1]), (pacing.paced, took)

    far = ids_from(LONG_AGO, 200)  # nine days behind
    await seed_runs(db, far, "completed", finished=LONG_AGO)
    flat_out = Pruner(store, retention, pace=0.5)
    assert (await flat_out.run_once(now=NOW))["runs"] == 200
    assert flat_out.paced == 0


HISTORY = 20_000  # finished ten days ago: older than any roll-up reaches


async def test_a_minute_of_statistics_does_not_read_the_history(
    db: asyncpg.Connection, store: Store
) -> None:
    """The queue sampler's minute (store/stats.py sample_minute) rolls up the runs of the
    minutes since the last roll-up. Its bound on the primary key was known at run time only:
    the planner expected a third of the table and read all of it, every minute (10 GB with
    10,000,000 runs of history, bench/history.py). A constant bound (a day and an hour back
    at most) lets it plan the range."""
    # written out of id order, as copies, restores and updates leave a table: the heap's order
    # is not the key's, and the planner prices the third of the table it expects accordingly
    history = ids_from(LONG_AGO, HISTORY)
    random.shuffle(history)
    await seed_runs(db, history, "completed", finished=LONG_AGO + timedelta(seconds=1))
    await db.execute("VACUUM ANALYZE taskd.runs")
    minute = NOW.replace(second=0, microsecond=0)

    before = await runs_rows_read(db, store)
    await store.stats.sample_minute(minute)
    read = await runs_rows_read(db, store) - before

    assert read <= 100, f"a minute's roll-up read {read} runs of a history {HISTORY:,} long"

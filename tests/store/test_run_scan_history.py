"""A page of runs filtered by event or error group reads a bounded number of events and
attempts, however many the history holds (bench/history.py: with 1,700,000 runs of one event
the page ran past the admin statement timeout).

Not a timing test: the rows read from taskd.events and taskd.attempts are counted with the
server's statistics counters, on a pool of one connection whose counters are flushed before
they are read. work_mem is made small, as a large history makes it: the set of an event's
(or a group's) ids no longer fits a hash, and `IN (SELECT ...)` then scanned the whole set
again for every run the page examined.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskd.store.database import create_pool
from taskd.store.run_scan import CANDIDATE_CAP
from taskd.store.runs import RunFilter
from taskd.store.store import Store
from tests.support.runs import Sql, insert_runs

RUNS = 25_000  # more than the candidate probe takes (4 x CANDIDATE_CAP): the bounded scan
EVENT = "order.paid"
GROUP = "f00dfeedf00dfeed"


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    setup = await asyncpg.connect(database)
    try:  # this test's database only: every session the pool opens takes it
        await setup.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = ''64kB''',"
            " current_database()); END $$"
        )
    finally:
        await setup.close()
    pool = await create_pool(database, size=1, custom_plans=True)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def rows_read(db: asyncpg.Connection, store: Store, table: str) -> int:
    """Rows and index entries of ``table`` read so far (sequential scans, index scans)."""
    async with store.pool.acquire() as connection:
        await connection.execute("SELECT pg_stat_force_next_flush()")
        await connection.execute("SELECT 1")  # the backend was idle in between: flushed
    await db.execute("SELECT pg_stat_clear_snapshot()")
    read = await db.fetchval(
        "SELECT coalesce(t.seq_tup_read, 0)"
        "       + (SELECT coalesce(sum(i.idx_tup_read), 0) FROM pg_stat_user_indexes i"
        "           WHERE i.relid = t.relid)"
        "  FROM pg_stat_user_tables t WHERE t.relid = $1::regclass",
        f"taskd.{table}",
    )
    return int(read)


async def test_an_event_filter_reads_the_events_of_the_runs_it_examines(
    db: asyncpg.Connection, store: Store
) -> None:
    ids = await insert_runs(
        db, RUNS, task_id="orders", status="completed", event_id=Sql("gen_random_uuid()")
    )
    await db.execute(
        "INSERT INTO taskd.events (id, name) SELECT event_id, $1 FROM taskd.runs", EVENT
    )
    await db.execute("VACUUM ANALYZE taskd.runs, taskd.events")

    before = await rows_read(db, store, "events")
    page = await store.run_scan.page(RunFilter(event=EVENT))
    read = await rows_read(db, store, "events") - before

    assert [run.id for run in page.runs] == sorted(ids, reverse=True)[:50]
    assert read <= 4 * 51, f"a page of 50 runs read {read} events"


async def test_an_error_group_filter_reads_the_attempts_of_the_runs_it_examines(
    db: asyncpg.Connection, store: Store
) -> None:
    ids = await insert_runs(db, RUNS, task_id="orders", status="failed")
    await db.execute(
        "INSERT INTO taskd.attempts"
        " (run_id, attempt, started_at, finished_at, outcome, fingerprint)"
        " SELECT id, 1, now(), now(), 'failed', $1 FROM taskd.runs",
        GROUP,
    )
    await db.execute("VACUUM ANALYZE taskd.runs, taskd.attempts")

    before = await rows_read(db, store, "attempts")
    page = await store.run_scan.page(RunFilter(error_group=GROUP))
    read = await rows_read(db, store, "attempts") - before

    assert [run.id for run in page.runs] == sorted(ids, reverse=True)[:50]
    # the probe for a small group (at most CANDIDATE_CAP + 1 attempts), then the page's runs
    assert read <= CANDIDATE_CAP + 1 + 4 * 51, f"a page of 50 runs read {read} attempts"

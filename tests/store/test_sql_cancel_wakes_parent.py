"""A child canceled by plain SQL (taskd.cancel) resumes its waiting parent (migration 0002).

No Python client here: a producer in another language cancels with SQL alone, and the parent
of the canceled child must go back to the queue at once, with the daemons notified when the
cancel commits, instead of sleeping until its own recheck.
"""

from __future__ import annotations

import uuid

import anyio
import asyncpg

from tests.support.runs import insert_run, sql


async def waiting_parent(db: asyncpg.Connection, queue: str = "default") -> uuid.UUID:
    """A run suspended in trigger_and_wait: waiting, its recheck an hour away."""
    return await insert_run(
        db, task_id="parent", queue=queue, status="waiting", run_at=sql("now() + interval '1 hour'")
    )


async def child_of(db: asyncpg.Connection, parent: uuid.UUID, status: str = "queued") -> uuid.UUID:
    return await insert_run(db, task_id="child", parent_id=parent, status=status)


async def state(db: asyncpg.Connection, run_id: uuid.UUID) -> tuple[str, bool]:
    row = await db.fetchrow(
        "SELECT status, run_at <= now() AS due FROM taskd.runs WHERE id = $1", run_id
    )
    assert row is not None
    return row["status"], row["due"]


async def test_canceling_the_last_unfinished_child_resumes_the_parent(
    db: asyncpg.Connection, database: str
) -> None:
    parent = await waiting_parent(db, queue="parents")
    first = await child_of(db, parent)
    second = await child_of(db, parent, status="waiting")
    await child_of(db, parent, status="completed")  # a finished child holds nothing back

    listener = await asyncpg.connect(database)
    woken = anyio.Event()

    def on_wakeup(*args: object) -> None:
        if args[3] == "parents":
            woken.set()

    await listener.add_listener("taskd_wakeup", on_wakeup)
    try:
        assert await db.fetchval("SELECT taskd.cancel($1)", first) == "canceled"
        assert await state(db, parent) == ("waiting", False), "a child is still unfinished"

        assert await db.fetchval("SELECT taskd.cancel($1)", second) == "canceled"
        assert await state(db, parent) == ("queued", True)
        with anyio.fail_after(5):
            await woken.wait()  # the daemons listening for the parent's queue are told
    finally:
        await listener.close()
    assert await state(db, parent) == ("queued", True)


async def test_canceling_an_executing_child_leaves_the_wake_to_its_completion(
    db: asyncpg.Connection,
) -> None:
    parent = await waiting_parent(db)
    child = await child_of(db, parent, status="executing")
    assert await db.fetchval("SELECT taskd.cancel($1)", child) == "executing"
    assert await state(db, parent) == ("waiting", False), "the child has not ended yet"


async def test_canceling_a_waiting_parent_cancels_its_children_and_resumes_the_grandparent(
    db: asyncpg.Connection,
) -> None:
    grandparent = await waiting_parent(db)
    parent = await insert_run(
        db,
        task_id="parent",
        parent_id=grandparent,
        status="waiting",
        run_at=sql("now() + interval '1 hour'"),
    )
    child = await child_of(db, parent)

    assert await db.fetchval("SELECT taskd.cancel($1)", parent) == "canceled"
    assert await state(db, child) == ("canceled", True)
    assert (await state(db, parent))[0] == "canceled", "a canceled parent is not woken"
    assert await state(db, grandparent) == ("queued", True)


async def test_a_run_without_a_parent_cancels_as_before(db: asyncpg.Connection) -> None:
    run_id = await db.fetchval("SELECT taskd.trigger('t', '{}')")
    assert await db.fetchval("SELECT taskd.cancel($1)", run_id) == "canceled"
    row = await db.fetchrow("SELECT status, error FROM taskd.runs WHERE id = $1", run_id)
    assert row is not None and row["status"] == "canceled"
    assert "canceled while queued" in row["error"]

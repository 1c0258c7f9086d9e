"""A parent suspended on its child runs when its `taskd run` is SIGKILLed: after a restart the
children run (again, when the kill interrupted them), the parent is woken, replays its recorded
step and child ids, and completes once with the children's outputs (real subprocesses)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from taskd import Client, RunStatus
from tests.support.daemon_process import Daemons, daemons
from tests.support.tasks.crash import CREATE_CHILD_TABLES
from tests.support.waiting import wait_for, wait_for_run

# The parent is `waiting` (checked on a frozen daemon, see DaemonProcess.kill_when: its
# recheck, 0.5 s after it suspended, cannot queue it between the check and the kill).
PARENT_SUSPENDED = "SELECT status = 'waiting' FROM taskd.runs WHERE id = $1"


async def _children(db: asyncpg.Connection, parent_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, status, payload->>'n' AS n FROM taskd.runs WHERE parent_id = $1"
        " ORDER BY (payload->>'n')::int",
        parent_id,
    )


async def _effects(db: asyncpg.Connection, kind: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT run_id, attempt, n, pid FROM child_effects WHERE kind = $1"
        " ORDER BY n, attempt, pid",
        kind,
    )
    return [tuple(row) for row in rows]


async def _outcomes(db: asyncpg.Connection, run_id: uuid.UUID) -> list[str]:
    rows = await db.fetch(
        "SELECT outcome FROM taskd.attempts WHERE run_id = $1 ORDER BY attempt", run_id
    )
    return [row["outcome"] for row in rows]


async def _until(
    check: Callable[[], Awaitable[bool]], db: asyncpg.Connection, group: Daemons
) -> None:
    """wait_for(check); when it times out, the runs, the effects and the daemons' output."""
    try:
        await wait_for(check)
    except AssertionError as exc:
        runs = await db.fetch(
            "SELECT id, task_id, status, attempt, run_at - now() AS due_in, parent_id"
            " FROM taskd.runs ORDER BY created_at"
        )
        effects = await db.fetch("SELECT * FROM child_effects")
        lines = [str(dict(row)) for row in [*runs, *effects]]
        raise AssertionError("\n".join([str(exc), *lines, group.output()])) from None


async def test_a_parent_killed_while_waiting_on_a_batch_completes_after_a_restart(
    database: str, client: Client
) -> None:
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_CHILD_TABLES)
        async with daemons() as group:
            first = await group.start(database)
            await first.ready()
            parent_id = await client.trigger(
                "crash.parent", {"batch": [{"n": n, "gated": True} for n in (1, 2, 3)]}
            )

            async def suspended_with_children_at_the_gate() -> bool:
                started = await db.fetchval(
                    "SELECT count(*) FROM child_effects WHERE kind = 'started'"
                )
                return started == 3 and bool(await db.fetchval(PARENT_SUSPENDED, parent_id))

            await _until(suspended_with_children_at_the_gate, db, group)
            await first.kill_when(db, suspended_with_children_at_the_gate)
            # what the dead daemon left: the parent suspended, its three children executing
            parent_status = await db.fetchval(
                "SELECT status FROM taskd.runs WHERE id = $1", parent_id
            )
            at_kill = [(row["n"], row["status"]) for row in await _children(db, parent_id)]
            assert (parent_status, at_kill) == (
                "waiting",
                [("1", "executing"), ("2", "executing"), ("3", "executing")],
            ), group.output()

            await db.execute("INSERT INTO child_gate VALUES (true)")
            second = await group.start(database)
            await second.ready()
            parent = await wait_for_run(client, parent_id, timeout=20)
            assert parent.status is RunStatus.COMPLETED, group.output()
        children = await _children(db, parent_id)
        before = await _effects(db, "parent-before")
        started = await _effects(db, "started")
        finished = await _effects(db, "finished")
        outcomes = {row["id"]: await _outcomes(db, row["id"]) for row in children}
        parent_outcomes = await _outcomes(db, parent_id)
    finally:
        await db.close()

    assert parent.output == {"before": first.pid, "children": [1, 4, 9]}
    # the children were created once, although the parent executed again after the restart
    assert [(row["n"], row["status"]) for row in children] == [
        ("1", "completed"),
        ("2", "completed"),
        ("3", "completed"),
    ]
    assert [s.name for s in parent.steps] == ["before", "children:1"]
    # the step before the wait ran once, in the killed daemon (its recorded pid is the output's)
    assert before == [(parent_id, 1, None, first.pid)]
    # suspended, not executing, when killed: no attempt of the parent was lost
    assert parent_outcomes == ["completed"]
    # each child: attempt 1 reached the gate in the killed daemon and was lost with it;
    # attempt 2 ran to the end after the restart (the gate opened only after the kill)
    ids = [row["id"] for row in children]
    assert started == [
        (child_id, attempt, n, pid)
        for child_id, n in zip(ids, (1, 2, 3), strict=True)
        for attempt, pid in ((1, first.pid), (2, second.pid))
    ]
    assert finished == [
        (child_id, 2, n, second.pid) for child_id, n in zip(ids, (1, 2, 3), strict=True)
    ]
    assert all(outcomes[child_id] == ["lost", "completed"] for child_id in ids), outcomes


async def test_a_parent_killed_while_its_child_is_still_queued_completes_after_a_restart(
    database: str, client: Client
) -> None:
    """trigger_and_wait with the child in a queue the first daemon does not serve: at the kill
    the child has not started; a daemon serving every queue runs it and wakes the parent."""
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_CHILD_TABLES)
        async with daemons() as group:
            first = await group.start(database, TASKD_WORKER__QUEUES='["default"]')
            await first.ready()
            parent_id = await client.trigger(
                "crash.parent", {"single": {"n": 5}, "queue": "crash-children"}
            )

            async def suspended_with_a_queued_child() -> bool:
                children = await _children(db, parent_id)
                return [row["status"] for row in children] == ["queued"] and bool(
                    await db.fetchval(PARENT_SUSPENDED, parent_id)
                )

            await _until(suspended_with_a_queued_child, db, group)
            await first.kill_when(db, suspended_with_a_queued_child)
            assert (
                await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", parent_id)
                == "waiting"
            ), group.output()

            second = await group.start(database)
            await second.ready()
            parent = await wait_for_run(client, parent_id, timeout=20)
            assert parent.status is RunStatus.COMPLETED, group.output()
        children = await _children(db, parent_id)
        before = await _effects(db, "parent-before")
        started = await _effects(db, "started")
        finished = await _effects(db, "finished")
        outcomes = [await _outcomes(db, row["id"]) for row in children]
        parent_outcomes = await _outcomes(db, parent_id)
    finally:
        await db.close()

    assert parent.output == {"before": first.pid, "child": 25}
    [child] = children
    assert (child["n"], child["status"]) == ("5", "completed")
    assert before == [(parent_id, 1, None, first.pid)]
    assert parent_outcomes == ["completed"]
    # the child ran once, in the second daemon only
    assert started == finished == [(child["id"], 1, 5, second.pid)]
    assert outcomes == [["completed"]]

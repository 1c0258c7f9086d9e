"""The daemon's connections cut under wait tokens and child runs (``wait.create_token``,
``wait.for_token``, ``trigger_and_wait``): the calls ride it out, no attempt fails for it, and
no token or child is created twice, even when the first try committed and only its reply was
lost (see tests/daemon/test_connection_loss.py for how a cut connection shows in asyncpg)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, Retry, RunStatus, task, wait
from taskd.store.store import Store
from taskd.store.waits import ChildRuns
from tests.support.waiting import wait_for, wait_for_run

NO_BACKOFF = Retry(max_attempts=5, min_delay=0, max_delay=0, jitter=False)
GATES: dict[str, anyio.Event] = {}
STATE: dict[str, Any] = {}


@task(id="lossw.leaf", retry=NO_BACKOFF)
async def leaf(payload: int, ctx: Context) -> int:
    STATE["calls"] = STATE.get("calls", 0) + 1
    return payload * 10


@task(id="lossw.token", retry=NO_BACKOFF)
async def token(payload: Any, ctx: Context) -> Any:
    if payload.get("gate") == "create":
        STATE["at"].set()
        await GATES["go"].wait()
    created = await wait.create_token(timeout="1h")
    STATE["token"] = created.id
    if payload.get("gate") != "await":
        return str(created.id)
    if STATE["executions"] == 0:  # executed again once the token is completed
        STATE["executions"] += 1
        STATE["at"].set()
        await GATES["go"].wait()
    return await wait.for_token(created)


@task(id="lossw.parent", retry=NO_BACKOFF)
async def parent(payload: Any, ctx: Context) -> list[Any]:
    STATE["executions"] += 1
    if STATE["executions"] == payload["gated_execution"]:
        STATE["at"].set()
        await GATES["go"].wait()
    return await leaf.batch_trigger_and_wait([1, 2, 3])


async def _cut_while_waiting(
    database: str,
    client: Client,
    task_id: str,
    payload: Any,
    lock_sql: str,
    statement: str,
    then: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> uuid.UUID:
    """Trigger the run; once it is at its gate, hold ``lock_sql``'s lock, open the gate so
    that the run's ``statement`` waits on it, terminate that statement's connection, release
    the lock (and call ``then``). The run's id, once it ended."""
    GATES["go"] = anyio.Event()
    STATE.update(at=anyio.Event(), executions=0)
    holder = await asyncpg.connect(database)
    watcher = await asyncpg.connect(database)
    try:
        run_id = await client.trigger(task_id, payload)
        with anyio.fail_after(30):
            await STATE["at"].wait()
        async with holder.transaction():
            await holder.execute(lock_sql.replace("$run_id", f"'{run_id}'"))
            GATES["go"].set()

            async def waiting() -> int | None:
                pid: int | None = await watcher.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND position($1 in query) > 0",
                    statement,
                )
                return pid

            pid = await wait_for(waiting)
            assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
        if then is not None:
            await then(run_id)
        await wait_for_run(client, run_id, timeout=30)
    finally:
        await holder.close()
        await watcher.close()
    return run_id


def _first_attempt(run: Any) -> None:
    assert (run.status, run.attempt) == (RunStatus.COMPLETED, 1), [
        (a.outcome, a.error) for a in run.attempts
    ]


async def test_a_token_creation_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, db: asyncpg.Connection, start_daemon: Any
) -> None:
    async with start_daemon([token]):
        run_id = await _cut_while_waiting(
            database,
            client,
            "lossw.token",
            {"gate": "create"},
            "LOCK TABLE taskd.wait_tokens IN ACCESS EXCLUSIVE MODE",
            "INSERT INTO taskd.wait_tokens",
        )
    run = await client.get_run(run_id)
    _first_attempt(run)
    tokens = await db.fetch("SELECT id FROM taskd.wait_tokens WHERE run_id = $1", run_id)
    assert [str(row["id"]) for row in tokens] == [run.output]


async def test_a_token_read_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, start_daemon: Any
) -> None:
    async def complete_once_waiting(run_id: uuid.UUID) -> None:
        # the retried read finds the token pending: the run suspends until it is completed
        await wait_for_run(client, run_id, (RunStatus.WAITING,), timeout=30)
        await client.complete_token(STATE["token"], "approved")

    async with start_daemon([token]):
        run_id = await _cut_while_waiting(
            database,
            client,
            "lossw.token",
            {"gate": "await"},
            "LOCK TABLE taskd.wait_tokens IN ACCESS EXCLUSIVE MODE",
            "UPDATE taskd.wait_tokens t",
            then=complete_once_waiting,
        )
    run = await client.get_run(run_id)
    _first_attempt(run)
    assert run.output == "approved"


async def test_a_children_creation_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, db: asyncpg.Connection, start_daemon: Any
) -> None:
    async with start_daemon([parent, leaf]):
        run_id = await _cut_while_waiting(
            database,
            client,
            "lossw.parent",
            {"gated_execution": 1},
            # the statement's compare-and-set on the parent waits for this row
            "SELECT 1 FROM taskd.runs WHERE id = $run_id FOR UPDATE",
            "INSERT INTO taskd.steps (run_id, name, status, result, attempts, run_attempt",
        )
    run = await client.get_run(run_id)
    _first_attempt(run)
    assert run.output == [10, 20, 30]
    assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE parent_id = $1", run_id) == 3


async def test_a_children_read_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, start_daemon: Any
) -> None:
    """The parent's second execution (woken by its finished children) reads their results."""
    async with start_daemon([parent, leaf]):
        run_id = await _cut_while_waiting(
            database,
            client,
            "lossw.parent",
            {"gated_execution": 2},
            "LOCK TABLE taskd.runs IN ACCESS EXCLUSIVE MODE",
            "output, error FROM taskd.runs WHERE id = ANY",
        )
    run = await client.get_run(run_id)
    _first_attempt(run)
    assert run.output == [10, 20, 30]


# A write whose commit is unknown: the server committed it, the reply was lost, and the
# retry (with the same ids) must find what the first try made.


async def test_a_token_creation_retried_after_its_commit_finds_the_first_token(
    client: Client, db: asyncpg.Connection
) -> None:
    store = Store(client.pool)
    run_id = await client.trigger("lossw.token", {})
    token_id = uuid.uuid4()
    first = await store.tokens.create(token_id, run_id, 3600)
    again = await store.tokens.create(token_id, run_id, 7200)
    assert again == first
    assert await db.fetchval("SELECT count(*) FROM taskd.wait_tokens") == 1


async def test_a_children_creation_retried_after_its_commit_finds_its_children(
    client: Client, db: asyncpg.Connection, start_daemon: Any
) -> None:
    GATES["go"] = anyio.Event()
    STATE.update(at=anyio.Event(), executions=0)
    store = Store(client.pool)
    ids = [uuid.uuid4(), uuid.uuid4()]

    async def create(
        worker_id: uuid.UUID, ids: list[uuid.UUID], name: str = "children:9"
    ) -> list[uuid.UUID] | None:
        return await store.waits.create_children(
            ChildRuns(run_id, worker_id, 1, name, "lossw.leaf", None, ids, [b"1", b"2"], [], None)
        )

    async with start_daemon([parent]):
        run_id = await client.trigger("lossw.parent", {"gated_execution": 1})
        with anyio.fail_after(30):
            await STATE["at"].wait()
        worker_id = await db.fetchval("SELECT worker_id FROM taskd.runs WHERE id = $1", run_id)
        assert await create(worker_id, ids) == ids
        assert await create(worker_id, ids) == ids  # the retry: recorded by its first try
        # not this try's: the step records other ids; the run is another worker's
        assert await create(worker_id, [uuid.uuid4(), uuid.uuid4()]) is None
        assert await create(uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()], "children:10") is None
        GATES["go"].set()
        await wait_for_run(client, run_id, (RunStatus.WAITING,), timeout=30)
    children = await db.fetchval("SELECT count(*) FROM taskd.runs WHERE parent_id = $1", run_id)
    assert children == 2 + 3  # children:9 once, and the task's own call


# Every daemon connection terminated again and again while runs create tokens and children.

RUNS = 8
ROUNDS = 4
WAVES = 6


@task(id="lossw.storm", retry=NO_BACKOFF)
async def storm(payload: Any, ctx: Context) -> int:
    # executed again after each round's children finish: recorded tokens and children return
    for i in range(ROUNDS):
        await wait.create_token(timeout="1h")
        STATE["calls"] = STATE.get("calls", 0) + 1
        await leaf.batch_trigger_and_wait([i, i])
    return ROUNDS


async def test_tokens_and_children_ride_out_terminated_connections(
    database: str, db: asyncpg.Connection, start_daemon: Any
) -> None:
    STATE["calls"] = 0
    terminated = 0
    async with start_daemon([storm, leaf], concurrency=RUNS):
        async with Client.connect(database) as client:
            await client.batch_trigger("lossw.storm", [{}] * RUNS)

        async def done() -> bool:
            ended = await db.fetchval(
                "SELECT count(*) FROM taskd.runs"
                " WHERE task_id = 'lossw.storm' AND status IN ('completed', 'failed')"
            )
            return bool(ended == RUNS)

        for _ in range(WAVES):
            target = STATE["calls"] + RUNS

            async def progressed(target: int = target) -> bool:
                return STATE["calls"] >= target or await done()

            await wait_for(progressed, timeout=30)
            if await done():
                break
            terminated += await db.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'taskd'"
            )
        await wait_for(done, timeout=60)
    assert terminated >= 3, terminated  # the waves did cut connections while runs worked
    failed = await db.fetch(
        "SELECT r.task_id, a.error->>'type' AS type, a.error->>'message' AS message"
        " FROM taskd.attempts a JOIN taskd.runs r ON r.id = a.run_id"
        " WHERE a.outcome <> 'completed'"
    )
    assert not failed, [dict(row) for row in failed[:3]]
    parents = await db.fetch(
        "SELECT id, status, attempt FROM taskd.runs WHERE task_id = 'lossw.storm'"
    )
    assert {(r["status"], r["attempt"]) for r in parents} == {("completed", 1)}
    for row in parents:
        tokens = await db.fetchval(
            "SELECT count(*) FROM taskd.wait_tokens WHERE run_id = $1", row["id"]
        )
        children = await db.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE parent_id = $1", row["id"]
        )
        recorded = await db.fetchval(
            "SELECT count(*) FROM taskd.steps, jsonb_array_elements_text(result) AS child"
            " WHERE run_id = $1 AND name LIKE 'children:%'",
            row["id"],
        )
        assert (tokens, children, recorded) == (ROUNDS, 2 * ROUNDS, 2 * ROUNDS)

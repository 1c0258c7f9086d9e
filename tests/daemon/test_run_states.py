"""The run's state machine (daemon/taskd/run_states.py) against what the engine does: runs
are driven through a daemon and the store's chores into every state, and every status
change PostgreSQL saw on taskd.runs (recorded by a trigger this test creates) must be in
the table; the table's every move must have been seen."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, Retry, RunStatus, task, wait
from taskd.models import TERMINAL_STATES
from taskd.run_states import FINAL, TRANSITIONS, Room, allowed, check, describe
from taskd.store.store import Store
from tests.support.waiting import wait_for, wait_for_run

GATES: dict[str, anyio.Event] = {}
TOKENS: dict[str, uuid.UUID] = {}

RECORD_MOVES = """
CREATE TABLE public.run_moves (run_id uuid NOT NULL, source text, target text NOT NULL);
CREATE FUNCTION public.record_run_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.run_moves VALUES (NEW.id, NULL, NEW.status);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO public.run_moves VALUES (NEW.id, OLD.status, NEW.status);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER record_run_move AFTER INSERT OR UPDATE ON taskd.runs
    FOR EACH ROW EXECUTE FUNCTION public.record_run_move();
"""


@task(id="states.done")
async def done(payload: Any, ctx: Context) -> str:
    return "ok"


@task(id="states.flaky", retry=Retry(max_attempts=2, min_delay=0.01, max_delay=0.01))
async def flaky(payload: Any, ctx: Context) -> None:
    raise ValueError("always")


@task(id="states.gated")
async def gated(payload: dict[str, str], ctx: Context) -> str:
    await GATES[payload["gate"]].wait()
    return "opened"


@task(id="states.sleeper")
async def sleeper(payload: Any, ctx: Context) -> str:
    await wait.for_(seconds=0.3)
    return "rested"


@task(id="states.approval")
async def approval(payload: Any, ctx: Context) -> Any:
    token = await wait.create_token(timeout="1h")
    TOKENS[str(ctx.run_id)] = token.id
    return await wait.for_token(token)


@task(id="states.parent")
async def parent(payload: Any, ctx: Context) -> Any:
    return await done.trigger_and_wait(None)


async def moves(db: asyncpg.Connection) -> set[tuple[RunStatus | None, RunStatus]]:
    rows = await db.fetch("SELECT DISTINCT source, target FROM public.run_moves")
    return {(RunStatus(r[0]) if r[0] else None, RunStatus(r[1])) for r in rows}


async def status_of(client: Client, run_id: uuid.UUID) -> RunStatus:
    return (await client.get_run(run_id)).status


async def test_every_status_change_is_in_the_table(
    client: Client, db: asyncpg.Connection, start_daemon
) -> None:
    await db.execute(RECORD_MOVES)
    store = Store(client.pool)
    GATES.update(cancel=anyio.Event(), drain=anyio.Event())
    tasks = [done, flaky, gated, sleeper, approval, parent]
    async with start_daemon(tasks, wait_threshold=0.1, poll_interval=0.05) as daemon:
        completed = await client.trigger(done)
        failed = await client.trigger(flaky)  # a retry, then failed
        slept = await client.trigger(sleeper)  # waiting, woken by its timer
        approved = await client.trigger(approval)  # waiting, woken by its token
        resumed = await client.trigger(parent)  # waiting, woken by its last child
        delayed = await client.trigger(done, delay=3600)
        assert await client.cancel(delayed) is RunStatus.CANCELED  # queued -> canceled
        asked = await client.trigger(gated, {"gate": "cancel"})
        await wait_for(lambda: _is(client, asked, RunStatus.EXECUTING))
        # only asked: its daemon cancels the attempt, the completer ends it canceled
        assert await client.cancel(asked) is RunStatus.EXECUTING
        await wait_for(lambda: _has_token(approved), timeout=10)
        await wait_for_run(client, approved, (RunStatus.WAITING,))
        await client.complete_token(TOKENS[str(approved)], {"yes": True})
        for run_id in (completed, failed, slept, approved, resumed, asked):
            await wait_for_run(
                client, run_id, (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED)
            )
        assert await status_of(client, asked) is RunStatus.CANCELED
        assert await status_of(client, resumed) is RunStatus.COMPLETED
        await client.replay(completed)  # a new run; the finished one stays as it is

        # waiting -> canceled
        waiting = await client.trigger(approval)
        await wait_for_run(client, waiting, (RunStatus.WAITING,))
        assert await client.cancel(waiting) is RunStatus.CANCELED

        # the drain hands an executing run back (executing -> queued, attempt not spent)
        drained = await client.trigger(gated, {"gate": "drain"})
        await wait_for_run(client, drained, (RunStatus.EXECUTING,))
        await daemon.stop(0)
    assert await status_of(client, drained) is RunStatus.QUEUED

    # no daemon now: the chores a store runs, one by one
    lost = uuid.uuid4()
    lease = "UPDATE taskd.runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1"
    retried = await client.trigger(done, max_attempts=2)
    spent = await client.trigger(done, max_attempts=1)
    canceled = await client.trigger(done, max_attempts=2)
    claimed = await store.runs.claim([done.id], None, 10, lost, 60)
    assert {r.id for r in claimed.runs} >= {retried, spent, canceled}
    assert await client.cancel(canceled) is RunStatus.EXECUTING
    for run_id in (retried, spent, canceled):
        await db.execute(lease, run_id)
    rescued = {r[0]: r[1] for r in await store.runs.rescue([])}
    assert rescued == {retried: "queued", spent: "failed", canceled: "canceled"}

    await client.trigger(done, ttl=0.01)
    assert await wait_for(store.runs.expire)  # queued -> expired, once its ttl has passed
    await client.trigger("states.nobody.serves.this")
    assert await store.runs.fail_unknown(0)  # queued -> failed

    seen = await moves(db)
    unknown = {move for move in seen if not allowed(*move)}
    assert not unknown, f"status changes the table does not have: {unknown}"
    table = {(t.source, t.target) for t in TRANSITIONS}
    assert seen == table, f"moves of the table never seen: {table - seen}"


async def _is(client: Client, run_id: uuid.UUID, status: RunStatus) -> bool:
    return await status_of(client, run_id) is status


async def _has_token(run_id: uuid.UUID) -> bool:
    return str(run_id) in TOKENS


def test_the_final_states_are_the_terminal_ones() -> None:
    assert FINAL == TERMINAL_STATES
    for state in RunStatus:
        assert state.terminal == (state in FINAL)


def test_a_room_moves_only_what_the_table_gives_it() -> None:
    check(Room.COMPLETER, RunStatus.EXECUTING, RunStatus.WAITING)
    check(Room.WAKER, RunStatus.WAITING, RunStatus.QUEUED)
    for room, source, target in (
        (Room.COMPLETER, RunStatus.EXECUTING, RunStatus.EXPIRED),
        (Room.EXPIRER, RunStatus.WAITING, RunStatus.EXPIRED),
        (Room.CANCELER, RunStatus.COMPLETED, RunStatus.CANCELED),
        (Room.CLAIMER, RunStatus.WAITING, RunStatus.EXECUTING),
    ):
        try:
            check(room, source, target)
        except ValueError:
            continue
        raise AssertionError(f"{room} may not move {source} to {target}")
    assert "waiting -> queued" in describe()

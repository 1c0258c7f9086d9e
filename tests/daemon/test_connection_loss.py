"""The daemon's connections cut under running tasks: the context's own database calls
(``ctx.step``, ``ctx.set_metadata``) ride it out, and no attempt fails for it.

PostgreSQL ends a session with a FATAL message (``pg_ctl stop -m fast``, a restart, an
operator's ``pg_terminate_backend``). A statement in flight then fails with
``ConnectionDoesNotExistError``; and asyncpg (0.32) reads that message on an idle pooled
connection as a protocol error, keeping the connection open-looking until it also reads the
end of the stream a moment later: a statement started on it in between (or the pool's reset
on release, after a statement that succeeded) fails with ``InternalClientError: cannot switch
to state N; another operation (2) is in progress`` (MagicStack/asyncpg#784, #1069). Either is
a connection lost, which the next statement, on a new connection, does not meet.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import asyncpg

from taskd import Client, Context, Retry, RunStatus, task
from tests.support.waiting import wait_for, wait_for_run

RUNS = 20
WAVES = 6  # every daemon connection terminated this many times while the runs execute

NO_BACKOFF = Retry(max_attempts=5, min_delay=0, max_delay=0, jitter=False)
STATE: dict[str, Any] = {}


@task(id="loss.services", retry=NO_BACKOFF)
async def services(payload: Any, ctx: Context) -> int:
    i = 0
    while not STATE["finish"].is_set():
        await ctx.step(f"s-{i}", lambda i=i: i)
        await ctx.set_metadata(round=i)
        STATE["calls"] += 1
        i += 1
        await anyio.sleep(0.002)
    return i


async def test_context_calls_ride_out_terminated_connections(
    database: str, db: asyncpg.Connection, start_daemon: Any
) -> None:
    """Every connection of the daemon terminated six times while 20 runs record steps and
    set metadata: no attempt fails, every run completes on its first attempt."""
    STATE.update(finish=anyio.Event(), calls=0)
    terminated = 0
    async with start_daemon([services], concurrency=RUNS):
        async with Client.connect(database) as client:
            await client.batch_trigger("loss.services", [{}] * RUNS)

        async def all_executing() -> bool:
            executing = await db.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE status = 'executing'"
            )
            return bool(executing == RUNS)

        # all claimed first: a claim cut after its commit would leave runs to their lease
        await wait_for(all_executing, timeout=30)
        for _ in range(WAVES):
            await _progress()  # each wave cuts calls of every run, not the previous wave's
            terminated += await db.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'taskd'"
            )
        await _progress()
        STATE["finish"].set()

        async def all_done() -> bool:
            done = await db.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE status IN ('completed', 'failed')"
            )
            return bool(done == RUNS)

        await wait_for(all_done, timeout=30)
    failed = await db.fetch(
        "SELECT error->>'type' AS type, error->>'message' AS message,"
        " error->>'traceback' AS traceback"
        " FROM taskd.attempts WHERE outcome <> 'completed'"
    )
    assert terminated >= WAVES, terminated  # the waves did cut connections
    assert not failed, f"{len(failed)} attempt(s) failed: {_where(failed)}, e.g.\n" + "\n".join(
        f"{r['type']}: {r['message']}\n{(r['traceback'] or '')[-1200:]}" for r in failed[:2]
    )
    attempts = await db.fetch("SELECT status, attempt FROM taskd.runs")
    assert {(r["status"], r["attempt"]) for r in attempts} == {("completed", 1)}


async def _progress() -> None:
    """Wait until the runs have made as many more calls as there are runs."""
    target = STATE["calls"] + RUNS

    async def reached() -> bool:
        return bool(STATE["calls"] >= target)

    await wait_for(reached, timeout=30)


# One statement cut while it waits on a lock the test holds: the deterministic case.

GATES: dict[str, anyio.Event] = {}


@task(id="loss.one", retry=NO_BACKOFF)
async def one(payload: Any, ctx: Context) -> str:
    await GATES["step"].wait()
    first = await ctx.step("first", lambda: "done")  # the step records are loaded first
    await GATES["metadata"].wait()
    await ctx.set_metadata(stage="after")
    return str(first)


async def _cut_while_waiting(
    database: str, client: Client, start_daemon: Any, gate: str, lock_sql: str, statement: str
) -> None:
    """Hold ``lock_sql``'s lock, open ``gate`` so that the run's ``statement`` waits on it,
    terminate that statement's connection, release the lock: the run must complete on its
    first attempt."""
    GATES.update(step=anyio.Event(), metadata=anyio.Event())
    holder = await asyncpg.connect(database)
    watcher = await asyncpg.connect(database)
    try:
        async with start_daemon([one]):
            run_id = await client.trigger("loss.one", {})
            for other in GATES.keys() - {gate}:
                GATES[other].set()

            async def at_the_gate() -> bool:
                if gate == "metadata":  # past the step: it waits on nothing the lock holds
                    return bool(await watcher.fetchval("SELECT count(*) FROM taskd.steps"))
                status = await watcher.fetchval(
                    "SELECT status FROM taskd.runs WHERE id = $1", run_id
                )
                return bool(status == "executing")

            await wait_for(at_the_gate)
            async with holder.transaction():
                await holder.execute(lock_sql.replace("$run_id", f"'{run_id}'"))
                GATES[gate].set()

                async def waiting() -> int | None:
                    pid: int | None = await watcher.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND position($1 in query) > 0",
                        statement,
                    )
                    return pid

                pid = await wait_for(waiting)
                assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
            run = await wait_for_run(client, run_id)
    finally:
        await holder.close()
        await watcher.close()
    assert (run.status, run.attempt) == (RunStatus.COMPLETED, 1), [
        (a.outcome, a.error) for a in run.attempts
    ]
    assert run.output == "done" and run.metadata == {"stage": "after"}


async def test_a_step_load_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, start_daemon: Any
) -> None:
    await _cut_while_waiting(
        database,
        client,
        start_daemon,
        "step",
        "LOCK TABLE taskd.steps IN ACCESS EXCLUSIVE MODE",
        "FROM taskd.steps WHERE run_id",
    )


async def test_a_metadata_write_cut_by_a_lost_connection_is_retried(
    database: str, client: Client, start_daemon: Any
) -> None:
    await _cut_while_waiting(
        database,
        client,
        start_daemon,
        "metadata",
        "SELECT 1 FROM taskd.runs WHERE id = $run_id FOR UPDATE",
        "SET metadata",
    )


def _where(failed: list[Any]) -> dict[str, int]:
    """How many failed attempts per error type and taskd call that raised it."""
    counts: dict[str, int] = {}
    for row in failed:
        frames = re.findall(r'File "[^"]*/(daemon/[^"]+)", line \d+, in (\w+)', row["traceback"])
        key = f"{row['type']} in {frames[-1][1] if frames else '?'}"
        counts[key] = counts.get(key, 0) + 1
    return counts

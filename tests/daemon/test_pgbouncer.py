"""PgBouncer in transaction mode between the daemon's pools and PostgreSQL (issue 18 item 5).

A real PgBouncer (Debian's package, 1.18: no max_prepared_statements, no
ignore_startup_parameters in its config) is started in front of the test server. The daemon's
pools and the producer's go through it (``statement_cache_size = 0``); its session connections
(LISTEN, the worker lock, the event relay, the change feed, the migrations' lock) go to
``database.direct_url``. The whole lifecycle works through it: a trigger, a run with steps, a
durable wait, a child run, a queue limit, a cron schedule firing, a cancel. Without
``direct_url``, or with it pointing at the pooler, the daemon stops at start with one line
naming ``database.direct_url``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import asyncpg
import pytest

from taskd import Client, Context, Queue, RunStatus, ScheduledRun, schedules, task, wait
from taskd.app import Daemon
from taskd.config import DatabaseSettings, Settings
from taskd.errors import ConfigError
from taskd.sdk.registry import Registry
from taskd.store.pooler import Pooling, _connect_and_look
from taskd.testing.daemon import running_daemon, test_settings
from tests.support.pgbouncer import Bouncer, pgbouncer_missing, running_pgbouncer
from tests.support.waiting import wait_for, wait_for_run

pytestmark = pytest.mark.skipif(pgbouncer_missing() is not None, reason=str(pgbouncer_missing()))

SERVER_CONNECTIONS = 2  # PgBouncer's default_pool_size here: the pooled clients share two
POOL_MIN = 5
ACTIVE: list[int] = [0, 0]  # running now, most at once (pgb.limited)
GATE = anyio.Event()


@pytest.fixture(scope="module")
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    with running_pgbouncer(server_dsn, pool_size=SERVER_CONNECTIONS) as started:
        yield started


def pooled() -> DatabaseSettings:
    return DatabaseSettings(statement_cache_size=0, pool_min_size=POOL_MIN)


@pytest.fixture
async def pooled_client(bouncer: Bouncer, database: str) -> AsyncIterator[Client]:
    async with Client.connect(bouncer.through(database), pooled()) as client:
        yield client


def through_bouncer(database: str) -> Any:
    def configure(settings: Settings) -> None:
        settings.database.direct_url = database
        settings.database.statement_cache_size = 0
        settings.database.pool_min_size = POOL_MIN

    return configure


def square(n: int) -> int:
    return n * n


@task(id="pgb.steps")
async def with_steps(payload: dict[str, Any], ctx: Context) -> int:
    first = await ctx.step("first", square, payload["n"])
    second = await ctx.step("second", square, first)
    return second


@task(id="pgb.child")
async def child(payload: dict[str, Any], ctx: Context) -> int:
    return int(payload["n"]) + 1


@task(id="pgb.parent")
async def parent(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    await wait.for_(seconds=3600)  # suspended (wait_threshold 0.2 s); the test skips the hour
    return {"child": await child.trigger_and_wait({"n": payload["n"]})}


@task(id="pgb.limited", queue=Queue("pgb.one", concurrency=1))
async def limited(payload: dict[str, Any], ctx: Context) -> None:
    ACTIVE[0] += 1
    ACTIVE[1] = max(ACTIVE)
    try:
        for _ in range(3):  # let another run start if the limit did not hold
            await anyio.sleep(0.01)
    finally:
        ACTIVE[0] -= 1


@task(id="pgb.sleeper")
async def sleeper(payload: Any, ctx: Context) -> None:
    await GATE.wait()  # never set: ends canceled


@schedules.task(id="pgb.beat", cron="* * * * * *")
async def beat(payload: ScheduledRun, ctx: Context) -> str:
    return payload.timestamp.isoformat()


TASKS = [with_steps, child, parent, limited, sleeper, beat]


async def skip_wait(db: asyncpg.Connection, run_id: Any) -> None:
    """The waiting run's wake-up time (the run's and its wait step's) moved to now."""
    await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
    await db.execute(
        "UPDATE taskd.steps SET result = to_jsonb((now() - interval '1 second')::text)"
        " WHERE run_id = $1 AND name = 'wait:1'",
        run_id,
    )


async def backends(db: asyncpg.Connection, database: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database.rsplit("/", 1)[1],
    )
    return count


async def test_the_whole_lifecycle_runs_through_pgbouncer_in_transaction_mode(
    bouncer: Bouncer,
    database: str,
    db: asyncpg.Connection,
    pooled_client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = pooled_client
    ACTIVE[:] = [0, 0]
    caplog.set_level(logging.WARNING, logger="taskd")
    async with running_daemon(
        bouncer.through(database),
        TASKS,
        through_bouncer(database),
        concurrency=10,
        wait_threshold=0.2,
    ) as daemon:
        assert daemon.dsn == bouncer.through(database) and daemon.direct_dsn == database
        steps = await client.trigger("pgb.steps", {"n": 3})
        family = await client.trigger("pgb.parent", {"n": 41})
        limited_runs = [await client.trigger("pgb.limited", {}) for _ in range(4)]
        doomed = await client.trigger("pgb.sleeper", {})

        done = await wait_for_run(client, steps)
        assert done.status is RunStatus.COMPLETED and done.output == 81
        assert [s.name for s in done.steps] == ["first", "second"]

        await wait_for(lambda: _status(client, family, RunStatus.WAITING))
        await skip_wait(db, family)
        ended = await wait_for_run(client, family)
        assert ended.status is RunStatus.COMPLETED and ended.output == {"child": 42}
        [kid] = [r for r in await client.list_runs(task="pgb.child") if r.parent_id == family]
        assert kid.status is RunStatus.COMPLETED

        for run_id in limited_runs:
            assert (await wait_for_run(client, run_id)).status is RunStatus.COMPLETED
        assert ACTIVE[1] == 1, "the queue's limit of 1 held through the pooler"

        await wait_for(lambda: _status(client, doomed, RunStatus.EXECUTING))
        await client.cancel(doomed)  # a NOTIFY through the pooler, heard on the direct LISTEN
        canceled = await wait_for_run(client, doomed, statuses=(RunStatus.CANCELED,))
        assert canceled.status is RunStatus.CANCELED

        async def fired() -> bool:
            runs = await client.list_runs(task="pgb.beat")
            return any(r.status is RunStatus.COMPLETED and r.schedule_id for r in runs)

        await wait_for(fired)
        # many pooled clients (the daemon's pools and the producer's, at least 5 each), two
        # server connections for all of them, beside the daemon's four sessions
        assert daemon.listener is not None and daemon.listener.up
        assert daemon.lock is not None and daemon.lock.held
        assert await backends(db, database) <= SERVER_CONNECTIONS + 4
    # the pooler refused the pools' startup parameters: the daemon says which bounds are not
    # applied and how to set them on the role
    warned = [r.getMessage() for r in caplog.records if "startup parameters" in r.getMessage()]
    assert any("ALTER ROLE" in line and "lock_timeout" in line for line in warned), warned
    assert "ProtocolViolation" not in caplog.text and "does not exist" not in caplog.text


async def _status(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


@pytest.mark.parametrize("direct", [False, True])
async def test_a_session_through_the_transaction_pooler_stops_the_start_in_one_line(
    bouncer: Bouncer, database: str, direct: bool
) -> None:
    settings = test_settings(bouncer.through(database))
    settings.database.statement_cache_size = 0
    if direct:  # pointed at the pooler too
        settings.database.direct_url = bouncer.through(database)
    daemon = Daemon(settings, Registry([with_steps]), bouncer.through(database))
    with pytest.raises(ConfigError) as raised:
        with anyio.fail_after(30):
            await daemon.run(handle_signals=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "is a transaction pooler" in message and "TASKD_DATABASE__DIRECT_URL" in message
    key = "database.direct_url" if direct else "database.url"
    assert message.startswith(f"config error: {key} "), message
    assert f"127.0.0.1:{bouncer.port}" in message and "postgres@" not in message


async def test_named_prepared_statements_through_a_pooler_that_loses_them_stop_the_start(
    bouncer: Bouncer, database: str
) -> None:
    # PgBouncer 1.18 keeps no prepared statement for its clients: asyncpg's statement cache
    # would fail under load with "prepared statement ... does not exist"; refused at start
    settings = test_settings(bouncer.through(database))
    settings.database.direct_url = database
    daemon = Daemon(settings, Registry([with_steps]), bouncer.through(database))
    with pytest.raises(ConfigError) as raised:
        with anyio.fail_after(30):
            await daemon.run(handle_signals=False)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        "config error: database.statement_cache_size (TASKD_DATABASE__STATEMENT_CACHE_SIZE): "
    ), message
    assert "does not keep prepared statements" in message and "set it to 0" in message


async def test_a_session_mode_pool_is_a_session_and_postgresql_itself_needs_no_probe(
    server_dsn: str, database: str, bouncer: Bouncer
) -> None:
    settings = DatabaseSettings()
    with running_pgbouncer(server_dsn, pool_mode="session", pool_size=5) as session_pool:
        connection, pooling = await _connect_and_look(session_pool.through(database), settings)
        assert connection is not None
        await connection.close()
        assert pooling == Pooling("session")
    connection, pooling = await _connect_and_look(database, settings)
    assert connection is not None
    await connection.close()
    assert pooling == Pooling("direct")
    cached, pooling = await _connect_and_look(bouncer.through(database), settings)
    if cached is not None:
        await cached.close()
    assert pooling.mode == "transaction" and pooling.statements_lost, pooling

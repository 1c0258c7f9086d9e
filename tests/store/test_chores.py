"""Each chore's ``run_once``, called directly against the database (no daemon): runs are put in
the state the chore acts on, the chore runs once, and the rows say what it did. The run's path
through the rooms: claimer -> in_flight (executor) -> completer; then the maintenance chores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from taskd import Client, Context, task
from taskd.config import RetentionSettings, WorkerSettings
from taskd.models import AttemptOutcome, Outcome, RunStatus
from taskd.sdk.registry import Registry
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker import reconciler
from taskd.worker.claimer import Claimer
from taskd.worker.completer import Completer
from taskd.worker.expirer import Expirer
from taskd.worker.failure_hooks import FailureHooks
from taskd.worker.findings import Findings
from taskd.worker.heartbeat import Heartbeat
from taskd.worker.in_flight import InFlight
from taskd.worker.pruner import Pruner
from taskd.worker.reconciler import Reconciler
from taskd.worker.rescuer import Rescuer
from taskd.worker.subscription_retirer import RETIRE_SUBSCRIPTIONS_AFTER, SubscriptionRetirer
from taskd.worker.sweeper import Sweeper
from taskd.worker.unknown_task_failer import UnknownTaskFailer
from taskd.worker.waker import Waker
from tests.support.waiting import wait_for
from tests.support.workers import register_worker


@task(id="chores.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


HOOKED: list[tuple[uuid.UUID, str, int, Any]] = []


async def remember(payload: Any, error: BaseException, attempt: int, ctx: Context) -> None:
    HOOKED.append((ctx.run_id, type(error).__name__, attempt, payload))


@task(id="chores.hooked", on_failure=remember)
async def hooked(payload: Any, ctx: Context) -> Any:
    return payload


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    pool = await create_pool(database)
    try:
        yield Store(pool)
    finally:
        await pool.close()


async def register(store: Store, lock_key: int | None = None) -> uuid.UUID:
    """A worker serving chores.echo; its lock is held by nobody unless the test takes
    ``lock_key``."""
    return await register_worker(store, ["chores.echo"], host="chores-host", lock_key=lock_key)


async def executing(
    client: Client,
    db: asyncpg.Connection,
    worker_id: uuid.UUID,
    *,
    lease: str = "1 hour",
    attempt: int = 1,
    max_attempts: int | None = None,
) -> uuid.UUID:
    """A run that ``worker_id`` executes, its lease ending ``lease`` from now."""
    run_id = await client.trigger("chores.echo", "seeded")
    await db.execute(
        "UPDATE taskd.runs SET status = 'executing', worker_id = $2, attempt = $3,"
        " max_attempts = $4, lease_expires_at = now() + $5::text::interval,"
        " attempt_started_at = now(), started_at = now() WHERE id = $1",
        run_id,
        worker_id,
        attempt,
        max_attempts,
        lease,
    )
    return run_id


async def status_of(db: asyncpg.Connection, run_id: uuid.UUID) -> str:
    status: str = await db.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id)
    return status


# the run's path: claimer -> in_flight -> completer ------------------------------------------


async def test_claimer_starts_a_batch_and_the_completer_writes_its_outcomes(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    worker_id = await register(store)
    run_ids = [await client.trigger(echo, n) for n in range(3)]
    claimer = Claimer(store, Registry([echo]), WorkerSettings(concurrency=2), worker_id)
    completer = Completer(store, worker_id, claimer)
    in_flight = InFlight(store, Registry([echo]), WorkerSettings(concurrency=2), claimer, completer)

    claimed = await claimer.run_once()
    assert len(claimed) == 2, "at most the free slots"

    async def ended() -> bool:
        return in_flight.in_use == 0

    await wait_for(ended, timeout=5)
    assert {r["status"] for r in await db.fetch("SELECT status FROM taskd.runs")} == {
        "executing",
        "queued",
    }, "an outcome is not written before the completer runs"
    assert await completer.run_once() == 2
    rows = await db.fetch("SELECT id, status, output FROM taskd.runs WHERE status = 'completed'")
    assert sorted(r["id"] for r in rows) == sorted(r.id for r in claimed)
    [left] = set(run_ids) - {r.id for r in claimed}
    assert await status_of(db, left) == "queued"
    assert await completer.run_once() == 0, "nothing left to write"


async def test_completer_hands_back_a_run_without_spending_its_attempt(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    worker_id = await register(store)
    run_id = await executing(client, db, worker_id)
    completer = Completer(store, worker_id)
    completer.add_handback(run_id, 1, "chores.echo")
    assert completer.leases() == [(run_id, 1)], "its lease is still held until written"
    assert await completer.run_once() == 1
    row = await db.fetchrow(
        "SELECT status, attempt, worker_id FROM taskd.runs WHERE id = $1", run_id
    )
    assert (row["status"], row["attempt"], row["worker_id"]) == ("queued", 0, None)


async def test_completer_writes_an_outcome_only_for_the_worker_that_holds_the_run(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    owner, other = await register(store), await register(store)
    run_id = await executing(client, db, owner)
    outcome = Outcome(
        run_id, 1, RunStatus.COMPLETED, AttemptOutcome.COMPLETED, output=orjson.dumps("done")
    )
    stranger = Completer(store, other)
    stranger.add_outcome(outcome)
    assert await stranger.run_once() == 0
    assert await status_of(db, run_id) == "executing"
    completer = Completer(store, owner)
    completer.add_outcome(outcome)
    assert await completer.run_once() == 1
    assert await status_of(db, run_id) == "completed"


async def test_heartbeat_renews_leases_until_the_worker_is_declared_gone(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    worker_id = await register(store)
    run_id = await executing(client, db, worker_id, lease="1 second")
    gone: list[bool] = []
    settings = WorkerSettings(lease=60, heartbeat=10)
    heartbeat = Heartbeat(
        store, settings, worker_id, lambda: [(run_id, 1)], lambda: gone.append(True)
    )
    assert await heartbeat.run_once() is True
    left = await db.fetchval(
        "SELECT lease_expires_at - now() FROM taskd.runs WHERE id = $1", run_id
    )
    assert left > timedelta(seconds=50), "renewed for a whole lease"
    await store.workers.mark_gone([worker_id])
    assert await heartbeat.run_once() is False
    assert gone == [], "run_once only reports it; the loop calls on_gone"


# maintenance chores ----------------------------------------------------------------------------


async def test_rescuer_hands_back_an_expired_lease_and_fails_a_last_attempt(
    store: Store, client: Client, db: asyncpg.Connection, database: str
) -> None:
    holder = await asyncpg.connect(database)  # a live worker: its lock is held
    try:
        await holder.execute("SELECT pg_advisory_lock(4711)")
        live = await register(store, lock_key=4711)
        expired = await executing(client, db, live, lease="-1 second")
        last = await executing(client, db, live, lease="-1 second", attempt=3, max_attempts=3)
        held = await executing(client, db, live)
        me = await register(store)
        rescuer = Rescuer(store, WorkerSettings(), me)
        assert await rescuer.run_once() == 2
        assert await rescuer.run_once() == 0, "a live worker's lock: never gone"
    finally:
        await holder.close()
    assert await status_of(db, expired) == "queued"
    assert await status_of(db, held) == "executing"
    failed = await db.fetchrow("SELECT status, error FROM taskd.runs WHERE id = $1", last)
    assert failed["status"] == "failed" and orjson.loads(failed["error"])["type"] == "WorkerLost"
    outcomes = await db.fetch(
        "SELECT outcome FROM taskd.attempts WHERE run_id = ANY($1::uuid[])", [expired, last]
    )
    assert sorted(r["outcome"] for r in outcomes) == ["lost", "lost"]
    report = orjson.loads(
        await db.fetchval("SELECT last_report FROM taskd.workers WHERE id = $1", me)
    )
    assert report["trigger"] == "rescue"
    assert (report["counts"]["handed_back"], report["counts"]["failed"]) == (1, 1)
    assert rescuer.findings.hooks_due.is_set(), "the failed run's on_failure hook is owed"


async def test_reconciler_hands_back_the_runs_of_a_gone_worker_at_once(
    store: Store, client: Client, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler, "RECHECK_DELAY", 0)  # the second look at once
    gone = await register(store)  # nobody holds its lock
    run_id = await executing(client, db, gone)  # its lease has an hour left
    me = await register(store)
    nudged: list[int] = []
    reconcile = Reconciler(
        store, me, Rescuer(store, WorkerSettings(), me), handed_back=lambda: nudged.append(1)
    )
    assert await reconcile.run_once() == 1
    assert await status_of(db, run_id) == "queued"
    assert await db.fetchval("SELECT stopped_at FROM taskd.workers WHERE id = $1", gone)
    assert nudged == [1], "the claimer is nudged for what came back"
    report = orjson.loads(
        await db.fetchval("SELECT last_report FROM taskd.workers WHERE id = $1", me)
    )
    assert report["trigger"] == "startup" and report["gone_worker_count"] == 1
    assert await reconcile.run_once() == 0


async def test_waker_moves_due_waits_back_to_the_queue(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    due, later = await client.trigger(echo, 1), await client.trigger(echo, 2)
    for run_id, at in ((due, "-1 second"), (later, "1 hour")):
        await db.execute(
            "UPDATE taskd.runs SET status = 'waiting', attempt = 1,"
            " run_at = now() + $2::text::interval WHERE id = $1",
            run_id,
            at,
        )
    waker = Waker(store, uuid.uuid4())
    assert await waker.run_once() == 1
    assert await status_of(db, due) == "queued"
    assert await status_of(db, later) == "waiting"
    assert await waker.run_once() == 0


async def test_expirer_ends_queued_runs_past_their_ttl(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    past = await client.trigger(echo, 1, ttl="1h")
    fresh = await client.trigger(echo, 2, ttl="1h")
    retried = await client.trigger(echo, 3, ttl="1h")  # it started once: ttl no longer counts
    await db.execute(
        "UPDATE taskd.runs SET expires_at = now() - interval '1 second' WHERE id = ANY($1::uuid[])",
        [past, retried],
    )
    await db.execute("UPDATE taskd.runs SET started_at = now() WHERE id = $1", retried)
    findings = Findings(store, uuid.uuid4())
    expirer = Expirer(store, uuid.uuid4(), findings=findings)
    assert await expirer.run_once() == 1
    assert [await status_of(db, r) for r in (past, fresh, retried)] == [
        "expired",
        "queued",
        "queued",
    ]
    assert findings.report.counts["expired"] == 1, "the next rescue reports it"


async def test_unknown_task_failer_fails_runs_nobody_serves_once_they_waited(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    waited = await client.trigger("chores.nobody", {})
    fresh = await client.trigger("chores.nobody", {})
    await db.execute(
        "UPDATE taskd.runs SET run_at = now() - interval '2 minutes' WHERE id = $1", waited
    )
    off = UnknownTaskFailer(store, WorkerSettings(), uuid.uuid4())
    assert await off.run_once() == 0, "unknown_task_timeout 0: runs wait"
    failer = UnknownTaskFailer(store, WorkerSettings(unknown_task_timeout=60), uuid.uuid4())
    assert await failer.run_once() == 1
    error = await db.fetchval("SELECT error FROM taskd.runs WHERE id = $1", waited)
    assert orjson.loads(error)["type"] == "UnknownTask"
    assert await status_of(db, fresh) == "queued"


async def test_pruner_deletes_finished_runs_past_their_retention(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    finished, running = await client.trigger(echo, 1), await client.trigger(echo, 2)
    await db.execute(
        "UPDATE taskd.runs SET status = 'completed', finished_at = now() WHERE id = $1", finished
    )
    pruner = Pruner(store, RetentionSettings(runs=86_400, events=0, workers=0))
    assert (await pruner.run_once())["runs"] == 0, "finished today: kept"
    later = datetime.now(UTC) + timedelta(days=2)
    assert (await pruner.run_once(now=later))["runs"] == 1
    assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE id = $1", finished) == 0
    assert await status_of(db, running) == "queued", "a run not finished is never pruned"
    assert pruner.pruned["runs"] == 1


async def test_subscription_retirer_deletes_the_subscriptions_of_tasks_long_unserved(
    store: Store, db: asyncpg.Connection
) -> None:
    await register(store)  # a live worker: it serves chores.echo
    for task_id, unserved_for in (
        ("chores.removed", RETIRE_SUBSCRIPTIONS_AFTER + 60),
        ("chores.deploying", 60.0),  # a deploy's gap: it comes back
        ("chores.echo", RETIRE_SUBSCRIPTIONS_AFTER + 60),
    ):
        await db.execute(
            "INSERT INTO taskd.tasks (id, queue, max_attempts, updated_at)"
            " VALUES ($1, 'default', 3, now() - make_interval(secs => $2))",
            task_id,
            unserved_for,
        )
        await db.execute(
            "INSERT INTO taskd.subscriptions (event_name, task_id) VALUES ('chores.happened', $1)",
            task_id,
        )
    retirer = SubscriptionRetirer(store)
    assert await retirer.run_once() == [("chores.happened", "chores.removed")]
    left = await db.fetch("SELECT task_id FROM taskd.subscriptions ORDER BY task_id")
    assert [r["task_id"] for r in left] == ["chores.deploying", "chores.echo"]
    assert await retirer.run_once() == []


async def test_failure_hooks_run_the_owed_hooks_of_the_tasks_served_here(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    HOOKED.clear()
    me = await register(store)
    lost = await client.trigger(hooked, {"n": 1})
    elsewhere = await client.trigger("chores.elsewhere", {})
    for run_id in (lost, elsewhere):
        await db.execute(
            "UPDATE taskd.runs SET status = 'failed', attempt = 3, finished_at = now(),"
            " error = $2::jsonb WHERE id = $1",
            run_id,
            '{"type": "WorkerLost", "message": "lost with its worker"}',
        )
    await db.execute(
        "INSERT INTO taskd.failure_hooks (run_id, task_id)"
        " SELECT id, task_id FROM taskd.runs WHERE id = ANY($1::uuid[])",
        [lost, elsewhere],
    )
    hooks = FailureHooks(store, Registry([hooked]), me)
    assert await hooks.run_once() == 1, "only the hooks of the tasks served here"
    assert HOOKED == [(lost, "FailedOutsideAttempt", 3, {"n": 1})]
    assert hooks.ran == 1
    owed = await db.fetch("SELECT run_id FROM taskd.failure_hooks")
    assert [r["run_id"] for r in owed] == [elsewhere], "a hook run is done: its row goes"
    assert await hooks.run_once() == 0


async def test_one_sweep_reports_what_its_expirer_and_failer_ended_in_its_own_rescue(
    store: Store, client: Client, db: asyncpg.Connection
) -> None:
    expired = await client.trigger(echo, 1, ttl="1h")
    unknown = await client.trigger("chores.nobody", {})
    await db.execute(
        "UPDATE taskd.runs SET expires_at = now() - interval '1 second' WHERE id = $1", expired
    )
    await db.execute(
        "UPDATE taskd.runs SET run_at = now() - interval '2 minutes' WHERE id = $1", unknown
    )
    me = await register(store)
    settings = WorkerSettings(unknown_task_timeout=60)
    findings = Findings(store, me)
    sweeper = Sweeper(
        settings,
        Expirer(store, me, findings=findings),
        UnknownTaskFailer(store, settings, me, findings=findings),
        Rescuer(store, settings, me, findings=findings),
        SubscriptionRetirer(store),
    )
    await sweeper.run_once()  # a first pass runs every chore, in order
    assert await status_of(db, expired) == "expired"
    assert await status_of(db, unknown) == "failed"
    report = orjson.loads(
        await db.fetchval("SELECT last_report FROM taskd.workers WHERE id = $1", me)
    )
    assert report["trigger"] == "rescue"
    assert (report["counts"]["expired"], report["counts"]["unknown_task"]) == (1, 1)
    assert report["run_ids"]["unknown_task"] == {"chores.nobody": [str(unknown)]}
    assert report["run_ids"]["expired"] == {"chores.echo": [str(expired)]}

    # within the heartbeat, a pass only expires: the next rescue reports it
    later = await client.trigger(echo, 2, ttl="1h")
    await db.execute(
        "UPDATE taskd.runs SET expires_at = now() - interval '1 second' WHERE id = $1", later
    )
    await sweeper.run_once()
    assert await status_of(db, later) == "expired"
    assert findings.report.counts["expired"] == 1, "not reported yet"
    assert findings.last_report is not None and findings.last_report.counts["expired"] == 1

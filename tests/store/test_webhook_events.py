"""Status webhooks in the database (migration 0018): which status changes become which events,
for which subscriptions, and the chain that sends one delivery of a (subscription, run) at a
time, in order. No daemon: runs are moved with plain UPDATEs, as every room's SQL does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from taskd.store.store import Store
from taskd.store.webhooks import SubscriptionSpec
from tests.support.runs import insert_run
from tests.support.waiting import wait_for

ALL = [
    "run.started",
    "run.completed",
    "run.failed",
    "run.canceled",
    "run.expired",
    "run.attempt_failed",
    "run.waiting",
]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def subscribe(db: asyncpg.Connection, name: str, **filters: Any) -> None:
    await db.execute(
        "INSERT INTO taskd.webhook_subscriptions (name, url, events, tasks, queues, tags, secret)"
        " VALUES ($1, 'http://127.0.0.1:9/hook', $2, $3, $4, $5, $6)",
        name,
        filters.get("events", ALL),
        filters.get("tasks"),
        filters.get("queues"),
        filters.get("tags"),
        SECRET,
    )


async def move(db: asyncpg.Connection, run_id: uuid.UUID, status: str, **columns: Any) -> None:
    sets = ["status = $2"] + [f"{k} = {v}" for k, v in columns.items()]
    await db.execute(f"UPDATE taskd.runs SET {', '.join(sets)} WHERE id = $1", run_id, status)


async def events(db: asyncpg.Connection, run_id: uuid.UUID, name: str = "all") -> list[str]:
    rows = await db.fetch(
        "SELECT d.event FROM taskd.webhook_deliveries d JOIN taskd.webhook_subscriptions s"
        " ON s.id = d.subscription_id WHERE d.run_id = $1 AND s.name = $2 ORDER BY d.seq",
        run_id,
        name,
    )
    return [r["event"] for r in rows]


async def test_no_subscription_no_delivery(db: asyncpg.Connection) -> None:
    run = await insert_run(db, task_id="t")
    await move(db, run, "executing", attempt="1")
    await move(db, run, "completed")
    assert await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 1


async def test_each_status_change_maps_to_its_event(db: asyncpg.Connection) -> None:
    await subscribe(db, "all")
    run = await insert_run(db, task_id="t", max_attempts=3)
    await move(db, run, "executing", attempt="1")
    await move(db, run, "queued", error="""'{"message": "boom"}'""")  # a retry: same attempt
    await move(db, run, "executing", attempt="2")
    await move(db, run, "queued", attempt="1")  # a drain's hand-back: attempt given back
    await move(db, run, "executing", attempt="2")
    await move(db, run, "waiting")
    await move(db, run, "queued")  # woken: no event
    await move(db, run, "executing", attempt="3")
    await move(db, run, "failed", error="""'{"message": "boom again"}'""")
    assert await events(db, run) == [
        "run.started",
        "run.attempt_failed",
        "run.started",
        "run.started",
        "run.waiting",
        "run.started",
        "run.failed",
    ]
    for final, event in (
        ("completed", "run.completed"),
        ("canceled", "run.canceled"),
        ("expired", "run.expired"),
    ):
        other = await insert_run(db, task_id="t")
        await move(db, other, final)
        assert await events(db, other) == [event]


async def test_payload_is_the_runs_state_at_that_moment(db: asyncpg.Connection) -> None:
    await subscribe(db, "all")
    run = await insert_run(
        db, task_id="t", tags=["user:1"], idempotency_key="k1", queue="q", max_attempts=2
    )
    await move(db, run, "executing", attempt="1", started_at="now()")
    await move(db, run, "completed", output="""'{"ok": true}'""", finished_at="now()")
    rows = await db.fetch(
        "SELECT payload FROM taskd.webhook_deliveries WHERE run_id = $1 ORDER BY seq", run
    )
    started, completed = (orjson.loads(r["payload"]) for r in rows)
    assert started["type"] == "run.started"
    assert started["data"]["status"] == "executing" and started["data"]["output"] is None
    assert completed["type"] == "run.completed"
    data = completed["data"]
    assert data["id"] == str(run) and data["task"] == "t" and data["queue"] == "q"
    assert data["output"] == {"ok": True} and data["attempt"] == 1 and data["max_attempts"] == 2
    assert data["tags"] == ["user:1"] and data["idempotency_key"] == "k1"
    assert data["finished_at"] is not None and completed["timestamp"].endswith("Z")


async def test_filters_by_event_task_queue_and_tag(db: asyncpg.Connection) -> None:
    await subscribe(db, "done", events=["run.completed"])
    await subscribe(db, "task-a", tasks=["a"])
    await subscribe(db, "queue-q", queues=["q"])
    await subscribe(db, "tagged", tags=["vip", "beta"])
    await db.execute("UPDATE taskd.webhook_subscriptions SET paused = true WHERE name = 'done'")
    a = await insert_run(db, task_id="a", queue="q", tags=["beta"])
    b = await insert_run(db, task_id="b", queue="other")
    for run in (a, b):
        await move(db, run, "executing", attempt="1")
        await move(db, run, "completed")
    assert await events(db, a, "done") == [] == await events(db, b, "done")  # paused
    assert await events(db, a, "task-a") == ["run.started", "run.completed"]
    assert await events(db, b, "task-a") == []
    assert await events(db, a, "queue-q") == ["run.started", "run.completed"]
    assert await events(db, b, "queue-q") == []
    assert await events(db, a, "tagged") == ["run.started", "run.completed"]
    assert await events(db, b, "tagged") == []


async def delivery_runs(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT r.id, r.status, r.queue, r.payload, d.seq, d.status AS delivery FROM taskd.runs r"
        " JOIN taskd.webhook_deliveries d ON d.delivery_run_id = r.id"
        " WHERE r.task_id = 'taskd.webhook' ORDER BY d.seq"
    )


async def test_one_delivery_run_at_a_time_per_subscription_and_run(
    db: asyncpg.Connection,
) -> None:
    await subscribe(db, "all")
    run = await insert_run(db, task_id="t")
    await move(db, run, "executing", attempt="1")
    await move(db, run, "completed")
    states = await db.fetch(
        "SELECT seq, status, delivery_run_id FROM taskd.webhook_deliveries ORDER BY seq"
    )
    assert [(r["seq"], r["status"]) for r in states] == [(1, "sending"), (2, "pending")]
    first = await delivery_runs(db)
    assert len(first) == 1 and first[0]["queue"] == "taskd.webhooks"
    assert first[0]["status"] == "queued"
    # the delivery run's own moves make no events
    await move(db, first[0]["id"], "executing", attempt="1")
    await move(db, first[0]["id"], "queued")  # its retry
    await move(db, first[0]["id"], "executing", attempt="2")
    await move(db, first[0]["id"], "completed")
    runs = await delivery_runs(db)
    assert [(r["seq"], r["delivery"], r["status"]) for r in runs] == [
        (1, "delivered", "completed"),
        (2, "sending", "queued"),
    ]
    await move(db, runs[1]["id"], "failed", error="""'{"message": "HTTP 500"}'""")
    row = await db.fetchrow("SELECT status, last_error FROM taskd.webhook_deliveries WHERE seq = 2")
    assert (row["status"], row["last_error"]) == ("dead", "HTTP 500")
    assert await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries") == 2


async def test_redelivery_of_a_dead_delivery(database: str, db: asyncpg.Connection) -> None:
    await subscribe(db, "all", events=["run.completed"])
    run = await insert_run(db, task_id="t")
    await move(db, run, "completed")
    (sender,) = await delivery_runs(db)
    await move(db, sender["id"], "failed")
    delivery = await db.fetchval("SELECT id FROM taskd.webhook_deliveries")
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        store = Store(pool)
        assert (await store.webhooks.delivery(delivery) or {})["status"] == "dead"
        was, again = await store.webhooks.redeliver(delivery)
        assert was == "dead" and again is not None and again != sender["id"]
        assert await store.webhooks.redeliver(delivery) == ("sending", None)
        assert await store.webhooks.redeliver(uuid.uuid4()) == (None, None)
        await move(db, again, "completed")
        assert (await store.webhooks.delivery(delivery) or {})["status"] == "delivered"
    finally:
        await pool.close()


async def test_config_sync_and_disable_after_failing(database: str) -> None:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        hooks = Store(pool).webhooks
        spec = SubscriptionSpec("jobs", "http://127.0.0.1:9/a", ["run.completed"])
        old = SubscriptionSpec("old", "http://127.0.0.1:9/b", ["run.failed"])
        await hooks.sync_config([(spec, SECRET, True), (old, SECRET, True)], 60)
        assert await hooks.sync_config([(spec, SECRET + "x", True)], 60) == ["old"]
        listed = {s["name"]: s for s in await hooks.subscriptions()}
        assert listed["old"]["enabled"] is False
        assert listed["old"]["disabled_reason"] == "no longer in the config"
        assert listed["jobs"]["rotating"] is True and listed["jobs"]["source"] == "config"
        assert "secret" not in listed["jobs"]
    finally:
        await pool.close()


async def test_finished_deliveries_go_with_the_runs_retention(
    database: str, db: asyncpg.Connection
) -> None:
    await subscribe(db, "all", events=["run.completed"])
    for _ in range(3):
        await move(db, await insert_run(db, task_id="t"), "completed")
    senders = await delivery_runs(db)
    await move(db, senders[0]["id"], "completed")  # delivered
    await move(db, senders[1]["id"], "failed")  # dead; the third is still being sent
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        hooks = Store(pool).webhooks
        assert await hooks.prune(datetime.now(UTC) - timedelta(days=1), 10) == 0
        assert await hooks.prune(datetime.now(UTC) + timedelta(seconds=1), 10) == 2
        assert await db.fetchval("SELECT status FROM taskd.webhook_deliveries") == "sending"
    finally:
        await pool.close()


async def waiting_for_a_lock(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


@pytest.mark.parametrize("first", ["delivery_ends", "event_captured"])
async def test_an_event_captured_while_the_delivery_before_it_ends_is_sent(
    database: str, db: asyncpg.Connection, first: str
) -> None:
    """The race of the chain: the next event of a run is captured in one transaction while
    the delivery run of the event before it ends in another. Whichever goes first, the new
    delivery gets its run."""
    await subscribe(db, "all", events=["run.started", "run.completed"])
    run = await insert_run(db, task_id="t")
    await move(db, run, "executing", attempt="1")
    (sender,) = await delivery_runs(db)
    ends = await asyncpg.connect(database)
    captures = await asyncpg.connect(database)
    try:
        end_tx, capture_tx = ends.transaction(), captures.transaction()
        await end_tx.start()
        await capture_tx.start()
        end = ("UPDATE taskd.runs SET status = 'completed' WHERE id = $1", sender["id"])
        capture = ("UPDATE taskd.runs SET status = 'completed' WHERE id = $1", run)
        one, other = (ends, captures) if first == "delivery_ends" else (captures, ends)
        first_sql, second_sql = (end, capture) if first == "delivery_ends" else (capture, end)
        await one.execute(*first_sql)
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: other.execute(*second_sql))
            await wait_for(lambda: waiting_for_a_lock(db))
            await (end_tx if one is ends else capture_tx).commit()
        await (capture_tx if one is ends else end_tx).commit()
    finally:
        await ends.close()
        await captures.close()
    rows = await db.fetch(
        "SELECT seq, status, delivery_run_id FROM taskd.webhook_deliveries ORDER BY seq"
    )
    assert [(r["seq"], r["status"]) for r in rows] == [(1, "delivered"), (2, "sending")]
    assert rows[1]["delivery_run_id"] is not None


async def test_attempts_start_and_clear_failing_and_disable_after_a_day(
    database: str, db: asyncpg.Connection
) -> None:
    await subscribe(db, "all")
    run_id = await insert_run(db, task_id="wh.task")
    await move(db, run_id, "executing")
    delivery = await db.fetchval(
        "SELECT id FROM taskd.webhook_deliveries WHERE run_id = $1", run_id
    )
    row = "SELECT xmin::text AS xmin, failing_since, enabled FROM taskd.webhook_subscriptions"
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    try:
        hooks = Store(pool).webhooks
        healthy = await db.fetchrow(row)
        # a success of a subscription that was not failing writes nothing to its row (ten
        # deliveries at once to one receiver do not queue on it)
        assert (
            await hooks.record_attempt(
                delivery, ok=True, status=204, error=None, disable_after=86400
            )
            is None
        )
        assert await db.fetchrow(row) == healthy
        # a failure starts failing_since; a second keeps it; a success clears it
        await hooks.record_attempt(delivery, ok=False, status=500, error=None, disable_after=86400)
        first = (await db.fetchrow(row))["failing_since"]
        assert first is not None
        await hooks.record_attempt(delivery, ok=False, status=500, error=None, disable_after=86400)
        assert (await db.fetchrow(row))["failing_since"] == first
        await hooks.record_attempt(delivery, ok=True, status=200, error=None, disable_after=86400)
        assert (await db.fetchrow(row))["failing_since"] is None
        # failing for longer than disable_after: the next failure disables it, saying why
        await hooks.record_attempt(delivery, ok=False, status=503, error=None, disable_after=86400)
        await db.execute(
            "UPDATE taskd.webhook_subscriptions SET failing_since = now() - interval '25h'"
        )
        reason = await hooks.record_attempt(
            delivery, ok=False, status=503, error=None, disable_after=86400
        )
        assert reason is not None and reason.startswith("its deliveries have failed since ")
        assert "HTTP 503" in reason
        assert (await db.fetchrow(row))["enabled"] is False
        # a success after that does not re-enable it (resume does), nor says it again
        assert (
            await hooks.record_attempt(
                delivery, ok=True, status=204, error=None, disable_after=86400
            )
            is None
        )
        assert (await db.fetchrow(row))["enabled"] is False
    finally:
        await pool.close()

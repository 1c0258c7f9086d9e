"""Status webhooks are captured by one statement-level trigger (migration 0019): an UPDATE of
many runs looks for subscriptions once, not once per run, and with subscriptions each run's
status change still becomes its own events, in order, as 0018's row trigger made them."""

from __future__ import annotations

import uuid

import asyncpg
import orjson

from tests.support.runs import insert_run, insert_runs

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALL = ["run.started", "run.completed", "run.failed", "run.attempt_failed", "run.waiting"]


async def calls_in_transaction(db: asyncpg.Connection, function: str) -> int:
    """How often `function` was called in the current transaction (track_functions = 'pl')."""
    return int(
        await db.fetchval(
            "SELECT coalesce(pg_stat_get_xact_function_calls($1::regproc), 0)", function
        )
    )


async def test_a_status_update_of_many_runs_looks_once_without_subscription(
    db: asyncpg.Connection,
) -> None:
    ids = await insert_runs(db, 200, task_id="t")
    async with db.transaction():
        await db.execute("SET LOCAL track_functions = 'pl'")
        await db.execute(
            "UPDATE taskd.runs SET status = 'executing', attempt = 1 WHERE id = ANY($1)", ids
        )
        await db.execute(
            "UPDATE taskd.runs SET status = 'completed', finished_at = now() WHERE id = ANY($1)",
            ids,
        )
        # 0018's row trigger: 400 calls (one per run and status change)
        assert await calls_in_transaction(db, "taskd.webhook_capture") == 2
    assert await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries") == 0


async def test_each_run_of_one_statement_gets_its_events_in_order(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO taskd.webhook_subscriptions (name, url, events, secret)"
        " VALUES ('all', 'http://127.0.0.1:9/hook', $1, $2)",
        ALL,
        SECRET,
    )
    ids = await insert_runs(db, 40, task_id="t", max_attempts=3)
    sender = await insert_run(db, task_id="taskd.webhook")  # never captured
    half = ids[:20]
    async with db.transaction():
        await db.execute(
            "UPDATE taskd.runs SET status = 'executing', attempt = 1,"
            " lease_expires_at = now() + interval '1 minute' WHERE id = ANY($1) OR id = $2",
            ids,
            sender,
        )
        # a heartbeat: no status changes, no event
        await db.execute(
            "UPDATE taskd.runs SET lease_expires_at = now() + interval '2 minutes'"
            " WHERE id = ANY($1)",
            ids,
        )
        # one statement, two outcomes: half completed, half retried (same attempt)
        await db.execute(
            "UPDATE taskd.runs r SET status = o.status, lease_expires_at = NULL,"
            " output = CASE WHEN o.status = 'completed' THEN '{\"n\": 1}'::jsonb END"
            " FROM unnest($1::uuid[], $2::text[]) AS o (id, status) WHERE r.id = o.id",
            ids,
            ["completed" if i in half else "queued" for i in ids],
        )
        await db.execute(
            "UPDATE taskd.runs SET status = 'executing', attempt = 2"
            " WHERE id = ANY($1) AND status = 'queued'",
            ids,
        )
    rows = await db.fetch(
        "SELECT run_id, seq, event, payload FROM taskd.webhook_deliveries ORDER BY run_id, seq"
    )
    seen: dict[uuid.UUID, list[tuple[int, str, str]]] = {}
    for r in rows:
        data = orjson.loads(r["payload"])["data"]
        seen.setdefault(r["run_id"], []).append((r["seq"], r["event"], data["status"]))
    assert sender not in seen
    for run in ids:
        if run in half:
            expected = [(1, "run.started", "executing"), (2, "run.completed", "completed")]
        else:
            expected = [
                (1, "run.started", "executing"),
                (2, "run.attempt_failed", "queued"),
                (3, "run.started", "executing"),
            ]
        assert seen[run] == expected, run
    # one delivery of each (subscription, run) is being sent, the rest wait their turn
    sending = await db.fetchval(
        "SELECT count(*) FROM taskd.webhook_deliveries WHERE status = 'sending'"
    )
    assert sending == len(ids)


async def test_filters_apply_per_run_within_one_statement(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO taskd.webhook_subscriptions (name, url, events, queues, tags, secret)"
        " VALUES ('some', 'http://127.0.0.1:9/hook', $1, $2, $3, $4)",
        ["run.completed"],
        ["q1"],
        ["vip"],
        SECRET,
    )
    ids = [
        await insert_run(db, task_id="t", queue=queue, tags=tags)
        for queue, tags in (("q1", ["vip"]), ("q1", []), ("q2", ["vip"]), ("q2", []))
    ]
    await db.execute(
        "UPDATE taskd.runs SET status = 'completed', finished_at = now() WHERE id = ANY($1)", ids
    )
    got = await db.fetch("SELECT run_id, event FROM taskd.webhook_deliveries")
    assert [(r["run_id"], r["event"]) for r in got] == [(ids[0], "run.completed")]


async def test_a_statement_larger_than_work_mem_captures_every_changed_run(
    db: asyncpg.Connection,
) -> None:
    """The transition tables spill to temporary files past work_mem, and the capture reads
    them by a join under its own planner settings, whatever the caller's (taskd.claim_runs
    turns hash joins off): every run whose status changed gets its one delivery, no other."""
    await db.execute(
        "INSERT INTO taskd.webhook_subscriptions (name, url, events, tasks, secret)"
        " VALUES ('canceled', 'http://127.0.0.1:9/hook', '{run.canceled}', '{t}', $1)",
        SECRET,
    )
    ids = await insert_runs(db, 5_000, task_id="t")
    others = await insert_runs(db, 1_000, task_id="other")
    already = ids[:100]
    await db.execute("UPDATE taskd.runs SET status = 'canceled' WHERE id = ANY($1)", already)
    assert await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries") == 100
    async with db.transaction():
        await db.execute("SET LOCAL work_mem = '64kB'")
        await db.execute("SET LOCAL enable_hashjoin = off")
        await db.execute("SET LOCAL enable_mergejoin = off")
        # every run in one statement: 100 whose status does not change, 1,000 not subscribed
        await db.execute(
            "UPDATE taskd.runs SET status = 'canceled', finished_at = now()"
            " WHERE id = ANY($1) OR id = ANY($2)",
            ids,
            others,
        )
    rows = await db.fetch(
        "SELECT run_id, count(*) AS n FROM taskd.webhook_deliveries GROUP BY run_id"
    )
    assert {r["run_id"] for r in rows} == set(ids)
    assert all(r["n"] == 1 for r in rows)

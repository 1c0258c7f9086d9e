"""`taskd webhooks ...` as a user runs it, in subprocesses: add (the secret printed once), list,
pause, resume, rotate, deliveries (a dead letter), redeliver, delete; bad input is one line on
stderr."""

from __future__ import annotations

import json

import asyncpg

from tests.support.cli import one_line_failure, taskd, taskd_all
from tests.support.runs import insert_run


async def test_webhooks_cli(database: str, db: asyncpg.Connection) -> None:
    added = await taskd(
        database,
        "webhooks",
        "add",
        "jobs",
        "http://127.0.0.1:9/hook",
        "--events",
        "run.completed,run.failed",
        "--tags",
        "vip",
    )
    assert added.code == 0, added
    assert "its secret (shown once): whsec_" in added.out
    secret = added.out.rsplit(": ", 1)[1].strip()
    bad = await taskd_all(
        database,
        {
            "event": ["webhooks", "add", "x", "http://127.0.0.1:9/", "--events", "run.done"],
            "taken": ["webhooks", "add", "jobs", "http://127.0.0.1:9/", "--events", "run.failed"],
            "missing": ["webhooks", "pause", "nope"],
            "delivery": ["webhooks", "redeliver", "not-a-delivery"],
        },
    )
    assert one_line_failure(bad["event"], "unknown webhook event(s): run.done") is None
    assert one_line_failure(bad["taken"], "exists already") is None
    assert one_line_failure(bad["missing"], "no webhook named 'nope'") is None
    assert one_line_failure(bad["delivery"], "not-a-delivery") is None

    # a dead delivery (its run failed), as the daemon leaves one after the last try
    run = await insert_run(db, task_id="t", tags=["vip"])
    await db.execute("UPDATE taskd.runs SET status = 'completed' WHERE id = $1", run)
    sender = await db.fetchval("SELECT delivery_run_id FROM taskd.webhook_deliveries")
    await db.execute(
        "UPDATE taskd.runs SET status = 'failed', error = '{\"message\": \"HTTP 500\"}'"
        " WHERE id = $1",
        sender,
    )
    results = await taskd_all(
        database,
        {
            "pause": ["webhooks", "pause", "jobs"],
            "dead": ["webhooks", "deliveries", "jobs", "--status", "dead", "--json"],
            "table": ["webhooks", "deliveries"],
        },
    )
    assert results["pause"].code == 0 and "paused webhook jobs" in results["pause"].out
    (dead,) = json.loads(results["dead"].out)
    assert dead["run_id"] == str(run) and dead["last_error"] == "HTTP 500"
    assert dead["event"] == "run.completed" and dead["status"] == "dead"
    assert dead["id"] in results["table"].out
    listed = await taskd(database, "webhooks", "list")
    assert "jobs" in listed.out and "paused" in listed.out and "tags=vip" in listed.out
    assert secret not in listed.out

    results = await taskd_all(
        database,
        {
            "resume": ["webhooks", "resume", "jobs"],
            "rotate": ["webhooks", "rotate", "jobs", "--overlap", "1h"],
        },
    )
    assert results["resume"].code == 0, results["resume"]
    assert "new secret (shown once): whsec_" in results["rotate"].out
    assert secret not in results["rotate"].out
    again = await taskd(database, "webhooks", "redeliver", dead["id"])
    assert again.code == 0 and "redelivering" in again.out, again
    busy = await taskd(database, "webhooks", "redeliver", dead["id"])
    assert one_line_failure(busy, "it is being sent") is None
    (shown,) = json.loads((await taskd(database, "webhooks", "list", "--json")).out)
    assert shown["rotating"] is True and shown["pending"] == 1 and "secret" not in shown
    deleted = await taskd(database, "webhooks", "delete", "jobs")
    assert deleted.code == 0 and "deleted webhook jobs" in deleted.out
    assert await db.fetchval("SELECT count(*) FROM taskd.webhook_deliveries") == 0

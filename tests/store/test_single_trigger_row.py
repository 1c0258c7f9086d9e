"""A single trigger writes its run from scalars (runs.sql ``insert_one``), a batch by unnesting
arrays (``insert_many``): both must write the same row and wake the daemons the same way, for
every option a trigger takes (issue 18: the single-call enqueue)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg

from taskd import Client

OPTIONS: dict[str, Any] = {
    "priority": 7,
    "max_attempts": 4,
    "retry": {"min_delay": 2, "factor": 3},
    "max_duration": "90s",
    "tags": ["a", "b"],
    "queue": "single-q",
    "ttl": "1h",
    "concurrency_key": "user-1",
}
# what may differ between two runs triggered a moment apart
VARYING = {"id", "payload", "created_at", "run_at", "expires_at", "idempotency_key"}


async def rows(db: asyncpg.Connection, ids: list[Any]) -> list[dict[str, Any]]:
    found = await db.fetch("SELECT * FROM taskd.runs WHERE id = ANY($1::uuid[]) ORDER BY id", ids)
    return [dict(r) for r in found]


def same_but_varying(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: (a[k], b[k]) for k in a if k not in VARYING and a[k] != b[k]}


async def test_one_run_and_a_batch_write_the_same_row(
    client: Client, db: asyncpg.Connection
) -> None:
    for extra in ({}, {"delay": "10m"}, {"run_at": datetime.now(UTC) + timedelta(hours=2)}):
        single = await client.trigger("t.single", {"n": 1}, **OPTIONS, **extra)
        batch = await client.batch_trigger("t.single", [{"n": 2}, {"n": 3}], **OPTIONS, **extra)
        [one] = await rows(db, [single])
        two = await rows(db, batch)
        assert [json.loads(r["payload"]) for r in [one, *two]] == [{"n": 1}, {"n": 2}, {"n": 3}]
        for other in two:
            assert same_but_varying(one, other) == {}, extra
            # the times are the caller's or now() plus the same offsets
            assert abs(one["run_at"] - other["run_at"]) < timedelta(seconds=5)
            assert abs(one["expires_at"] - other["expires_at"]) < timedelta(seconds=5)
        assert one["queue"] == "single-q" and one["tags"] == ["a", "b"]
        assert one["concurrency_key"] == "user-1" and one["max_duration"] == 90.0


async def test_one_run_defaults_its_queue_from_the_task_row_and_wakes_it(
    client: Client, db: asyncpg.Connection, database: str
) -> None:
    await db.execute(
        "INSERT INTO taskd.tasks (id, queue, max_attempts, settings)"
        " VALUES ('t.declared', 'declared-q', 3, '{}')"
    )
    heard: list[str] = []
    woken = anyio.Event()

    def on_notify(connection: object, pid: int, channel: str, payload: str) -> None:
        heard.append(payload)
        woken.set()

    listener = await asyncpg.connect(database)
    try:
        await listener.add_listener("taskd_wakeup", on_notify)
        delayed = await client.trigger("t.declared", None, delay="1h")  # no wake-up: not due
        due = await client.trigger("t.declared", None)
        with anyio.fail_after(5):
            await woken.wait()  # notifications arrive in commit order: the delayed run's first
    finally:
        await listener.close()
    assert heard == ["declared-q"]
    found = await rows(db, [delayed, due])
    assert [r["queue"] for r in found] == ["declared-q", "declared-q"]
    unknown = await client.trigger("t.nowhere", None)
    assert (await rows(db, [unknown]))[0]["queue"] == "default"

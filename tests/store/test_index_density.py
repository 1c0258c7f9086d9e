"""The indexes that list a name's rows newest first stay dense as rows arrive (migration 0021).

Ids are UUIDv7: each new row has the highest id so far. In a (name, id DESC) index that put every
new entry at the left edge of a page, which PostgreSQL splits in half and never fills again:
runs_task_idx grew to 1.8 times the same index built afresh, and each trigger paid for the
splits. Here runs and events arrive as producers send them (batches of one task, single
triggers of another between them) and each index must stay within 1.2 times its size built
afresh from the same rows (ascending: 1.0x; descending: 1.78x).
"""

from __future__ import annotations

import asyncpg

from taskd import Client

BATCHES = 10
PER_BATCH = 1_000
SINGLES = 5


async def pages(db: asyncpg.Connection, index: str) -> int:
    return int(await db.fetchval("SELECT pg_relation_size($1::regclass) / 8192", index))


async def test_runs_of_a_task_and_events_of_a_name_keep_their_indexes_dense(
    client: Client, db: asyncpg.Connection
) -> None:
    for _ in range(BATCHES):
        await client.batch_trigger("report.daily", [{"n": i} for i in range(PER_BATCH)])
        for _ in range(SINGLES):
            await client.trigger("email.send", {})
        await db.execute(
            "INSERT INTO taskd.events (id, name) SELECT taskd.new_run_id(), 'order.paid'"
            " FROM generate_series(1, $1)",
            PER_BATCH,
        )
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == BATCHES * (PER_BATCH + SINGLES)

    await db.execute("CREATE INDEX afresh_runs ON taskd.runs (task_id, id)")
    await db.execute("CREATE INDEX afresh_events ON taskd.events (name, id)")
    runs_task, afresh = await pages(db, "taskd.runs_task_idx"), await pages(db, "taskd.afresh_runs")
    assert runs_task <= 1.2 * afresh, (runs_task, afresh)
    events_name = await pages(db, "taskd.events_name_idx")
    afresh = await pages(db, "taskd.afresh_events")
    assert events_name <= 1.2 * afresh, (events_name, afresh)
    await db.execute("DROP INDEX taskd.afresh_runs, taskd.afresh_events")

    # newest first is still one scan of the index, backward, that stops at the limit
    plan = await db.fetchval(
        "EXPLAIN (FORMAT JSON, COSTS OFF) SELECT id FROM taskd.runs"
        " WHERE task_id = 'email.send' ORDER BY id DESC LIMIT 20"
    )
    assert '"Index Name": "runs_task_idx"' in plan and '"Backward"' in plan, plan
    newest = await db.fetch(
        "SELECT id FROM taskd.runs WHERE task_id = 'email.send' ORDER BY id DESC LIMIT 3"
    )
    every = await db.fetch("SELECT id FROM taskd.runs WHERE task_id = 'email.send'")
    assert [r["id"] for r in newest] == sorted((r["id"] for r in every), reverse=True)[:3]

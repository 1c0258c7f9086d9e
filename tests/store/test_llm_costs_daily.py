"""taskd.llm_costs_daily, the daily sums the console's cost chart reads, stays equal to the sums
of taskd.llm_calls: through inserts of one or many calls, two writers adding to the same rows
at once, the pruner's deletes, and the calls recorded before its migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import asyncpg
import pytest

from taskd.store import migrations
from taskd.store.database import connect, create_pool
from taskd.store.retention import RetentionStore

NOW = datetime.now(UTC).replace(hour=12)

# every call, summed straight from taskd.llm_calls, per dimension, UTC day and group
FROM_CALLS = """
SELECT g.dimension, (c.started_at AT TIME ZONE 'UTC')::date AS day, g.grp, count(*) AS calls,
       sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens,
       coalesce(sum(c.cost_usd), 0) AS cost_usd
  FROM taskd.llm_calls c
 CROSS JOIN LATERAL (
     SELECT 'all', '' UNION ALL SELECT 'task', c.task_id
     UNION ALL SELECT 'key', coalesce(c.concurrency_key, '')
     UNION ALL SELECT 'model', c.model
     UNION ALL SELECT 'tag', t FROM unnest(CASE WHEN c.tags = '{}' THEN '{""}' ELSE c.tags END) t
 ) AS g (dimension, grp)
 GROUP BY 1, 2, 3
"""
KEPT = (
    "SELECT dimension, day, grp, calls, input_tokens, output_tokens, cost_usd"
    " FROM taskd.llm_costs_daily"
)

INSERT = (
    "INSERT INTO taskd.llm_calls (task_id, concurrency_key, tags, model, kind, outcome,"
    " input_tokens, output_tokens, cost_usd, started_at)"
    " SELECT task, key, tags::text[], model, kind, outcome, input, output, cost, started"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::bigint[], $8::bigint[], $9::numeric[], $10::timestamptz[])"
    " AS u (task, key, tags, model, kind, outcome, input, output, cost, started)"
)


def _calls(n: int, offset: int = 0) -> list[list[Any]]:
    """n calls over 4 days, 3 tasks, 2 keys and none, 2 models, tags or none, some unpriced."""
    rows = []
    for i in range(offset, offset + n):
        tags = [["a"], ["a", "b"], []][i % 3]
        rows.append(
            [
                f"task.{i % 3}",
                [None, "acme", "zeta"][i % 3 if i % 2 else 0],
                "{" + ",".join(tags) + "}",
                ["haiku", "sonnet"][i % 2],
                "message",
                "ok",
                100 + i,
                10 + i,
                None if i % 7 == 0 else Decimal(i) / 1000,
                NOW - timedelta(days=i % 4, minutes=i),
            ]
        )
    return [list(column) for column in zip(*rows, strict=True)]


async def _same(db: asyncpg.Connection) -> None:
    expected = sorted(tuple(row) for row in await db.fetch(FROM_CALLS))
    kept = sorted(tuple(row) for row in await db.fetch(KEPT))
    assert kept == expected
    assert expected, "the test has calls to sum"


async def test_inserts_and_prunes_keep_the_sums(database: str, db: asyncpg.Connection) -> None:
    await db.execute(INSERT, *_calls(1))
    await db.execute(INSERT, *_calls(40, offset=1))
    await _same(db)
    # two writers adding to the same rows at once (the call writers of two daemons)
    pool = await create_pool(database, size=2)
    try:
        async with anyio.create_task_group() as group:
            for offset in (100, 200, 300, 400):
                group.start_soon(pool.execute, INSERT, *_calls(60, offset=offset))
        # the pruner's batches take their calls away; rows left with no call go
        retention = RetentionStore(pool)
        while await retention.prune_llm_calls(NOW - timedelta(days=1, hours=12), 25):
            pass
    finally:
        await pool.close()
    await _same(db)
    oldest = await db.fetchval("SELECT min(day) FROM taskd.llm_costs_daily")
    assert oldest == (NOW - timedelta(days=1)).date()
    await db.execute("DELETE FROM taskd.llm_calls")
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_costs_daily") == 0


async def test_calls_recorded_before_the_migration_are_summed(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations.shipped_migrations()
    [daily] = [m for m in shipped if m.name == "llm_costs_daily"]
    monkeypatch.setattr(
        migrations, "shipped_migrations", lambda: [m for m in shipped if m.version < daily.version]
    )
    connection = await connect(empty_database)
    try:
        await migrations.apply_migrations(connection)
        await connection.execute(INSERT, *_calls(30))
        monkeypatch.setattr(migrations, "shipped_migrations", lambda: shipped)
        applied = await migrations.apply_migrations(connection)
        assert [m.name for m in applied] == [m.name for m in shipped if m.version >= daily.version]
        await _same(connection)
    finally:
        await connection.close()

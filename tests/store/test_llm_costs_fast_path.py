"""GET /api/costs reads the daily sums (taskd.llm_costs_daily) for the whole UTC days of its
range and sums only the calls of the partial days at its ends: its answer is the one summing
every call gives (the same groups, dollars to the last digit and scale, tokens, order, total
and truncation), for every grouping and filter, and it does not read the calls of the whole
days. Its migration (0016) sums every column for the calls recorded before it."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from taskd.store import migrations
from taskd.store.database import connect, create_pool
from taskd.store.llm import CallFilter, LLMStore

# six UTC days of calls, ending yesterday
FIRST_DAY = datetime.combine(datetime.now(UTC).date() - timedelta(days=6), time(), UTC)
RUNS = [uuid.UUID(int=n + 1) for n in range(4)]

INSERT = (
    "INSERT INTO taskd.llm_calls (run_id, task_id, concurrency_key, tags, model, kind, outcome,"
    " input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, cost_usd, started_at)"
    " SELECT run, task, key, tags::text[], model, 'message', 'ok', input, output, cw, cr, cost,"
    " started"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],"
    " $7::bigint[], $8::bigint[], $9::bigint[], $10::numeric[], $11::timestamptz[])"
    " AS u (run, task, key, tags, model, input, output, cw, cr, cost, started)"
)


def _calls(n: int, seed: int) -> list[list[Any]]:
    """n calls spread over the six days (some at midnight), 3 tasks, 3 keys and none, 2
    models, tags (none, one, two, one twice), cache tokens, some without a price (with tokens
    or without: a 429) and one task none of whose calls has a price."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task = rng.choice(["mail.send", "ai.summarize", "ai.free"])
        tokens = [rng.randrange(0, 5000), rng.randrange(0, 900)]
        cache = [rng.choice([0, 0, 2000]), rng.choice([0, 500])]
        if rng.random() < 0.1:
            tokens, cache = [0, 0], [0, 0]
        priced = task != "ai.free" and rng.random() > 0.15
        cost = Decimal(rng.randrange(0, 10**8)) / 10**10 if priced else None
        if i % 17 == 0:
            started = FIRST_DAY + timedelta(days=rng.randrange(7))  # a midnight
        else:
            started = FIRST_DAY + timedelta(microseconds=rng.randrange(6 * 86_400 * 10**6))
        rows.append(
            [
                rng.choice(RUNS),
                task,
                rng.choice([None, "acme", "zeta", "beta"]),
                rng.choice(["{}", "{a}", "{a,b}", "{b,b}", "{c}"]),
                rng.choice(["claude-haiku-4-5", "claude-sonnet-4-5"]),
                *tokens,
                *cache,
                cost,
                started,
            ]
        )
    return [list(column) for column in zip(*rows, strict=True)]


@pytest.fixture
async def llm(database: str) -> AsyncIterator[LLMStore]:
    pool = await create_pool(database, size=2)
    try:
        yield LLMStore(pool)
    finally:
        await pool.close()


def _ranges() -> list[tuple[datetime | None, datetime | None]]:
    day = timedelta(days=1)
    return [
        (None, None),
        (FIRST_DAY + timedelta(hours=7, minutes=13), FIRST_DAY + 4 * day + timedelta(hours=5)),
        (FIRST_DAY + day, FIRST_DAY + 3 * day),  # whole days only
        (FIRST_DAY + day + timedelta(microseconds=1), FIRST_DAY + 5 * day),
        (None, FIRST_DAY + 2 * day + timedelta(hours=20)),
        (FIRST_DAY + 3 * day + timedelta(hours=1), None),
        (FIRST_DAY + timedelta(hours=2), FIRST_DAY + day + timedelta(hours=3)),  # no whole day
        (FIRST_DAY + 2 * day + timedelta(hours=9), FIRST_DAY + 2 * day + timedelta(hours=9)),
        (FIRST_DAY - 30 * day, FIRST_DAY - 29 * day),  # no call
    ]


FILTERS: list[dict[str, Any]] = [
    {},
    {"task_id": "ai.summarize"},
    {"task_id": "ai.free"},
    {"concurrency_key": "acme"},
    {"concurrency_key": "nobody"},
    {"concurrency_key": ""},
    {"model": "claude-haiku-4-5"},
    {"tag": "b"},
    {"run_id": RUNS[0]},
    {"task_id": "mail.send", "concurrency_key": "zeta"},
]


def _fast_expected(by: str | None, where: dict[str, Any], since: Any, until: Any) -> bool:
    """Where the daily sums answer (with a whole day in the range)."""
    if since is not None and until is not None:
        first = since.date() + timedelta(days=0 if since.time() == time() else 1)
        if first >= until.date():
            return False
    if by == "run" or "tag" in where or "run_id" in where or len(where) > 1:
        return False
    if where.get("concurrency_key") == "":
        return False
    dimension = {"task_id": "task", "concurrency_key": "key", "model": "model"}
    return not where or by is None or by == dimension[next(iter(where))]


async def _compare_all(llm: LLMStore, odd_calls: bool = False) -> int:
    """Every range, filter, grouping and limit: the answer is the scan's; how many the daily
    sums gave (where expected; with ``odd_calls``, an empty key or tag, where they did)."""
    fast = 0
    for since, until in _ranges():
        for where in FILTERS:
            for by in (None, "task", "key", "model", "tag", "run"):
                for limit in (1, 2, 1000):
                    call_filter = CallFilter(since=since, until=until, **where)
                    scan = await llm.costs_scan(by, call_filter, limit)  # type: ignore[arg-type]
                    daily = await llm.costs_of_days(by, call_filter, limit)  # type: ignore[arg-type]
                    answer = await llm.costs(by, call_filter, limit)  # type: ignore[arg-type]
                    case = f"by={by} {where} [{since}, {until}) limit={limit}"
                    # JSON: the same digits (Decimal scale included), groups, order
                    assert answer.model_dump_json() == scan.model_dump_json(), case
                    if not odd_calls:
                        expected = _fast_expected(by, where, since, until)
                        assert (daily is not None) == expected, case
                    if daily is not None:
                        fast += 1
                        assert daily.model_dump_json() == scan.model_dump_json(), case
    return fast


async def test_the_daily_sums_answer_as_the_scan_does(
    llm: LLMStore, db: asyncpg.Connection
) -> None:
    await db.execute(INSERT, *_calls(400, seed=16))
    await db.execute(INSERT, *_calls(1, seed=17))
    # the pruner's deletes (and calls of a priced group gone: its dollars are 0 again)
    await db.execute("DELETE FROM taskd.llm_calls WHERE id % 9 = 0")
    await db.execute(
        "DELETE FROM taskd.llm_calls WHERE concurrency_key = 'beta' AND cost_usd IS NOT NULL"
        " AND started_at < $1",
        FIRST_DAY + timedelta(days=3),
    )
    # calls changed in place (moved back in time, their price gone): their sums move too
    await db.execute(
        "UPDATE taskd.llm_calls SET started_at = started_at - interval '1 day 3 hours',"
        " cost_usd = CASE WHEN id % 2 = 0 THEN NULL ELSE cost_usd END WHERE id % 7 = 0"
    )
    whole = await llm.costs_scan("key", CallFilter(), 1000)
    assert {row.name for row in whole.rows} == {None, "acme", "zeta", "beta"}
    assert whole.total.unpriced_calls > 0 and whole.total.cache_read_tokens > 0
    assert await _compare_all(llm) > 100


async def test_a_call_with_an_empty_key_or_tag_is_summed_from_the_calls(
    llm: LLMStore, db: asyncpg.Connection
) -> None:
    """The daily rows count a key '' (a tag '') with the calls without one: where such a call
    is in the range, the report by key (tag) sums the calls."""
    await db.execute(INSERT, *_calls(120, seed=3))
    odd = _calls(2, seed=4)
    odd[2] = ["", None]  # concurrency keys
    odd[3] = ["{a}", '{"",a}']  # tags
    odd[10] = [FIRST_DAY + timedelta(days=2, hours=3)] * 2
    await db.execute(INSERT, *odd)
    covering = CallFilter(since=FIRST_DAY, until=FIRST_DAY + timedelta(days=4))
    before = CallFilter(since=FIRST_DAY, until=FIRST_DAY + timedelta(days=2))
    for by in ("key", "tag"):
        scan = await llm.costs_scan(by, covering, 100)
        assert "" in {row.name for row in scan.rows}
        assert await llm.costs_of_days(by, covering, 100) is None
        assert (await llm.costs(by, covering, 100)) == scan
        earlier = await llm.costs_of_days(by, before, 100)
        assert earlier == await llm.costs_scan(by, before, 100)
    assert await llm.costs_of_days("task", covering, 100) is not None
    assert await _compare_all(llm, odd_calls=True) > 100


async def test_the_calls_of_whole_days_are_not_read(llm: LLMStore, db: asyncpg.Connection) -> None:
    """Changing calls in place behind the daily sums' back (their triggers off): a call of a
    whole day of the range does not change the answer, one of a partial day at its end does."""
    await db.execute(INSERT, *_calls(200, seed=5))
    await db.execute("ALTER TABLE taskd.llm_calls DISABLE TRIGGER USER")
    where = CallFilter(
        since=FIRST_DAY + timedelta(hours=12), until=FIRST_DAY + timedelta(days=3, hours=12)
    )
    before = await llm.costs("task", where, 100)
    assert before == await llm.costs_scan("task", where, 100)
    inner = (FIRST_DAY + timedelta(days=1, hours=1), FIRST_DAY + timedelta(days=3))
    edge = (FIRST_DAY + timedelta(days=3), FIRST_DAY + timedelta(days=3, hours=12))
    change = (
        "UPDATE taskd.llm_calls SET output_tokens = output_tokens + 1000"
        " WHERE started_at >= $1 AND started_at < $2"
    )
    assert await db.execute(change, *inner) != "UPDATE 0"
    after_inner = await llm.costs("task", where, 100)
    assert after_inner == before
    assert (await llm.costs_scan("task", where, 100)).total.output_tokens > (
        before.total.output_tokens
    )
    changed = await db.execute(change, *edge)
    assert changed != "UPDATE 0"
    after_edge = await llm.costs("task", where, 100)
    assert after_edge.total.output_tokens == before.total.output_tokens + 1000 * int(
        changed.split()[1]
    )


async def test_the_migration_sums_every_column_of_the_calls_recorded_before_it(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations.shipped_migrations()
    [full] = [m for m in shipped if m.name == "llm_costs_daily"]
    monkeypatch.setattr(
        migrations, "shipped_migrations", lambda: [m for m in shipped if m.version < full.version]
    )
    connection = await connect(empty_database)
    try:
        await migrations.apply_migrations(connection)
        await connection.execute(INSERT, *_calls(150, seed=9))
        monkeypatch.setattr(migrations, "shipped_migrations", lambda: shipped)
        await migrations.apply_migrations(connection)
        kept = await connection.fetch(
            "SELECT day, calls, cache_write_tokens, cache_read_tokens, priced_calls,"
            " unpriced_calls, cost_usd FROM taskd.llm_costs_daily WHERE dimension = 'all'"
            " ORDER BY day"
        )
        summed = await connection.fetch(
            "SELECT (started_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,"
            " sum(cache_write_tokens) AS cache_write_tokens,"
            " sum(cache_read_tokens) AS cache_read_tokens, count(cost_usd) AS priced_calls,"
            " count(*) FILTER (WHERE cost_usd IS NULL AND input_tokens + output_tokens"
            " + cache_write_tokens + cache_read_tokens > 0) AS unpriced_calls,"
            " coalesce(sum(cost_usd), 0) AS cost_usd"
            " FROM taskd.llm_calls GROUP BY 1 ORDER BY 1"
        )
        assert [tuple(r) for r in kept] == [tuple(r) for r in summed]
        assert sum(r["unpriced_calls"] for r in kept) > 0
    finally:
        await connection.close()

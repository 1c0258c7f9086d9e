"""Every token and dollar, reported: many calls through the fake API (several tenants, tags and
models, a dated model id, one without a price, cache tokens, a refused call), then the sums of
client.costs by each dimension, GET /api/costs, `taskd costs`, /api/runs/{id}, `taskd runs
show` and /metrics, all equal to the sums the test makes from the fake's usage blocks, to the
token and the cent; the retention of call records, which outlive their runs."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from taskd import Client, Context, RunStatus, task
from taskd.config import RetentionSettings
from taskd.models import LLMCall
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.testing.anthropic import FakeAnthropic, Reply
from taskd.worker.pruner import Pruner
from tests.support.cli import one_line_failure, taskd, taskd_all
from tests.support.in_process import admin_url
from tests.support.llm import llm_config
from tests.support.waiting import wait_for_run

HAIKU = "claude-haiku-4-5"
SONNET_DATED = "claude-sonnet-4-5-20250929"  # priced as claude-sonnet-4-5
UNPRICED = "claude-mystery-1"  # no [llm] prices entry
# the test's own price table: dollars per million input / output tokens
PRICES = {HAIKU: ("1", "5"), SONNET_DATED: ("3", "15")}
MILLION = Decimal(1_000_000)
DAY = 86_400.0


@task(id="costs.letter")
async def letter(payload: dict[str, Any], ctx: Context) -> int:
    """``calls`` messages (each in its step), after a token count when ``count`` is set."""
    if payload.get("count"):
        await ctx.llm.messages.count_tokens(
            model=payload["model"], messages=[{"role": "user", "content": "count me"}]
        )
    for i in range(payload["calls"]):

        async def write(i: int = i) -> str:
            prompt = orjson.dumps({"label": payload["label"], "i": i}).decode()
            message = await ctx.llm.messages.create(
                model=payload["model"],
                max_tokens=300,
                messages=[{"role": "user", "content": prompt}],
            )
            block = message.content[0]
            assert block.type == "text"
            return block.text

        await ctx.step(f"write-{i}", write)
    return payload["calls"]


@task(id="costs.insight")
async def insight(payload: dict[str, Any], ctx: Context) -> int:
    return await letter.fn(payload, ctx)  # the same calls, under another task id


@dataclass(frozen=True)
class Plan:
    """One run the test triggers: who it is for and what it calls."""

    label: str
    task_id: str
    model: str
    calls: int
    key: str | None
    tags: tuple[str, ...]
    count: bool = False


PLANS = [
    Plan(f"r{n}", task_id, model, calls, key, tags, count)
    for n, (task_id, model, calls, key, tags, count) in enumerate(
        [
            ("costs.letter", HAIKU, 3, "u-1", ("free", "letters"), False),
            ("costs.letter", HAIKU, 2, "u-1", ("free", "letters"), True),
            ("costs.insight", HAIKU, 1, "u-1", ("free",), False),
            ("costs.letter", SONNET_DATED, 2, "u-2", ("premium", "letters"), False),
            ("costs.insight", SONNET_DATED, 4, "u-2", ("premium",), True),
            ("costs.letter", HAIKU, 1, "u-2", ("premium", "letters"), False),
            ("costs.letter", UNPRICED, 2, "u-3", ("beta",), False),
            ("costs.insight", HAIKU, 3, "u-3", (), False),
            ("costs.letter", SONNET_DATED, 1, None, (), False),
            ("costs.insight", UNPRICED, 1, None, ("beta",), True),
            ("costs.letter", HAIKU, 2, "u-4", ("free", "letters"), False),
            ("costs.insight", SONNET_DATED, 3, "u-4", ("premium",), False),
        ]
    )
]


def usage_for(label: str, i: int) -> tuple[int, int, int, int]:
    """Varied usage, a function of the request: input, output, cache write, cache read."""
    n = int(label[1:]) * 10 + i
    return (
        137 + 31 * n,
        41 + 17 * n,
        1_024 + 3 * n if n % 3 == 0 else 0,
        4_096 + 7 * n if n % 2 == 1 else 0,
    )


def cost_for(model: str, usage: tuple[int, int, int, int]) -> Decimal | None:
    """The test's own arithmetic: cache writes at 1.25 times input, reads at a tenth."""
    if model not in PRICES:
        return None
    price_in, price_out = (Decimal(p) for p in PRICES[model])
    tokens_in, tokens_out, cache_write, cache_read = usage
    return (
        tokens_in * price_in
        + tokens_out * price_out
        + cache_write * price_in * Decimal("1.25")
        + cache_read * price_in * Decimal("0.1")
    ) / MILLION


@dataclass(frozen=True)
class Expected:
    """A call as the test knows it: the fake's usage block, and whose call it was."""

    plan: Plan
    run_id: uuid.UUID
    outcome: str
    usage: tuple[int, int, int, int]
    cost: Decimal | None


@dataclass
class Sums:
    calls: int = 0
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    cost: Decimal = Decimal(0)
    unpriced: int = 0

    def add(self, call: Expected) -> None:
        self.calls += 1
        self.tokens = [a + b for a, b in zip(self.tokens, call.usage, strict=True)]
        if call.cost is not None:
            self.cost += call.cost
        elif any(call.usage):
            self.unpriced += 1

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.calls, *self.tokens, self.cost, self.unpriced)


def sums_by(
    calls: Iterable[Expected], names: Callable[[Expected], Iterable[str | None]]
) -> dict[str | None, tuple[Any, ...]]:
    groups: dict[str | None, Sums] = defaultdict(Sums)
    for call in calls:
        for name in names(call):
            groups[name].add(call)
    return {name: sums.as_tuple() for name, sums in groups.items()}


def total_of(calls: Iterable[Expected]) -> tuple[Any, ...]:
    return sums_by(calls, lambda c: [None])[None]


DIMENSIONS: dict[str, Callable[[Expected], Iterable[str | None]]] = {
    "task": lambda c: [c.plan.task_id],
    "tag": lambda c: list(c.plan.tags) or [None],
    "key": lambda c: [c.plan.key],
    "model": lambda c: [c.plan.model],
    "run": lambda c: [str(c.run_id)],
}


def row_tuple(row: Any) -> tuple[Any, ...]:
    """A CostRow / CostSums (or its JSON) as the test's tuple."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return (
        get("calls"),
        get("input_tokens"),
        get("output_tokens"),
        get("cache_write_tokens"),
        get("cache_read_tokens"),
        Decimal(str(get("cost_usd"))),
        get("unpriced_calls"),
    )


def usd(value: Decimal) -> str:
    """As `taskd costs` prints dollars: 4 decimals (to the cent and finer)."""
    return f"${value.quantize(Decimal('0.0001')):,}"


async def run_everything(
    client: Client, fake: FakeAnthropic, start_daemon: Any
) -> tuple[list[Expected], Any, str, dict[str, Any], dict[str, Any]]:
    """All the plans through one daemon, then one refused call; the expected calls, and what
    the daemon's /metrics, /api/costs?by=key and /api/runs/{id} said before it stopped."""
    served: list[tuple[str, int, str, tuple[int, int, int, int]]] = []

    def answer(body: dict[str, Any]) -> Reply:
        request = orjson.loads(body["messages"][0]["content"])
        usage = usage_for(request["label"], request["i"])
        served.append((request["label"], request["i"], body["model"], usage))
        return Reply(
            f"letter {request['label']}.{request['i']}",
            input_tokens=usage[0],
            output_tokens=usage[1],
            cache_creation_input_tokens=usage[2],
            cache_read_input_tokens=usage[3],
        )

    fake.reply(answer)
    expected: list[Expected] = []
    async with start_daemon([letter, insight], llm_config(fake), concurrency=4) as daemon:
        run_ids: dict[str, uuid.UUID] = {}
        for plan in PLANS:
            run_ids[plan.label] = await client.trigger(
                plan.task_id,
                {
                    "label": plan.label,
                    "model": plan.model,
                    "calls": plan.calls,
                    "count": plan.count,
                },
                tags=list(plan.tags),
                concurrency_key=plan.key,
            )
        for plan in PLANS:
            done = await wait_for_run(client, run_ids[plan.label])
            assert done.status is RunStatus.COMPLETED, done.error
        # a refused request: a call without tokens or cost (and no price needed)
        refused = Plan("r99", "costs.letter", HAIKU, 1, "u-1", ("free",))
        fake.fail_next(status=400, message="prompt is too long")
        run_ids[refused.label] = await client.trigger(
            refused.task_id,
            {"label": refused.label, "model": HAIKU, "calls": 1},
            tags=list(refused.tags),
            concurrency_key=refused.key,
        )
        assert (await wait_for_run(client, run_ids["r99"])).status is RunStatus.FAILED
        async with aiohttp.ClientSession() as http:
            url = admin_url(daemon)
            async with http.get(f"{url}/metrics") as reply:
                assert reply.status == 200
                metrics = await reply.text()
            async with http.get(f"{url}/api/costs", params={"by": "key", "since": "1h"}) as reply:
                assert reply.status == 200, await reply.text()
                api_costs = await reply.json()
            async with http.get(f"{url}/api/runs/{run_ids['r4']}") as reply:
                assert reply.status == 200
                api_run = await reply.json()
    by_label = {plan.label: plan for plan in PLANS}
    for label, _i, model, usage in served:
        plan = by_label[label]
        assert model == plan.model
        expected.append(Expected(plan, run_ids[label], "ok", usage, cost_for(model, usage)))
    for plan in PLANS:
        if plan.count:  # count_tokens: a call, free, with no usage
            zero = Decimal(0) if plan.model in PRICES else None
            expected.append(Expected(plan, run_ids[plan.label], "ok", (0, 0, 0, 0), zero))
    expected.append(Expected(refused, run_ids["r99"], "refused", (0, 0, 0, 0), None))
    return expected, run_ids, metrics, api_costs, api_run


async def test_costs_sum_to_the_token_and_the_cent_everywhere(
    client: Client,
    db: asyncpg.Connection,
    database: str,
    start_daemon: Any,
    fake_anthropic: FakeAnthropic,
) -> None:
    expected, run_ids, metrics, api_costs, api_run = await run_everything(
        client, fake_anthropic, start_daemon
    )
    assert len(expected) == sum(p.calls + p.count for p in PLANS) + 1
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_calls") == len(expected)

    # client.costs, by each dimension: every group and the total, exact
    for by, names in DIMENSIONS.items():
        costs = await client.costs(by=by)  # type: ignore[arg-type]
        assert not costs.truncated
        assert {row.name: row_tuple(row) for row in costs.rows} == sums_by(expected, names), by
        assert row_tuple(costs.total) == total_of(expected), "each call once in the total"
        shown = [row.cost_usd for row in costs.rows]
        assert shown == sorted(shown, reverse=True), "largest cost first"
    total = total_of(expected)
    assert total[6] == 3, "the unpriced model's calls that used tokens, counted apart"
    assert total[5] > Decimal("0.05") and total[5].as_tuple().exponent <= -6

    # what one tenant cost (the application's question), and the filters
    u1 = [c for c in expected if c.plan.key == "u-1"]
    only_u1 = await client.costs(key="u-1", by=None)
    assert only_u1.rows == [] and row_tuple(only_u1.total) == total_of(u1)
    premium_letters = await client.costs(by="model", tag="premium", task="costs.letter")
    assert {r.name: row_tuple(r) for r in premium_letters.rows} == sums_by(
        [c for c in expected if "premium" in c.plan.tags and c.plan.task_id == "costs.letter"],
        DIMENSIONS["model"],
    )
    one_run = await client.costs(run=run_ids["r4"], by="model")
    assert [r.name for r in one_run.rows] == [SONNET_DATED]
    assert row_tuple(one_run.total) == total_of(c for c in expected if c.plan.label == "r4")
    assert (await client.costs(model=UNPRICED, by=None)).total.cost_usd == 0
    top = await client.costs(by="run", limit=3)
    assert top.truncated and len(top.rows) == 3
    assert row_tuple(top.total) == total, "the total counts every call, not the rows shown"

    # the API said the same (dollars as exact strings)
    assert api_costs["by"] == "key" and api_costs["truncated"] is False
    assert {r["name"]: row_tuple(r) for r in api_costs["rows"]} == sums_by(
        expected, DIMENSIONS["key"]
    )
    assert row_tuple(api_costs["total"]) == total
    assert isinstance(api_costs["total"]["cost_usd"], str)
    r4 = [c for c in expected if c.plan.label == "r4"]
    assert row_tuple(api_run["llm_cost"]) == total_of(r4)
    assert api_run["llm_calls_truncated"] is False
    calls = api_run["llm_calls"]
    assert [c["kind"] for c in calls] == ["count_tokens"] + ["message"] * 4
    assert [c["step"] for c in calls] == [None, "write-0", "write-1", "write-2", "write-3"]
    assert {c["model"] for c in calls} == {SONNET_DATED}

    # time ranges: u-3's calls were made 10 days ago (moved in the database, not waited for)
    await db.execute(
        "UPDATE taskd.llm_calls SET started_at = started_at - interval '10 days'"
        " WHERE concurrency_key = 'u-3'"
    )
    recent = [c for c in expected if c.plan.key != "u-3"]
    older = [c for c in expected if c.plan.key == "u-3"]
    week = await client.costs(by="key", since="7d")
    assert {r.name: row_tuple(r) for r in week.rows} == sums_by(recent, DIMENSIONS["key"])
    assert week.since is not None and week.until is None
    before = await client.costs(by="key", until=timedelta(days=7))
    assert {r.name: row_tuple(r) for r in before.rows} == {"u-3": total_of(older)}
    window = await client.costs(
        by="model",
        since=datetime.now(UTC) - timedelta(days=11),
        until=(datetime.now(UTC) - timedelta(days=9)).isoformat(),
    )
    assert {r.name: row_tuple(r) for r in window.rows} == sums_by(older, DIMENSIONS["model"])

    # /metrics: this daemon's counters, by task and model (dollars to the cent)
    for (task_id, model), sums in sums_by_pair(expected).items():
        kinds = dict(zip(("input", "output", "cache_write", "cache_read"), sums[1:5], strict=True))
        for kind, tokens in kinds.items():
            got = metric(metrics, "taskd_llm_tokens_total", task=task_id, model=model, kind=kind)
            assert got == tokens, (task_id, model, kind)
        dollars = metric(metrics, "taskd_llm_cost_usd_total", task=task_id, model=model)
        assert round(Decimal(repr(dollars or 0.0)), 2) == round(sums[5], 2)
        assert abs(Decimal(repr(dollars or 0.0)) - sums[5]) < Decimal("1e-9")  # a float
    outcomes: dict[tuple[str, str, str], int] = defaultdict(int)
    for call in expected:
        outcomes[(call.plan.task_id, call.plan.model, call.outcome)] += 1
    for (task_id, model, outcome), count in outcomes.items():
        got = metric(metrics, "taskd_llm_calls_total", task=task_id, model=model, outcome=outcome)
        assert got == count
    assert metric(metrics, "taskd_llm_cost_usd_total", task="costs.letter", model=UNPRICED) is None

    # the CLI: JSON exact, the table to the cent and finer, runs show
    await db.execute(
        "INSERT INTO taskd.llm_backoffs (model, until, reason) VALUES"
        " ($1, now() + interval '1 hour', 'rate_limit_error: slow down')",
        HAIKU,
    )
    results = await taskd_all(
        database,
        {
            "json": ["costs", "--by", "tag", "--json"],
            "table": ["costs", "--by", "key", "--since", "30d"],
            "week": ["costs", "--by", "none", "--since", "7d"],
            "show": ["runs", "show", str(run_ids["r4"])],
            "queues": ["queues", "list"],
        },
    )
    for result in results.values():
        assert result.code == 0, str(result)
    shown = orjson.loads(results["json"].out)
    assert {r["name"]: row_tuple(r) for r in shown["rows"]} == sums_by(expected, DIMENSIONS["tag"])
    assert row_tuple(shown["total"]) == total
    table = results["table"].out
    for key, sums in sums_by(expected, DIMENSIONS["key"]).items():
        line = next(ln for ln in table.splitlines() if ln.startswith(key or "(no key)"))
        assert f"{sums[0]:,}" in line.split() and f"{sums[1]:,}" in line.split()
        assert usd(sums[5]) in line, (line, sums)
    total_line = next(ln for ln in table.splitlines() if ln.startswith("TOTAL"))
    assert usd(total[5]) in total_line and "+3 unpriced" in total_line
    assert "without a price" in table
    week_total = next(ln for ln in results["week"].out.splitlines() if ln.startswith("TOTAL"))
    assert usd(total_of(recent)[5]) in week_total
    show = results["show"].out
    llm_lines = show[show.index("\nLLM calls") :].splitlines()
    assert sum(SONNET_DATED in line for line in llm_lines) == 5
    assert "write-3" in show and "count_tokens" in show
    assert f"${total_of(r4)[5].quantize(Decimal('0.000001'))}" in show
    queues = results["queues"].out
    assert "backed off" in queues and HAIKU in queues and "slow down" in queues


def sums_by_pair(calls: list[Expected]) -> dict[tuple[str, str], tuple[Any, ...]]:
    groups: dict[tuple[str, str], Sums] = defaultdict(Sums)
    for call in calls:
        groups[(call.plan.task_id, call.plan.model)].add(call)
    return {pair: sums.as_tuple() for pair, sums in groups.items()}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in the exposition text (None: absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            series, value = line.rsplit(" ", 1)
            if sorted(series[len(name) + 1 : -1].split(",")) == sorted(wanted.split(",")):
                return float(value)
    return None


# bad input -------------------------------------------------------------------------------------


async def test_bad_ranges_and_dimensions_are_refused_in_one_line(
    client: Client, db: asyncpg.Connection, database: str, start_daemon: Any
) -> None:
    for kwargs, message in (
        ({"since": "last tuesday"}, "since: not a duration"),
        ({"until": "999y"}, "until: not a duration"),
        ({"since": "6000w"}, "at most 100 years"),
        ({"since": "1d", "until": "7d"}, "is after until"),
        ({"by": "tenant"}, "by must be one of"),
        ({"limit": 0}, "limit must be"),
        ({"key": "u\x001"}, "key must be a string without NUL"),
        ({"task": "a\x00b"}, "task must be a string without NUL"),
    ):
        with pytest.raises(ValueError, match=message):
            await client.costs(**kwargs)
    async with start_daemon([]) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        for query in (
            {"since": "last tuesday"},
            {"since": "1d", "until": "7d"},
            {"by": "tenant"},
            {"until": "9999-12-31T23:00:00-05:00"},
        ):
            async with http.get(f"{url}/api/costs", params=query) as reply:
                assert reply.status == 400, (query, await reply.text())
                assert "error" in await reply.json()
        async with http.get(f"{url}/api/costs", params={"by": "model"}) as reply:
            empty = await reply.json()
        assert empty["rows"] == [] and empty["total"]["calls"] == 0
        assert Decimal(empty["total"]["cost_usd"]) == 0
        # /api/queues also lists the models the fleet holds backed off (and only while they are)
        await db.execute(
            "INSERT INTO taskd.llm_backoffs (model, until, overloads, reason) VALUES"
            " ($1, now() + interval '5 minutes', 3, 'overloaded_error'),"
            " ($2, now() - interval '1 second', 0, 'rate_limit_error')",
            SONNET_DATED,
            HAIKU,
        )
        async with http.get(f"{url}/api/queues") as reply:
            backoffs = (await reply.json())["llm_backoffs"]
        assert [(b["model"], b["overloads"], b["reason"]) for b in backoffs] == [
            (SONNET_DATED, 3, "overloaded_error")
        ]
        assert [b.model for b in await client.llm_backoffs()] == [SONNET_DATED]
    result = await taskd(database, "costs", "--since", "yesterday")
    assert one_line_failure(result, "since: not a duration") is None


# retention ---------------------------------------------------------------------------------------


def call_at(started: datetime, run_id: uuid.UUID | None, cost: str) -> LLMCall:
    return LLMCall(
        run_id=run_id,
        task_id="costs.letter",
        attempt=1,
        step=None,
        queue="default",
        concurrency_key="u-1",
        tags=[],
        model=HAIKU,
        kind="message",
        outcome="ok",
        input_tokens=100,
        output_tokens=10,
        cache_write_tokens=0,
        cache_read_tokens=0,
        cost_usd=Decimal(cost),
        latency_ms=5,
        stop_reason="end_turn",
        request_id=None,
        error=None,
        started_at=started,
    )


async def test_call_records_are_pruned_after_their_own_retention_and_outlive_runs(
    client: Client, db: asyncpg.Connection, database: str
) -> None:
    now = datetime.now(UTC)
    run_id = uuid.uuid4()  # a run long gone: no foreign key, its costs stay summable
    old = [call_at(now - timedelta(days=500, minutes=m), run_id, "0.25") for m in range(7)]
    kept = [call_at(now - timedelta(days=30, minutes=m), run_id, "0.125") for m in range(3)]
    pool = await create_pool(database)
    try:
        store = Store(pool)
        await store.llm.insert_calls([*old, *kept])
        assert (await client.costs(run=run_id, by=None)).total.cost_usd == Decimal("2.125")

        keeping = Pruner(store, RetentionSettings(llm_calls=0, batch=2))
        assert (await keeping.run_once(now=now))["llm_calls"] == 0, "0 keeps them"

        pruner = Pruner(store, RetentionSettings(batch=2))  # the default: 400 days
        assert RetentionSettings().llm_calls == 400 * DAY
        deleted = await pruner.run_once(now=now)
    finally:
        await pool.close()
    assert deleted["llm_calls"] == 7 and pruner.pruned["llm_calls"] == 7
    assert await db.fetchval("SELECT count(*) FROM taskd.llm_calls") == 3
    left = await client.costs(run=run_id, by="key")
    assert [(r.name, r.calls, r.cost_usd) for r in left.rows] == [("u-1", 3, Decimal("0.375"))]

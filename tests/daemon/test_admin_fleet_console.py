"""The admin routes the console's tasks, queues, events, costs and schedules pages call (issue
16, items 6-11), over real HTTP against an in-process daemon: each route's answer as the page
reads it, and its bad input refused with one clear line (400/404/422)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest
from pydantic import BaseModel, Field, create_model

from taskd import Budget, Client, Context, Queue, Rate, schedules, task, wait
from taskd.app import Daemon
from tests.support.admin import admin_daemon
from tests.support.in_process import admin_url
from tests.support.runs import insert_run, insert_runs
from tests.support.waiting import wait_for, wait_for_run


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def error(self) -> str:
        assert isinstance(self.body, dict) and set(self.body) == {"error", "detail"}, self.body
        assert isinstance(self.body["error"], str) and "\n" not in self.body["error"]
        return self.body["error"]


class Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.http.request(method, self.url + path, **kwargs) as response:
            assert response.content_type == "application/json", await response.text()
            return Reply(response.status, await response.json())

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self.call(method, path, **kwargs)
        assert reply.status == 200, reply
        return reply.body


@asynccontextmanager
async def api_of(daemon: Daemon) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as http:
        yield Api(http, admin_url(daemon))


# tasks ---------------------------------------------------------------------------------------


class Invoice(BaseModel):
    customer: str
    amount: int = Field(ge=0)
    lines: list[str] = []


@task(id="fleet.invoice")
async def invoice(payload: Invoice, ctx: Context) -> int:
    return payload.amount


@task(id="fleet.anything")
async def anything(payload: Any, ctx: Context) -> Any:
    return payload


@task(id="fleet.pair")
async def pair(payload: tuple[int, str], ctx: Context) -> None:
    return None


# a model whose JSON Schema is over 32 KiB: not stored
Huge = create_model(  # type: ignore[call-overload]
    "Huge", **{f"field_{i:04d}": (str, Field("", description="x" * 40)) for i in range(600)}
)


@task(id="fleet.opaque")
async def opaque(payload: Callable[[], None], ctx: Context) -> None:
    """A payload type pydantic validates but cannot describe in JSON Schema."""
    return None


@task(id="fleet.huge")
async def huge(payload: Huge, ctx: Context) -> None:  # type: ignore[valid-type]
    return None


async def test_tasks_carry_the_payload_schema_stored_at_registration(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskd.daemon")
    async with admin_daemon(database, [invoice, anything, pair, opaque, huge]):
        pass
    said = [r.getMessage() for r in caplog.records]
    assert any(
        "fleet.huge: its payload schema is not stored" in line and "over 32768" in line
        for line in said
    ), said
    assert any(
        "fleet.opaque: its payload schema is not stored: pydantic cannot describe" in line
        for line in said
    ), said
    # another daemon, serving none of them, answers from what the first one stored
    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        tasks = {t["id"]: t for t in (await api.ok("GET", "/api/tasks"))["tasks"]}
    assert tasks["fleet.invoice"]["served_here"] is False
    assert tasks["fleet.invoice"]["payload_schema"] == Invoice.model_json_schema()
    assert tasks["fleet.invoice"]["payload_schema"]["required"] == ["customer", "amount"]
    assert tasks["fleet.pair"]["payload_schema"]["type"] == "array"
    assert tasks["fleet.anything"]["payload_schema"] is None
    assert tasks["fleet.huge"]["payload_schema"] is None
    assert tasks["fleet.opaque"]["payload_schema"] is None


# queues --------------------------------------------------------------------------------------


@task(id="fleet.limited", queue=Queue("fleet-q", concurrency=3, rate_limit=Rate(10, per="1m")))
async def limited(payload: Any, ctx: Context) -> None:
    return None


async def test_set_and_reset_a_queues_limits(database: str) -> None:
    async with admin_daemon(database, [limited]) as daemon, api_of(daemon) as api:
        depth = await api.ok("PATCH", "/api/queues/fleet-q", json={"concurrency_per_key": 2})
        assert depth["queue"] == "fleet-q" and depth["overridden"] is True
        # left out: kept as declared
        assert (depth["concurrency"], depth["concurrency_limit_per_key"]) == (3, 2)
        assert (depth["rate_limit"], depth["rate_period"]) == (10, 60.0)

        # null clears; rate_period alone keeps the limit in the new window
        depth = await api.ok(
            "PATCH", "/api/queues/fleet-q", json={"concurrency": None, "rate_period": 5}
        )
        assert depth["concurrency"] is None
        assert (depth["rate_limit"], depth["rate_period"]) == (10, 5.0)
        depth = await api.ok("PATCH", "/api/queues/fleet-q", json={"rate_limit": 7})
        assert (depth["rate_limit"], depth["rate_period"]) == (7, 5.0)
        depth = await api.ok("PATCH", "/api/queues/fleet-q", json={"rate_limit": None})
        assert (depth["rate_limit"], depth["rate_period"]) == (None, None)
        listed = await api.ok("GET", "/api/queues")
        assert [q for q in listed["queues"] if q["queue"] == "fleet-q"] == [depth]

        # a queue without a rate needs both
        reply = await api.call("PATCH", "/api/queues/fleet-q", json={"rate_period": 2})
        assert reply.status == 422
        assert "has no rate limit: give rate_limit with rate_period" in reply.error
        depth = await api.ok(
            "PATCH", "/api/queues/fleet-q", json={"rate_limit": 4, "rate_period": 2}
        )
        assert (depth["rate_limit"], depth["rate_period"]) == (4, 2.0)

        # back to the code's limits
        depth = await api.ok("POST", "/api/queues/fleet-q/reset")
        assert depth["overridden"] is False
        assert (depth["concurrency"], depth["concurrency_limit_per_key"]) == (3, None)
        assert (depth["rate_limit"], depth["rate_period"]) == (10, 60.0)

        # a new queue gets its row (as client.set_queue_limits does)
        depth = await api.ok("PATCH", "/api/queues/fresh", json={"concurrency": 1})
        assert (depth["queue"], depth["concurrency"], depth["due"]) == ("fresh", 1, 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "give at least one of concurrency"),
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"concurrency": 2**31}, "concurrency: Input should be less than or equal to"),
        ({"rate_period": 86401, "rate_limit": 1}, "rate_period: Input should be less than"),
        ({"rate_period": None}, "rate_period cannot be removed alone"),
        ({"rate_limit": None, "rate_period": 3}, "rate_period without a rate_limit"),
        ({"limit": 3}, "limit: Extra inputs are not permitted"),
        ({"concurrency": "many"}, "concurrency: Input should be a valid integer"),
    ],
)
async def test_queue_limits_refuse_bad_input(
    database: str, body: dict[str, Any], message: str
) -> None:
    async with admin_daemon(database, [limited]) as daemon, api_of(daemon) as api:
        reply = await api.call("PATCH", "/api/queues/fleet-q", json=body)
        assert reply.status == 422, reply
        assert message in reply.error
        depth = await api.ok("POST", "/api/queues/fleet-q/reset")
        assert depth["concurrency"] == 3  # nothing changed


async def test_queue_routes_answer_404_and_422_for_bad_names(database: str) -> None:
    async with admin_daemon(database, [limited]) as daemon, api_of(daemon) as api:
        reply = await api.call("POST", "/api/queues/nowhere/reset")
        assert (reply.status, reply.error) == (404, "no queue 'nowhere' has settings")
        for body in ({"concurrency": 1}, {"rate_period": 3}):
            reply = await api.call("PATCH", "/api/queues/" + "q" * 201, json=body)
            assert reply.status == 422 and "at most 200 characters" in reply.error
        reply = await api.call("PATCH", "/api/queues/fleet-q", data=b"{not json")
        assert reply.status == 400 and reply.error.startswith("the body is not JSON")


# wait tokens ---------------------------------------------------------------------------------


@task(id="fleet.approval")
async def approval(payload: Any, ctx: Context) -> Any:
    token = await wait.create_token(timeout="1h")
    await ctx.set_metadata(token=str(token.id))
    return {"approved": await wait.for_token(token)}


async def test_complete_a_wait_token(database: str, client: Client) -> None:
    async with admin_daemon(database, [approval]) as daemon, api_of(daemon) as api:
        run_id = await client.trigger("fleet.approval")

        async def token_of_waiting_run() -> str | None:
            run = await client.get_run(run_id)
            return run.metadata["token"] if run.status == "waiting" and run.metadata else None

        token_id = await wait_for(token_of_waiting_run)
        body = await api.ok(
            "POST", f"/api/tokens/{token_id}/complete", json={"output": {"by": "ops", "n": 1}}
        )
        assert body == {"id": token_id, "completed": True}
        run = await wait_for_run(client, run_id)
        assert run.status == "completed"
        assert run.output == {"approved": {"by": "ops", "n": 1}}

        # a second completion changes nothing
        again = await api.ok("POST", f"/api/tokens/{token_id}/complete", json={"output": 2})
        assert again == {"id": token_id, "completed": False}

        unknown = uuid.uuid4()
        reply = await api.call("POST", f"/api/tokens/{unknown}/complete", json={})
        assert reply.status == 404 and str(unknown) in reply.error
        reply = await api.call("POST", "/api/tokens/not-a-token/complete", json={})
        assert (reply.status, reply.error) == (404, "not a token id: 'not-a-token'")
        reply = await api.call(
            "POST", f"/api/tokens/{token_id}/complete", json={"output": 1, "data": 2}
        )
        assert reply.status == 422 and reply.error == "data: Extra inputs are not permitted"
        reply = await api.call(
            "POST", f"/api/tokens/{token_id}/complete", json={"output": "a\u0000b"}
        )
        assert reply.status == 422 and "NUL" in reply.error


# events --------------------------------------------------------------------------------------


@task(id="fleet.on_signup", on_event="fleet.signup")
async def on_signup(payload: Any, ctx: Context) -> None:
    return None


@task(id="fleet.welcome", on_event="fleet.signup")
async def welcome(payload: Any, ctx: Context) -> None:
    return None


async def test_events_newest_first_with_their_runs(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    async with admin_daemon(database, [on_signup, welcome]) as daemon, api_of(daemon) as api:
        sent = [await client.send_event("fleet.signup", {"user": i}) for i in range(3)] + [
            await client.send_event("fleet.other", {"n": 1})
        ]
        page = await api.ok("GET", "/api/events")
        assert [e["id"] for e in page["events"]] == [str(i) for i in reversed(sent)]
        assert page["next_cursor"] is None
        newest_signup = page["events"][1]
        assert newest_signup["name"] == "fleet.signup"
        assert newest_signup["payload"] == {"user": 2} and newest_signup["runs"] == 2
        links = newest_signup["run_links"]
        assert sorted(link["task_id"] for link in links) == ["fleet.on_signup", "fleet.welcome"]
        for link in links:
            run = await client.get_run(link["id"])
            assert (run.event_id, run.task_id) == (sent[2], link["task_id"])
            assert link["status"] in ("queued", "executing", "completed")
        assert page["events"][0]["run_links"] == [] and page["events"][0]["runs"] == 0

        # keyset pages, one name
        first = await api.ok("GET", "/api/events", params={"name": "fleet.signup", "limit": 2})
        assert [e["id"] for e in first["events"]] == [str(sent[2]), str(sent[1])]
        assert first["next_cursor"] == str(sent[1])
        rest = await api.ok(
            "GET",
            "/api/events",
            params={"name": "fleet.signup", "limit": 2, "cursor": first["next_cursor"]},
        )
        assert [e["id"] for e in rest["events"]] == [str(sent[0])]
        assert rest["next_cursor"] is None

        # an event that created many runs links to its first 20, oldest first
        many = await insert_runs(db, 25, task_id="fleet.on_signup", event_id=sent[0])
        oldest = sorted([*many, *(uuid.UUID(x["id"]) for x in rest["events"][0]["run_links"])])
        again = await api.ok("GET", "/api/events", params={"name": "fleet.signup"})
        links = again["events"][2]["run_links"]
        assert [uuid.UUID(link["id"]) for link in links] == oldest[:20]

        for params, message in [
            ({"limit": 201}, "limit: Input should be less than or equal to 200"),
            ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
            ({"cursor": "yesterday"}, "cursor: Input should be a valid UUID"),
            ({"name": ""}, "name: must not be empty"),
            ({"kind": "x"}, "kind: Extra inputs are not permitted"),
        ]:
            reply = await api.call("GET", "/api/events", params=params)
            assert reply.status == 400 and message in reply.error, (params, reply)


# costs per day and budgets -------------------------------------------------------------------


async def _calls(db: asyncpg.Connection, *rows: tuple[Any, ...]) -> None:
    """(days ago, task, key, tags, model, input, output, cost) per call."""
    now = datetime.now(UTC)
    await db.executemany(
        "INSERT INTO taskd.llm_calls (task_id, concurrency_key, tags, model, kind, outcome,"
        " input_tokens, output_tokens, cost_usd, started_at, run_id)"
        " VALUES ($1, $2, $3, $4, 'message', 'ok', $5, $6, $7, $8, $9)",
        [
            (task_id, key, tags, model, inp, out, cost, now - timedelta(days=ago), run_id)
            for ago, task_id, key, tags, model, inp, out, cost, *more in rows
            for run_id in [more[0] if more else None]
        ],
    )


async def test_daily_costs_by_each_dimension(database: str, db: asyncpg.Connection) -> None:
    await _calls(
        db,
        (0, "t.a", "acme", ["vip"], "haiku", 100, 10, Decimal("0.0100000001")),
        (0, "t.a", None, [], "haiku", 200, 20, Decimal("0.02")),
        (0, "t.b", "acme", ["vip", "eu"], "sonnet", 300, 30, Decimal("0.5")),
        (1, "t.b", "zeta", [], "sonnet", 400, 40, None),  # no price: tokens, no dollars
        (2, "t.a", "acme", [], "haiku", 500, 50, Decimal("1.25")),
        (40, "t.a", "acme", [], "haiku", 999, 99, Decimal("9")),  # outside 30 days
    )
    today = datetime.now(UTC).date()

    def day(ago: int) -> str:
        return (today - timedelta(days=ago)).isoformat()

    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        by_task = await api.ok("GET", "/api/costs/daily")
        assert by_task == {
            "days": [
                {"day": day(2), "group": "t.a", "cost_usd": "1.2500000000",
                 "input_tokens": 500, "output_tokens": 50, "calls": 1},
                {"day": day(1), "group": "t.b", "cost_usd": "0",
                 "input_tokens": 400, "output_tokens": 40, "calls": 1},
                {"day": day(0), "group": "t.a", "cost_usd": "0.0300000001",
                 "input_tokens": 300, "output_tokens": 30, "calls": 2},
                {"day": day(0), "group": "t.b", "cost_usd": "0.5000000000",
                 "input_tokens": 300, "output_tokens": 30, "calls": 1},
            ],
            "total_usd": "1.7800000001",
            "others": 0,
        }  # fmt: skip
        by_key = await api.ok("GET", "/api/costs/daily", params={"by": "key", "days": 1})
        assert [(r["group"], r["cost_usd"], r["calls"]) for r in by_key["days"]] == [
            ("acme", "0.5100000001", 2),
            ("", "0.0200000000", 1),
        ]
        by_tag = await api.ok("GET", "/api/costs/daily", params={"by": "tag", "days": 1})
        assert [(r["group"], r["calls"]) for r in by_tag["days"]] == [
            ("vip", 2),
            ("eu", 1),
            ("", 1),
        ]
        # the total counts each call once, whatever its tags
        assert by_tag["total_usd"] == by_key["total_usd"] == "0.5300000001"
        by_model = await api.ok("GET", "/api/costs/daily", params={"by": "model", "days": 400})
        assert {(r["day"], r["group"], r["input_tokens"]) for r in by_model["days"]} == {
            (day(40), "haiku", 999),
            (day(2), "haiku", 500),
            (day(1), "sonnet", 400),
            (day(0), "sonnet", 300),
            (day(0), "haiku", 300),
        }
        assert by_model["total_usd"] == "10.7800000001"
        # the top group by cost stays itself, the others are summed per day (group null)
        top = await api.ok("GET", "/api/costs/daily", params={"by": "key", "top": 1})
        assert top["others"] == 2
        assert [(r["day"], r["group"], r["calls"]) for r in top["days"]] == [
            (day(2), "acme", 1),
            (day(1), None, 1),
            (day(0), "acme", 2),
            (day(0), None, 1),
        ]
        for params, message in [
            ({"days": 0}, "days: Input should be greater than or equal to 1"),
            ({"days": 401}, "days: Input should be less than or equal to 400"),
            ({"by": "run"}, "by: Input should be 'task', 'tag', 'key' or 'model'"),
            ({"top": 201}, "top: Input should be less than or equal to 200"),
        ]:
            reply = await api.call("GET", "/api/costs/daily", params=params)
            assert reply.status == 400 and message in reply.error, (params, reply)


@task(
    id="fleet.tenant_llm",
    queue=Queue("fleet-llm", budget=Budget(usd=5, per="12h", on_exceed="wait")),
)
async def tenant_llm(payload: Any, ctx: Context) -> None:
    return None


@task(id="fleet.capped", budget_usd=2.5)
async def capped(payload: Any, ctx: Context) -> None:
    return None


@task(id="fleet.idle_budget", queue=Queue("fleet-idle", budget=Budget(usd=1)))
async def idle_budget(payload: Any, ctx: Context) -> None:
    return None


async def test_budgets_and_what_they_spent(database: str, db: asyncpg.Connection) -> None:
    async with admin_daemon(database, [tenant_llm, capped, idle_budget]):
        pass  # registered: the queues' budgets and the task's budget_usd are stored
    await db.executemany(
        "INSERT INTO taskd.llm_admissions (queue, concurrency_key, admitted_at, cost)"
        " VALUES ('fleet-llm', $1, now() - $2::text::interval, $3)",
        [
            ("acme", "1 hour", Decimal("1.5")),
            ("acme", "2 hours", Decimal("0.25")),
            ("zeta", "10 minutes", Decimal("3")),
            ("", "1 minute", Decimal("0.1")),
            ("old", "13 hours", Decimal("4")),  # before the 12 h window
        ],
    )
    # the task's unfinished runs: the most any spent; a finished run does not count
    executing = await insert_run(
        db, task_id="fleet.capped", status="executing", attempt=1,
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )  # fmt: skip
    waiting = await insert_run(db, task_id="fleet.capped", status="waiting", attempt=1)
    done = await insert_run(db, task_id="fleet.capped", status="completed", attempt=1)
    await _calls(
        db,
        (0, "fleet.capped", None, [], "haiku", 1, 1, Decimal("0.5"), executing),
        (0, "fleet.capped", None, [], "haiku", 1, 1, Decimal("0.75"), waiting),
        (0, "fleet.capped", None, [], "haiku", 1, 1, Decimal("0.75"), waiting),
        (0, "fleet.capped", None, [], "haiku", 1, 1, Decimal("2.4"), done),
    )
    async with admin_daemon(database, []) as daemon, api_of(daemon) as api:
        before = datetime.now(UTC)
        budgets = (await api.ok("GET", "/api/budgets"))["budgets"]
    queue_entries = [b for b in budgets if b["scope"] == "queue"]
    assert [(b["name"], b["key"], Decimal(b["spent_usd"])) for b in queue_entries] == [
        ("fleet-idle", None, Decimal(0)),
        ("fleet-llm", "zeta", Decimal(3)),
        ("fleet-llm", "acme", Decimal("1.75")),
        ("fleet-llm", "", Decimal("0.1")),
    ]
    llm = queue_entries[1]
    assert (Decimal(llm["limit_usd"]), llm["per"], llm["on_exceed"]) == (5, "12h", "wait")
    window_start = datetime.fromisoformat(llm["window_start"])
    assert abs(window_start - (before - timedelta(hours=12))) < timedelta(minutes=1)
    assert (queue_entries[0]["per"], queue_entries[0]["on_exceed"]) == ("1d", "fail")
    assert [b for b in budgets if b["scope"] == "task"] == [
        {
            "scope": "task",
            "name": "fleet.capped",
            "key": None,
            "limit_usd": "2.5",
            "per": None,
            "spent_usd": "1.5000000000",
            "window_start": None,
            "on_exceed": "fail",
        }
    ]


async def test_the_python_client_reads_the_same(database: str, db: asyncpg.Connection) -> None:
    await _calls(db, (0, "t.a", "acme", [], "haiku", 100, 10, Decimal("0.25")))
    async with Client.connect(database) as client:
        costs = await client.daily_costs(days=7, by="key")
        assert [(c.day, c.group, c.cost_usd, c.calls) for c in costs.days] == [
            (datetime.now(UTC).date(), "acme", Decimal("0.25"), 1)
        ]
        assert isinstance(costs.days[0].day, date) and costs.total_usd == Decimal("0.25")
        assert (await client.budgets()).budgets == []
        with pytest.raises(ValueError, match="by must be one of task, tag, key, model"):
            await client.daily_costs(by="run")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="days must be a whole number from 1 to 400"):
            await client.daily_costs(days=500)


# schedules -----------------------------------------------------------------------------------


@schedules.task(id="fleet.nightly", cron="30 2 * * *", timezone="Europe/Paris")
async def nightly(payload: Any, ctx: Context) -> None:
    return None


async def test_one_schedule(database: str, client: Client) -> None:
    async with admin_daemon(database, [nightly]) as daemon, api_of(daemon) as api:
        listed = (await api.ok("GET", "/api/schedules"))["schedules"]
        [declared] = [s for s in listed if s["task_id"] == "fleet.nightly"]
        one = await api.ok("GET", f"/api/schedules/{declared['id']}")
        assert one == declared
        assert (one["cron"], one["timezone"], one["active"]) == ("30 2 * * *", "Europe/Paris", True)
        assert one["next_fire_at"] is not None
        reply = await api.call("GET", "/api/schedules/sched_nothing")
        assert (reply.status, reply.error) == (404, "no schedule with id 'sched_nothing'")

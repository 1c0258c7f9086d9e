"""Seed 004's ingestion (tasks/run_history.py) end to end on ``ctx.llm``: letters and coaching
insights written by Claude (the fake Anthropic API, through ``[llm] base_url``) and saved in
the app (a local HTTP server standing in for the activities API), batch by batch with the
progress in the run's metadata. The free tier: child runs, at most 5 Claude calls at once,
each text paid for once through 529s, 429s, a failed save and a replay. The premium tier: one
Message Batch per batch of activities at half price, submitted once across a daemon restart,
an errored request written by a replay. What each user's ingestion cost is ``client.costs(
by="key")`` / ``taskd costs --by key --json``, equal to the fake API's usage blocks."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import asyncpg
import orjson
import pytest

from taskd import Client, Run, RunStatus
from taskd.testing.anthropic import FakeAnthropic, Reply
from tasks.run_history import (
    INSIGHT,
    LETTER,
    batch_ingest_run_history,
    generate_coaching_insight,
    generate_run_letter,
)
from tests.support.cli import taskd
from tests.support.fake_http import FakeHttp, Request, fake_http
from tests.support.fake_http import Reply as HttpReply
from tests.support.llm import calls_of, dollars, llm_config
from tests.support.waiting import wait_for, wait_for_run

pytestmark = pytest.mark.timeout(60)

RUN_HISTORY = [batch_ingest_run_history, generate_run_letter, generate_coaching_insight]
TOKENS = {"letter": (300, 150), "insight": (500, 400)}  # the seed's estimates per text
PAGE = 10  # the fake app's largest page, whatever the limit asked


@dataclass
class App:
    """The app's activities API, and what Claude was asked and answered."""

    server: FakeHttp
    activities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failing_saves: dict[str, list[int]] = field(default_factory=dict)
    saves: list[tuple[str, int]] = field(default_factory=list)
    answered: list[tuple[str, str, str]] = field(default_factory=list)
    """(user, kind, activity) of each answer the fake API gave (each one billed)."""

    def add(
        self,
        user: str,
        count: int,
        lettered: Collection[int] = (),
        insighted: Collection[int] = (),
    ) -> None:
        """``count`` activities a-01 (oldest) .. a-NN (newest), newest first."""
        self.activities[user] = [
            {
                "id": f"a-{n:02d}",
                "name": f"Run #{n}",
                "start_date": f"2025-03-{n:02d}T07:00:00Z",
                "distance_m": 5000 + 250 * n,
                "moving_time_s": 1500 + 80 * n,
                "elevation_gain_m": n * 3,
                "average_hr": 140 + n,
                "letter": "an old letter" if n in lettered else None,
                "insight": "an old insight" if n in insighted else None,
            }
            for n in range(count, 0, -1)
        ]

    def activity(self, user: str, activity_id: str) -> dict[str, Any]:
        [found] = [a for a in self.activities[user] if a["id"] == activity_id]
        return found

    # the routes ---------------------------------------------------------------------------

    def listing(self, request: Request) -> Any:
        history = self.activities[request.params["user"]]
        start = int(request.query.get("cursor", "0"))
        end = start + min(int(request.query["limit"]), PAGE)
        return {
            "activities": history[start:end],
            "next_cursor": str(end) if end < len(history) else None,
        }

    def get(self, request: Request) -> Any:
        return self.activity(request.params["user"], request.params["activity"])

    def put(self, request: Request) -> HttpReply:
        what, activity_id = request.params["what"], request.params["activity"]
        statuses = self.failing_saves.get(f"{what}:{activity_id}")
        status = statuses.pop(0) if statuses else 200
        self.saves.append((f"{what}:{activity_id}", status))
        if status == 200:
            self.activity(request.params["user"], activity_id)[what] = request.body[what]
        return HttpReply(status, {"ok": status == 200})

    # Claude -------------------------------------------------------------------------------

    def claude(self, body: dict[str, Any]) -> Reply:
        kind = kind_of(body)
        activity = activity_of(body)
        self.answered.append((body["metadata"]["user_id"], kind, activity))
        tokens_in, tokens_out = TOKENS[kind]
        return Reply(text_of(kind, activity), input_tokens=tokens_in, output_tokens=tokens_out)

    def billed(self, user: str) -> Decimal:
        """What the fake API's usage blocks add up to for ``user``, at Haiku's prices."""
        kinds = Counter(kind for who, kind, _ in self.answered if who == user)
        tokens_in = sum(TOKENS[k][0] * n for k, n in kinds.items())
        tokens_out = sum(TOKENS[k][1] * n for k, n in kinds.items())
        return dollars(tokens_in, tokens_out, "1", "5")


def kind_of(body: dict[str, Any]) -> str:
    return {LETTER.system: "letter", INSIGHT.system: "insight"}[body["system"]]


def activity_of(body: dict[str, Any]) -> str:
    match = re.match(r"Run (\S+):", body["messages"][0]["content"])
    assert match is not None
    return match.group(1)


def text_of(kind: str, activity: str) -> str:
    return f"{kind} for {activity}: the hills asked, and you answered."


def ids(*numbers: int) -> set[str]:
    return {f"a-{n:02d}" for n in numbers}


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch, fake_anthropic: FakeAnthropic) -> AsyncIterator[App]:
    async with fake_http() as server:
        fake = App(server)
        server.route("GET", "/users/{user}/activities", fake.listing)
        server.route("GET", "/users/{user}/activities/{activity}", fake.get)
        server.route("PUT", "/users/{user}/activities/{activity}/{what}", fake.put)
        monkeypatch.setenv("ACTIVITIES_API_URL", server.url(""))
        monkeypatch.setenv("RUN_HISTORY_BATCH_PAUSE_SECONDS", "0.1")
        monkeypatch.delenv("ACTIVITIES_API_KEY", raising=False)
        fake_anthropic.reply(fake.claude)
        yield fake


async def children_of(client: Client, parent: uuid.UUID) -> list[Run]:
    found = []
    for task_id in ("generate-run-letter", "generate-coaching-insight"):
        summaries = await client.list_runs(task=task_id, limit=500)
        found += [await client.get_run(r.id) for r in summaries if r.parent_id == parent]
    return found


async def costs_by_key(client: Client) -> dict[str | None, tuple[Decimal, int, int]]:
    """Dollars and tokens per concurrency key, as ``client.costs(by="key")`` sums them (the
    sums ``taskd costs --by key`` prints)."""
    costs = await client.costs(by="key")
    assert not costs.truncated
    return {row.name: (row.cost_usd, row.input_tokens, row.output_tokens) for row in costs.rows}


async def sample_progress(client: Client, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """What a UI polling the run sees: each new metadata, until the run ends."""
    seen: list[dict[str, Any]] = []
    while True:
        run = await client.get_run(run_id)
        if run.metadata and (not seen or seen[-1] != run.metadata):
            seen.append(run.metadata)
        if run.status.terminal:
            return seen
        await anyio.sleep(0.01)


async def test_free_tier_writes_letters_and_insights_for_the_20_most_recent_in_batches_of_5(
    client: Client,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    app: App,
) -> None:
    app.add("u-free", 25, lettered={24, 10, 3}, insighted={24, 12})
    async with start_daemon(RUN_HISTORY, llm_config(fake_anthropic), poll_interval=0.05):
        run_id = await client.trigger(
            "batch-ingest-run-history",
            {"user_id": "u-free", "tier": "free", "max_activities": 50},
        )
        polled = await sample_progress(client, run_id)
        run = await client.get_run(run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {
        "user_id": "u-free",
        "tier": "free",
        "considered": 20,  # capped, although 50 were asked for
        "skipped": 1,  # a-24 had both
        "letters": 18,
        "insights": 18,
        "failed": 0,
        "failed_items": [],
        "batches": 4,
        "batch_size": 5,
        "input_tokens": 18 * 300 + 18 * 500,
        "output_tokens": 18 * 150 + 18 * 400,
    }
    # the 20 most recent (a-25 .. a-06), each missing text asked of Claude once
    recent = ids(*range(6, 26))
    assert Counter((k, a) for _, k, a in app.answered) == Counter(
        [("letter", a) for a in recent - ids(24, 10)]
        + [("insight", a) for a in recent - ids(24, 12)]
    )
    for activity in app.activities["u-free"]:
        n = int(activity["id"][2:])
        if n >= 6:
            assert activity["letter"] == (
                "an old letter" if n in (24, 10) else text_of("letter", activity["id"])
            )
            assert activity["insight"] == (
                "an old insight" if n in (24, 12) else text_of("insight", activity["id"])
            )
        else:  # never looked at
            assert activity["insight"] is None
    # the Messages API requests, made by the official SDK through ctx.llm
    [request] = [
        r for r in fake_anthropic.message_requests if "Run a-25:" in str(r.body["messages"])
    ][:1]
    assert request.headers["user-agent"].startswith("AsyncAnthropic/Python")
    assert request.body["model"] == "claude-haiku-4-5" and request.body["max_tokens"] > 0
    assert request.body["metadata"] == {"user_id": "u-free"}
    # batches: for each, its letters then its insights, the pause between batches
    assert [s.name for s in run.steps] == [
        "list-activities",
        "children:1",
        "children:2",
        "wait:1",
        "children:3",
        "children:4",
        "wait:2",
        "children:5",
        "children:6",
        "wait:3",
        "children:7",
        "children:8",
    ]
    # what the UI polled: progress from 0 to 1, batch by batch
    assert run.metadata == {
        "progress": 1.0,
        "processed": 19,
        "total": 19,
        "letters": 18,
        "insights": 18,
        "failed": 0,
        "batches_done": 4,
        "batches": 4,
    }
    moves = [(m["batches_done"], m["processed"]) for m in polled]
    assert moves == sorted(moves) and moves[0] == (0, 0) and moves[-1] == (4, 19)
    assert len(set(moves)) >= 3  # the UI saw it move, not only the ends
    # each text: a child of the ingestion in the anthropic queue, keyed by its user
    children = await children_of(client, run_id)
    assert len(children) == 36
    for child in children:
        assert child.status is RunStatus.COMPLETED and len(child.attempts) == 1
        assert (child.queue, child.concurrency_key) == ("anthropic", "u-free")
        kind = "letter" if child.task_id == "generate-run-letter" else "insight"
        assert [s.name for s in child.steps] == ["fetch-activity", f"write-{kind}", f"save-{kind}"]
    # what the user's ingestion cost: the fake API's usage, to the token and the cent
    assert await costs_by_key(client) == {
        "u-free": (app.billed("u-free"), 18 * 300 + 18 * 500, 18 * 150 + 18 * 400)
    }
    assert app.billed("u-free") == Decimal("0.0639")  # 18 x ($0.00105 + $0.0025)


async def test_two_users_at_most_5_claude_calls_at_once_and_a_cost_per_user(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    app: App,
) -> None:
    app.add("u-ada", 13)
    app.add("u-bob", 6, lettered={1, 2}, insighted={1, 2})
    fake_anthropic.latency = 0.3  # the 5 calls of a claim overlap, however slow the machine
    async with start_daemon(
        RUN_HISTORY, llm_config(fake_anthropic), poll_interval=0.05, concurrency=20
    ):
        ada = await client.trigger("batch-ingest-run-history", {"user_id": "u-ada"})
        bob = await client.trigger("batch-ingest-run-history", {"user_id": "u-bob"})
        ada_run = await wait_for_run(client, ada, timeout=30)
        bob_run = await wait_for_run(client, bob, timeout=30)

    assert ada_run.status is bob_run.status is RunStatus.COMPLETED
    assert ada_run.output is not None and bob_run.output is not None
    assert (ada_run.output["letters"], ada_run.output["insights"]) == (13, 13)
    assert (ada_run.output["batches"], ada_run.output["batch_size"]) == (3, 5)
    assert (bob_run.output["letters"], bob_run.output["skipped"]) == (4, 2)
    # never more than 5 Claude calls at once, and the queue's 5 were used
    rows = await db.fetch("SELECT started_at, latency_ms FROM taskd.llm_calls")
    spans = [
        (r["started_at"], r["started_at"] + timedelta(milliseconds=r["latency_ms"])) for r in rows
    ]
    peak = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert peak == 5
    # each user's cost, apart
    assert await costs_by_key(client) == {
        "u-ada": (app.billed("u-ada"), 13 * 800, 13 * 550),
        "u-bob": (app.billed("u-bob"), 4 * 800, 4 * 550),
    }


async def test_each_text_is_paid_once_through_529_429_a_failed_save_and_a_replay(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    app: App,
) -> None:
    app.add("u-1", 7)

    def asks(kind: str, activity: str) -> Any:
        return lambda body: (kind_of(body), activity_of(body)) == (kind, activity)

    fake_anthropic.fail_next(status=529, match=asks("letter", "a-07"))
    fake_anthropic.fail_next(status=429, retry_after=0, match=asks("insight", "a-06"))
    fake_anthropic.fail_next(status=400, message="prompt is invalid", match=asks("letter", "a-03"))
    app.failing_saves["letter:a-05"] = [500]
    configure = llm_config(fake_anthropic, overload_backoff=0.05, overload_backoff_max=0.1)
    async with start_daemon(RUN_HISTORY, configure, poll_interval=0.05):
        run_id = await client.trigger("batch-ingest-run-history", {"user_id": "u-1"})
        run = await wait_for_run(client, run_id, timeout=30)

        assert run.status is RunStatus.COMPLETED, run.error
        assert run.output is not None
        assert (run.output["letters"], run.output["insights"]) == (6, 7)
        assert run.output["failed_items"] == ["letter:a-03"]
        assert run.metadata is not None and run.metadata["failed"] == 1
        # each text answered (billed) once: the 529, the 429 and the failed save cost none twice
        assert Counter((k, a) for _, k, a in app.answered) == Counter(
            [("letter", a) for a in ids(1, 2, 4, 5, 6, 7)]
            + [("insight", a) for a in ids(1, 2, 3, 4, 5, 6, 7)]
        )
        children = {
            (c.task_id.split("-")[-1], c.payload["activity_id"]): c
            for c in await children_of(client, run_id)
        }
        for (kind, activity), child in children.items():
            outcomes = [a.outcome.value for a in child.attempts]
            calls = [c["outcome"] for c in await calls_of(db, child.id)]
            steps = {s.name: s for s in child.steps}
            if (kind, activity) == ("letter", "a-07"):  # overloaded: waited in the queue
                assert (outcomes, calls) == (["completed"], ["overloaded", "ok"])
            elif (kind, activity) == ("insight", "a-06"):  # rate limited: the same
                assert (outcomes, calls) == (["completed"], ["rate_limited", "ok"])
            elif (kind, activity) == ("letter", "a-05"):  # the save failed: not rewritten
                assert (outcomes, calls) == (["failed", "completed"], ["ok"])
                assert steps["write-letter"].attempts == 1
                assert (steps["save-letter"].attempts, steps["save-letter"].run_attempt) == (2, 2)
            elif (kind, activity) == ("letter", "a-03"):  # refused: failed at once
                assert child.status is RunStatus.FAILED and outcomes == ["failed"]
                assert child.error is not None and child.error["type"] == "LLMRequestRefused"
                assert "prompt is invalid" in child.error["message"]
                assert calls == ["refused"]
            else:
                assert (outcomes, calls) == (["completed"], ["ok"])
        assert app.saves.count(("letter:a-05", 500)) == 1

        # replaying the ingestion writes only the letter that failed
        again = await wait_for_run(client, await client.replay(run_id), timeout=30)
        assert again.status is RunStatus.COMPLETED, again.error
        assert again.output is not None
        assert (again.output["skipped"], again.output["letters"]) == (6, 1)
        assert again.output["insights"] == 0
        assert ("u-1", "letter", "a-03") in app.answered and len(app.answered) == 14
        assert all(a["letter"] and a["insight"] for a in app.activities["u-1"])
    # what u-1's ingestion cost: the 14 answers, nothing for the failed calls
    assert await costs_by_key(client) == {"u-1": (app.billed("u-1"), 7 * 800, 7 * 550)}


# the premium tier: Message Batches ---------------------------------------------------------------


def batches_created(fake: FakeAnthropic) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == "/v1/messages/batches")


def submitted(fake: FakeAnthropic) -> Counter[tuple[str, str]]:
    """(kind, activity) of every request of every Message Batch submitted."""
    return Counter(
        (kind_of(item["params"]), activity_of(item["params"]))
        for batch_id in fake.batch_ids
        for item in fake.batch_requests(batch_id)
    )


async def suspended_on_batch(client: Client, fake: FakeAnthropic, run_id: uuid.UUID, n: int) -> Run:
    """The run once its ``n``-th Message Batch is submitted and it waits for it (no slot)."""

    async def check() -> Run | None:
        run = await client.get_run(run_id)
        waiting = run.status is RunStatus.WAITING and len(fake.batch_ids) >= n
        return run if waiting else None

    run: Run = await wait_for(check)
    assert len(fake.batch_ids) == n
    return run


async def poll_now(db: asyncpg.Connection, batch_id: str) -> None:
    """The batch poll interval (an hour) passes: skipped, not waited for."""
    moved = await db.execute(
        "UPDATE taskd.llm_batches SET next_poll_at = now() WHERE batch_id = $1", batch_id
    )
    assert moved == "UPDATE 1"


@pytest.mark.timeout(120)
async def test_premium_writes_each_batch_as_one_message_batch_at_half_price(
    client: Client,
    db: asyncpg.Connection,
    database: str,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    app: App,
) -> None:
    fake = fake_anthropic
    app.add("u-pro", 13, lettered={13}, insighted={2})
    # batch 1 is a-13 .. a-04, custom ids letter-<i> / insight-<i> (its i-th activity): a-10's
    # letter errs, a-04's insight expires
    fake.batch_outcome("letter-3", "errored")
    fake.batch_outcome("insight-9", "expired")
    configure = llm_config(fake, batch_poll_interval=3600)  # polled when the test moves the time
    ingest = {"user_id": "u-pro", "tier": "premium"}
    async with start_daemon(RUN_HISTORY, configure, poll_interval=0.05):
        run_id = await client.trigger("batch-ingest-run-history", ingest, concurrency_key="u-pro")
        run = await suspended_on_batch(client, fake, run_id, 1)
        assert run.attempt == 0 and run.worker_id is None  # no slot, no attempt while open
        assert run.metadata is not None
        assert (run.metadata["batches_done"], run.metadata["batches"]) == (0, 2)
    # the daemon stops while the batch is open, and another starts
    async with start_daemon(RUN_HISTORY, configure, poll_interval=0.05):
        # the run's hourly recheck comes early: it executes again, finds its batch open and
        # waits again, submitting nothing
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)

        async def waiting_again() -> bool:
            run = await client.get_run(run_id)
            later = datetime.now(UTC) + timedelta(minutes=30)
            return run.status is RunStatus.WAITING and run.run_at is not None and run.run_at > later

        await wait_for(waiting_again)
        assert batches_created(fake) == 1
        # the batch ends (hours later, skipped): its texts are saved, then batch 2 goes
        first, *_ = fake.batch_ids
        fake.end_batch(first)
        await poll_now(db, first)
        run = await suspended_on_batch(client, fake, run_id, 2)
        assert run.metadata == {
            "progress": round(10 / 13, 4),
            "processed": 10,
            "total": 13,
            "letters": 8,  # a-12 .. a-04 but a-10 (errored)
            "insights": 9,  # a-13 .. a-04 but a-04 (expired)
            "failed": 2,
            "batches_done": 1,
            "batches": 2,
        }
        second = fake.batch_ids[1]
        fake.end_batch(second)
        await poll_now(db, second)
        run = await wait_for_run(client, run_id, timeout=60)

        assert run.status is RunStatus.COMPLETED, run.error
        assert run.output == {
            "user_id": "u-pro",
            "tier": "premium",
            "considered": 13,
            "skipped": 0,
            "letters": 11,
            "insights": 11,
            "failed": 2,
            "failed_items": ["letter:a-10", "insight:a-04"],
            "batches": 2,
            "batch_size": 10,
            "input_tokens": 11 * 300 + 11 * 500,
            "output_tokens": 11 * 150 + 11 * 400,
        }
        assert run.metadata is not None
        assert (run.metadata["progress"], run.metadata["failed"]) == (1.0, 2)
        # one Message Batch per batch of activities, each request submitted once
        assert batches_created(fake) == 2 and not fake.message_requests
        assert [len(fake.batch_requests(b)) for b in fake.batch_ids] == [19, 5]
        assert submitted(fake) == Counter(
            [("letter", a) for a in ids(*range(1, 13))]
            + [("insight", a) for a in ids(*range(1, 14)) - ids(2)]
        )
        [params] = [
            i["params"] for i in fake.batch_requests(first) if i["custom_id"] == "insight-0"
        ]
        assert params["model"] == "claude-haiku-4-5" and params["system"] == INSIGHT.system
        assert params["metadata"] == {"user_id": "u-pro"} and "Run a-13:" in str(params)
        # each text saved once, in its own step, after its batch's step
        assert Counter(app.saves) == Counter(
            [(f"letter:{a}", 200) for a in ids(*range(1, 13)) - ids(10)]
            + [(f"insight:{a}", 200) for a in ids(*range(1, 14)) - ids(2, 4)]
        )
        steps = [s.name for s in run.steps]
        assert steps[:3] == ["list-activities", "fetch-activities:a-13", "llm-batch:1"]
        assert steps[3:21] == [f"save-letter:{a}" for a in ids_newest(12, 11, 9, 8, 7, 6, 5, 4)] + [
            f"save-insight:{a}" for a in ids_newest(*range(13, 4, -1))
        ] + ["wait:1"]
        assert steps[21:] == [
            "fetch-activities:a-03",
            "llm-batch:2",
            "save-letter:a-03",
            "save-letter:a-02",
            "save-letter:a-01",
            "save-insight:a-03",
            "save-insight:a-01",
        ]
        assert len(run.attempts) == 1
        # each request recorded at batch prices: half Haiku's $1 / $5 per million
        calls = await calls_of(db, run_id)
        assert {c["kind"] for c in calls} == {"batch"}
        assert Counter(c["outcome"] for c in calls) == {"ok": 22, "errored": 1, "expired": 1}
        letter_call = next(c for c in calls if c["output_tokens"] == 150)
        assert letter_call["cost_usd"] == dollars(300, 150, "0.5", "2.5")
        assert app.billed("u-pro") / 2 == dollars(8800, 6050, "0.5", "2.5")
        assert await costs_by_key(client) == {"u-pro": (app.billed("u-pro") / 2, 8800, 6050)}

        # a replay writes the errored letter and the expired insight, in a batch of their own
        fake.batch_outcome("letter-3", "succeeded")
        fake.batch_outcome("insight-9", "succeeded")
        again_id = await client.replay(run_id)
        await suspended_on_batch(client, fake, again_id, 3)
        assert [i["custom_id"] for i in fake.batch_requests(fake.batch_ids[2])] == [
            "letter-0",  # a-10, first of the replay's batch
            "insight-1",  # a-04
        ]
        fake.end_batch(fake.batch_ids[2])
        await poll_now(db, fake.batch_ids[2])
        again = await wait_for_run(client, again_id, timeout=60)
    assert again.status is RunStatus.COMPLETED, again.error
    assert again.output is not None
    assert (again.output["skipped"], again.output["letters"], again.output["insights"]) == (
        11,
        1,
        1,
    )
    assert app.activity("u-pro", "a-10")["letter"] == text_of("letter", "a-10")
    assert app.activity("u-pro", "a-04")["insight"] == text_of("insight", "a-04")
    assert all(a["letter"] and a["insight"] for a in app.activities["u-pro"])
    assert batches_created(fake) == 3
    # what u-pro's ingestion cost, from the CLI: the fake's usage blocks at half price
    result = await taskd(database, "costs", "--by", "key", "--json")
    assert result.code == 0, str(result)
    shown = orjson.loads(result.out)
    assert [
        (r["name"], Decimal(r["cost_usd"]), r["input_tokens"], r["output_tokens"])
        for r in shown["rows"]
    ] == [("u-pro", app.billed("u-pro") / 2, 12 * 800, 12 * 550)]
    assert Decimal(shown["total"]["cost_usd"]) == dollars(12 * 800, 12 * 550, "0.5", "2.5")
    assert app.billed("u-pro") / 2 == Decimal("0.0213")  # 12 x ($0.000525 + $0.00125)


@pytest.mark.timeout(120)
async def test_a_premium_save_that_keeps_failing_is_retried_without_submitting_again(
    client: Client,
    db: asyncpg.Connection,
    start_daemon,
    fake_anthropic: FakeAnthropic,
    app: App,
) -> None:
    fake = fake_anthropic
    app.add("u-2", 3)
    app.failing_saves["insight:a-02"] = [503, 503, 503]  # its step's 3 tries: the attempt fails
    configure = llm_config(fake, batch_poll_interval=3600)
    ingest = {"user_id": "u-2", "tier": "premium"}
    async with start_daemon(RUN_HISTORY, configure, poll_interval=0.05):
        run_id = await client.trigger("batch-ingest-run-history", ingest, concurrency_key="u-2")
        await suspended_on_batch(client, fake, run_id, 1)
        fake.end_batch()
        await poll_now(db, fake.batch_ids[0])

        async def failed_once() -> bool:
            run = await client.get_run(run_id)
            return run.status is RunStatus.QUEUED and len(run.attempts) == 1

        await wait_for(failed_once)
        # the retry's backoff passes (skipped)
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run_id)
        run = await wait_for_run(client, run_id, timeout=60)

    assert run.status is RunStatus.COMPLETED, run.error
    assert [a.outcome.value for a in run.attempts] == ["failed", "completed"]
    assert run.output is not None
    assert (run.output["letters"], run.output["insights"], run.output["failed"]) == (3, 3, 0)
    # the retry read the batch's results: nothing submitted or billed again
    assert batches_created(fake) == 1 and len(app.answered) == 6
    assert [c["outcome"] for c in await calls_of(db, run_id)] == ["ok"] * 6
    # what was saved before the failure was not saved again
    assert Counter(app.saves) == Counter(
        [(f"letter:{a}", 200) for a in ids(1, 2, 3)]
        + [(f"insight:{a}", 200) for a in ids(1, 2, 3)]
        + [("insight:a-02", 503)] * 3
    )
    saves = {s.name: s for s in run.steps if s.name.startswith("save-")}
    assert {name: s.run_attempt for name, s in saves.items()} == {
        "save-letter:a-03": 1,
        "save-letter:a-02": 1,
        "save-letter:a-01": 1,
        "save-insight:a-03": 1,
        "save-insight:a-02": 2,
        "save-insight:a-01": 2,
    }
    assert await costs_by_key(client) == {"u-2": (app.billed("u-2") / 2, 3 * 800, 3 * 550)}


def ids_newest(*numbers: int) -> list[str]:
    return [f"a-{n:02d}" for n in numbers]

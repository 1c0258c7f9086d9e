"""The workflow examples (tasks/data_import.py, tasks/run_history.py), end to end.

As in test_examples.py nothing is patched: the tasks read their API URLs from the environment
at call time, so one real HTTP server on 127.0.0.1 (tests/support/fake_http.py) stands in for
the data source, the warehouse, the analysis API, the app's activities API and the Anthropic
Messages API, and in-process daemons run the tasks with their production retry policies and
queues. The waits are the tasks' own (``wait.for_``), made short through the payload or the
environment.

The fake server measures what a user would: every call (with its start and end time), how
many calls of each API were in flight at once, what was loaded and which letters were saved.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import pytest

from taskd import Client, Run, RunStatus
from tasks.data_import import analyze_item, bulk_analysis, data_import_workflow
from tasks.run_history import batch_ingest_run_history, generate_run_letter
from tests.support.cli import taskd
from tests.support.fake_http import FakeHttp, Reply, Request, fake_http
from tests.support.in_process import StartDaemon
from tests.support.waiting import wait_for, wait_for_run

pytestmark = pytest.mark.timeout(30)

RUN_HISTORY = [batch_ingest_run_history, generate_run_letter]
LETTER_TEXT = "Dear runner, {activity}: the hills asked, and you answered."
ACTIVITIES_PAGE = 10  # the fake API's largest page, whatever the limit asked
RECORDS_PAGE = 3


@dataclass
class Call:
    api: str
    key: str
    """The activity, item, source or table the call was about."""
    status: int = 0
    started: float = 0.0
    ended: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class FakeWorld:
    """One server for every API of the two examples. ``script["api:key"]`` holds replies
    answered (and consumed) before the normal behaviour."""

    server: FakeHttp
    script: dict[str, list[Reply]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    activities: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per user, newest first; a saved letter lands in the activity's ``letter``."""
    loaded: list[dict[str, Any]] = field(default_factory=list)
    gather: dict[str, int] = field(default_factory=dict)
    """Per API: its first calls are held until this many are in flight at once (at most
    10 s), so that a test can show a limit is reached however slow the machine is."""
    _gathered: dict[str, anyio.Event] = field(default_factory=dict)
    _load_answers: dict[str, Any] = field(default_factory=dict)

    def of(self, api: str, status: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.api == api and (status is None or c.status == status)]

    def keys(self, api: str, status: int | None = None) -> Counter[str]:
        return Counter(c.key for c in self.of(api, status))

    async def answer(
        self, api: str, key: str, request: Request, normal: Callable[[Call], Awaitable[Any]]
    ) -> Reply:
        call = Call(api, key, started=time.monotonic(), headers=request.headers)
        call.body = request.body
        self.calls.append(call)
        self.in_flight[api] += 1
        self.peak[api] = max(self.peak[api], self.in_flight[api])
        try:
            if api in self.gather:
                gathered = self._gathered.setdefault(api, anyio.Event())
                if self.in_flight[api] >= self.gather[api]:
                    gathered.set()
                with anyio.move_on_after(10):
                    await gathered.wait()
            await anyio.sleep(self.latency.get(api, 0.0))
            pending = self.script.get(f"{api}:{key}")
            if pending:
                reply = pending.pop(0)
                call.status = reply.status
                return reply
            body = await normal(call)
            call.status = 200
            return Reply(200, body)
        finally:
            self.in_flight[api] -= 1
            call.ended = time.monotonic()

    # the data source, the warehouse, the analysis API, the approvals API ---------------------

    async def approval(self, request: Request) -> Reply:
        body = request.body

        async def normal(call: Call) -> Any:
            return {"queued": True}

        return await self.answer("approvals", body["source_id"], request, normal)

    async def source(self, request: Request) -> Reply:
        source_id = request.params["source"]

        async def normal(call: Call) -> Any:
            source = self.sources[source_id]
            return {"id": source_id, "status": source["status"], "error": source.get("error")}

        return await self.answer("source", source_id, request, normal)

    async def records(self, request: Request) -> Reply:
        source_id = request.params["source"]
        start = int(request.query.get("cursor", "0"))

        async def normal(call: Call) -> Any:
            records = self.sources[source_id]["records"]
            end = start + RECORDS_PAGE
            return {
                "records": records[start:end],
                "next_cursor": str(end) if end < len(records) else None,
            }

        return await self.answer("records", f"{source_id}@{start}", request, normal)

    async def load(self, request: Request) -> Reply:
        key = request.headers.get("Idempotency-Key", "")

        async def normal(call: Call) -> Any:
            if key not in self._load_answers:  # like a real API: a repeated key loads nothing
                self.loaded.extend(call.body["rows"])
                self._load_answers[key] = {"inserted": len(call.body["rows"])}
            return self._load_answers[key]

        return await self.answer("warehouse", request.params["table"], request, normal)

    async def items(self, request: Request) -> Reply:
        batch_id = request.params["batch"]

        async def normal(call: Call) -> Any:
            return {"items": self.batches[batch_id]}

        return await self.answer("items", batch_id, request, normal)

    async def analyze(self, request: Request) -> Reply:
        body = request.body

        async def normal(call: Call) -> Any:
            return {"sentiment": "positive", "score": len(body["item"]["text"]) / 100}

        return await self.answer("analysis", body["item"]["id"], request, normal)

    # the app's activities API -----------------------------------------------------------------

    async def activity_list(self, request: Request) -> Reply:
        user = request.params["user"]
        start = int(request.query.get("cursor", "0"))
        limit = min(int(request.query["limit"]), ACTIVITIES_PAGE)

        async def normal(call: Call) -> Any:
            history = self.activities[user]
            end = start + limit
            return {
                "activities": history[start:end],
                "next_cursor": str(end) if end < len(history) else None,
            }

        return await self.answer("list", f"{user}@{start}", request, normal)

    def _activity(self, request: Request) -> dict[str, Any]:
        user, activity_id = request.params["user"], request.params["activity"]
        [activity] = [a for a in self.activities[user] if a["id"] == activity_id]
        return activity

    async def activity_get(self, request: Request) -> Reply:
        activity = self._activity(request)

        async def normal(call: Call) -> Any:
            return activity

        return await self.answer("activity", activity["id"], request, normal)

    async def letter_put(self, request: Request) -> Reply:
        activity = self._activity(request)

        async def normal(call: Call) -> Any:
            activity["letter"] = call.body["letter"]
            return {"ok": True}

        return await self.answer("save", activity["id"], request, normal)

    # the Anthropic Messages API ---------------------------------------------------------------

    async def messages(self, request: Request) -> Reply:
        body = request.body
        prompt = body["messages"][0]["content"]
        match = re.match(r"Run (\S+):", prompt)
        activity_id = match.group(1) if match else "?"

        async def normal(call: Call) -> Any:
            return {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": LETTER_TEXT.format(activity=activity_id)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 300, "output_tokens": 150},
            }

        return await self.answer("anthropic", activity_id, request, normal)


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeWorld]:
    async with fake_http() as server:
        fake = FakeWorld(server)
        server.route("GET", "/source/sources/{source}", fake.source)
        server.route("GET", "/source/sources/{source}/records", fake.records)
        server.route("GET", "/source/batches/{batch}/items", fake.items)
        server.route("POST", "/warehouse/tables/{table}/rows", fake.load)
        server.route("POST", "/analysis/analyze", fake.analyze)
        server.route("POST", "/approvals/approvals", fake.approval)
        server.route("GET", "/app/users/{user}/activities", fake.activity_list)
        server.route("GET", "/app/users/{user}/activities/{activity}", fake.activity_get)
        server.route("PUT", "/app/users/{user}/activities/{activity}/letter", fake.letter_put)
        server.route("POST", "/anthropic/v1/messages", fake.messages)
        env = {
            "DATA_SOURCE_API_URL": server.url("/source"),
            "WAREHOUSE_API_URL": server.url("/warehouse"),
            "ANALYSIS_API_URL": server.url("/analysis"),
            "APPROVALS_API_URL": server.url("/approvals"),
            "ACTIVITIES_API_URL": server.url("/app"),
            "ANTHROPIC_BASE_URL": server.url("/anthropic"),
            "ANTHROPIC_API_KEY": "test-key",
            # the seed's waits (5 s, 2 s) made short: the tasks' own waits, not patched
            "DATA_IMPORT_RATE_LIMIT_SECONDS": "0.3",
            "RUN_HISTORY_BATCH_PAUSE_SECONDS": "0.2",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in (
            "DATA_SOURCE_API_KEY",
            "WAREHOUSE_API_KEY",
            "ANALYSIS_API_KEY",
            "APPROVALS_API_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
        for name in ("ACTIVITIES_API_KEY", "ANTHROPIC_MODEL", "BULK_ANALYSIS_PAUSE_SECONDS"):
            monkeypatch.delenv(name, raising=False)
        yield fake


def steps_of(run: Run) -> dict[str, Any]:
    return {step.name: step for step in run.steps}


async def sample_while_running(
    client: Client, run_id: uuid.UUID, seen: list[tuple[RunStatus, dict[str, Any] | None]]
) -> None:
    """What a UI polling the run sees: each change of status or metadata, until it ends."""
    while True:
        run = await client.get_run(run_id)
        if not seen or seen[-1] != (run.status, run.metadata):
            seen.append((run.status, run.metadata))
        if run.status.terminal:
            return
        await anyio.sleep(0.01)


# the data import workflow -----------------------------------------------------------------------

RECORDS = [
    {"id": "c-1", "email": " Ada@Example.com ", "name": "Ada  Lovelace", "amount": "12.50"},
    {"id": "c-2", "email": "grace@example.com", "name": "Grace Hopper", "amount": 3},
    {"id": "c-3", "email": "not-an-email", "name": "Nobody", "amount": "1"},
    {"id": "c-4", "email": "alan@example.com", "name": "Alan Turing", "amount": "0.1"},
    {"id": "", "email": "anon@example.com", "name": "Anonymous", "amount": "5"},
    {"id": "c-6", "email": "edsger@example.com", "name": "Edsger Dijkstra", "amount": "7.25"},
    {"id": "c-7", "email": "barbara@example.com", "name": "Barbara Liskov", "amount": "100"},
]


def add_source(world: FakeWorld, source_id: str = "crm-1", **source: Any) -> None:
    world.sources[source_id] = {"status": "ready", "records": RECORDS} | source


async def test_data_import_validates_extracts_transforms_waits_and_loads(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_source(world)
    async with start_daemon([data_import_workflow], poll_interval=0.05):
        run_id = await client.trigger(
            "data-import-workflow", {"source_id": "crm-1", "table": "customers"}
        )
        run = await wait_for_run(client, run_id, timeout=8)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {
        "source_id": "crm-1",
        "table": "customers",
        "records_extracted": 7,
        "records_processed": 5,
        "records_rejected": 2,
        "approval": None,
    }
    steps = steps_of(run)
    assert list(steps) == [
        "validate-source",
        "extract-data",
        "transform-data",
        "wait:1",
        "load-data",
    ]
    assert all(s.status == "completed" and s.attempts == 1 for s in run.steps)
    assert steps["transform-data"].result["rejected"] == [
        {"id": "c-3", "reason": "bad email"},
        {"id": None, "reason": "no id"},
    ]
    # the rate-limit window (DATA_IMPORT_RATE_LIMIT_SECONDS here) passed before the load
    wake = datetime.fromisoformat(steps["wait:1"].result)
    assert (wake - steps["transform-data"].finished_at).total_seconds() >= 0.3
    assert steps["load-data"].started_at >= wake
    # the source was read once, page by page; the warehouse got one load, idempotent
    assert sorted(c.key for c in world.of("records")) == ["crm-1@0", "crm-1@3", "crm-1@6"]
    [load] = world.of("warehouse")
    assert load.key == "customers"
    assert load.headers["Idempotency-Key"] == f"{run_id}:load-data"
    assert world.loaded[0] == {
        "id": "c-1",
        "source_id": "crm-1",
        "email": "ada@example.com",
        "name": "Ada Lovelace",
        "amount_cents": 1250,
    }
    assert [row["amount_cents"] for row in world.loaded] == [1250, 300, 10, 725, 10000]


async def test_data_import_retries_only_the_load_and_suspends_through_a_long_wait(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_source(world)
    world.script["warehouse:imports"] = [Reply(503, {"error": "busy"}, {"Retry-After": "0"})]
    seen: list[tuple[RunStatus, dict[str, Any] | None]] = []
    # a wait above the threshold suspends the run (WAITING, no slot) until its time
    async with start_daemon([data_import_workflow], poll_interval=0.05, wait_threshold=0.1):
        run_id = await client.trigger(
            "data-import-workflow", {"source_id": "crm-1", "wait_seconds": 0.6}
        )
        await sample_while_running(client, run_id, seen)
        run = await client.get_run(run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["records_processed"] == 5
    assert RunStatus.WAITING in [status for status, _ in seen]
    # the suspension spent no attempt; the 503 spent one, and only the load was redone
    assert [a.outcome.value for a in run.attempts] == ["failed", "completed"]
    error = run.attempts[0].error
    assert error is not None and error["type"] == "ApiError" and "HTTP 503" in error["message"]
    steps = steps_of(run)
    assert list(steps) == [
        "validate-source",
        "extract-data",
        "transform-data",
        "wait:1",
        "load-data",
    ]
    assert [(s.attempts, s.run_attempt) for s in run.steps[:4]] == [(1, 1)] * 4
    assert (steps["load-data"].attempts, steps["load-data"].run_attempt) == (2, 2)
    assert len(world.of("source")) == 1 and len(world.of("records")) == 3
    first, second = world.of("warehouse")
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert (first.status, second.status) == (503, 200)
    assert len(world.loaded) == 5
    wake = datetime.fromisoformat(steps["wait:1"].result)
    assert (wake - steps["transform-data"].finished_at).total_seconds() >= 0.6


async def test_a_big_import_waits_for_an_operators_approval_through_a_wait_token(
    database: str, client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_source(world)
    add_source(world, "crm-2")
    async with start_daemon([data_import_workflow], poll_interval=0.05, wait_threshold=0.1):
        approved, rejected = [
            await client.trigger(
                "data-import-workflow", {"source_id": source, "approve_over": 3, "wait_seconds": 0}
            )
            for source in ("crm-1", "crm-2")
        ]

        async def waiting_for_the_operator() -> bool:
            runs = [await client.get_run(run_id) for run_id in (approved, rejected)]
            return all(run.status is RunStatus.WAITING for run in runs)

        # the runs wait for the operator without a slot, once they asked
        await wait_for(waiting_for_the_operator)
        assert len(world.of("approvals", 200)) == 2
        tokens = {call.body["source_id"]: call.body["token"] for call in world.of("approvals")}
        assert {c.body["rows"] for c in world.of("approvals")} == {5}
        # the operator answers: once from the CLI, once from Python
        cli = await taskd(
            database, "tokens", "complete", tokens["crm-1"], "--data", '{"approved": true}'
        )
        assert cli.code == 0, cli
        await client.complete_token(tokens["crm-2"], {"approved": False})
        done = [await wait_for_run(client, run_id, timeout=8) for run_id in (approved, rejected)]

    assert [r.output["approval"] for r in done] == ["approved", "rejected"]
    assert [r.output["records_processed"] for r in done] == [5, 0]
    # only the approved import reached the warehouse; each asked for approval once
    assert [c.body["rows"][0]["source_id"] for c in world.of("warehouse")] == ["crm-1"]
    assert world.keys("approvals") == {"crm-1": 1, "crm-2": 1}
    assert "token:1" in steps_of(done[0]) and "request-approval" in steps_of(done[0])


async def test_an_invalid_source_aborts_the_import_before_extracting(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_source(world, status="error", error="credentials expired")
    async with start_daemon([data_import_workflow], poll_interval=0.05):
        run_id = await client.trigger("data-import-workflow", {"source_id": "crm-1"})
        run = await wait_for_run(client, run_id, timeout=8)

    assert run.status is RunStatus.FAILED and len(run.attempts) == 1
    assert run.error is not None and run.error["type"] == "AbortRun"
    assert "credentials expired" in run.error["message"]
    assert [s.name for s in run.steps] == ["validate-source"]
    assert world.of("records") == [] and world.of("warehouse") == []


async def test_bulk_analysis_goes_chunk_by_chunk_at_most_4_items_at_once(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    world.batches["b-1"] = [{"id": f"item-{i:02d}", "text": "x" * i} for i in range(1, 24)]
    world.script["analysis:item-07"] = [Reply(422, {"error": "unsupported language"})]
    world.latency["analysis"] = 0.1
    seen: list[tuple[RunStatus, dict[str, Any] | None]] = []
    async with start_daemon([bulk_analysis, analyze_item], poll_interval=0.05, concurrency=20):
        run_id = await client.trigger(
            "bulk-analysis", {"batch_id": "b-1", "chunk_size": 10, "pause_seconds": 0.3}
        )
        await sample_while_running(client, run_id, seen)
        run = await client.get_run(run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {
        "batch_id": "b-1",
        "total": 23,
        "successful": 22,
        "failed": 1,
        "failed_items": ["item-07"],
        "chunks": 3,
    }
    assert [s.name for s in run.steps] == [
        "list-items",
        "children:1",
        "wait:1",
        "children:2",
        "wait:2",
        "children:3",
    ]
    assert [len(steps_of(run)[f"children:{n}"].result) for n in (1, 2, 3)] == [10, 10, 3]
    # every item analysed once (the refused one is not retried), 4 at most at once
    assert world.keys("analysis") == Counter(f"item-{i:02d}" for i in range(1, 24))
    assert world.peak["analysis"] == 4
    # chunk after chunk, the pause between them
    calls = world.of("analysis")
    chunks = [[c for c in calls if int(c.key[-2:]) in range(lo, lo + 10)] for lo in (1, 11, 21)]
    for before, after in itertools.pairwise(chunks):
        assert min(c.started for c in after) - max(c.ended for c in before) >= 0.3
    # the progress a UI polled: one report per chunk, ending at 1
    progress = [meta["progress"] for _, meta in seen if meta]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert run.metadata == {"progress": 1.0, "processed": 23, "total": 23, "chunks_done": 3}
    children = await client.list_runs(task="analyze-item", limit=50)
    assert len(children) == 23 and {c.queue for c in children} == {"analysis"}
    assert {c.parent_id for c in children} == {run_id}


# the run history --------------------------------------------------------------------------------


def add_history(world: FakeWorld, user: str, count: int, lettered: Collection[int] = ()) -> None:
    """``count`` activities a-01 (oldest) .. a-NN (newest), newest first; those in
    ``lettered`` already have a letter."""
    world.activities[user] = [
        {
            "id": f"a-{n:02d}",
            "name": f"Run #{n}",
            "start_date": f"2025-03-{n:02d}T07:00:00Z",
            "distance_m": 5000 + 250 * n,
            "moving_time_s": 1500 + 80 * n,
            "elevation_gain_m": n * 3,
            "average_hr": 140 + n,
            "letter": "an old letter" if n in lettered else None,
        }
        for n in range(count, 0, -1)
    ]


def ids(*numbers: int) -> set[str]:
    return {f"a-{n:02d}" for n in numbers}


async def letter_runs(client: Client, parent_id: uuid.UUID) -> list[Run]:
    summaries = await client.list_runs(task="generate-run-letter", limit=200)
    return [await client.get_run(r.id) for r in summaries if r.parent_id == parent_id]


async def test_free_tier_letters_the_20_most_recent_activities_in_batches_of_5(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_history(world, "u-free", 25, lettered={24, 10, 3})
    seen: list[tuple[RunStatus, dict[str, Any] | None]] = []
    async with start_daemon(RUN_HISTORY, poll_interval=0.05):
        run_id = await client.trigger(
            "batch-ingest-run-history",
            {"user_id": "u-free", "tier": "free", "max_activities": 50},
        )
        await sample_while_running(client, run_id, seen)
        run = await client.get_run(run_id)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {
        "user_id": "u-free",
        "tier": "free",
        "considered": 20,  # capped, although 50 were asked for
        "skipped": 2,
        "generated": 18,
        "failed": 0,
        "failed_activities": [],
        "batches": 4,
        "batch_size": 5,
        "input_tokens": 18 * 300,
        "output_tokens": 18 * 150,
    }
    # the 20 most recent (a-25 .. a-06) but the two with letters, one Claude call each
    expected = ids(*range(6, 26)) - ids(24, 10)
    assert world.keys("anthropic") == Counter(expected)
    assert set(world.keys("activity")) == expected  # a-01..a-05 never looked at
    for activity in world.activities["u-free"]:
        if activity["id"] in expected:
            assert activity["letter"] == LETTER_TEXT.format(activity=activity["id"])
    assert world.activities["u-free"][1]["letter"] == "an old letter"  # a-24 kept its letter
    # two pages of the activities API (10 at most per page) for the 20
    assert [c.key for c in world.of("list")] == ["u-free@0", "u-free@10"]
    # the Messages API request
    [call] = [c for c in world.of("anthropic") if c.key == "a-25"]
    assert call.headers["x-api-key"] == "test-key"
    assert call.headers["anthropic-version"] == "2023-06-01"
    assert call.body["model"] == "claude-haiku-4-5" and call.body["max_tokens"] > 0
    assert call.body["messages"][0]["content"].startswith("Run a-25: Run #25\n")
    assert call.body["metadata"] == {"user_id": "u-free"}
    # batches of 5 with the pause between them, recorded in the run
    assert [s.name for s in run.steps] == [
        "list-activities",
        "children:1",
        "wait:1",
        "children:2",
        "wait:2",
        "children:3",
        "wait:3",
        "children:4",
    ]
    assert [len(steps_of(run)[f"children:{n}"].result) for n in (1, 2, 3, 4)] == [5, 5, 5, 3]
    # what the UI polled: progress from 0 to 1, one step per batch
    assert run.metadata == {
        "progress": 1.0,
        "processed": 18,
        "total": 18,
        "generated": 18,
        "failed": 0,
        "batches_done": 4,
        "batches": 4,
    }
    polled = [(meta["batches_done"], meta["processed"]) for _, meta in seen if meta]
    assert polled == sorted(polled) and polled[0] == (0, 0) and polled[-1] == (4, 18)
    assert len({done for done, _ in polled}) >= 3  # the UI saw it move, not only the ends
    # each letter: a child of the ingestion in the anthropic queue, keyed by its user
    children = await letter_runs(client, run_id)
    assert len(children) == 18
    for child in children:
        assert child.status is RunStatus.COMPLETED and len(child.attempts) == 1
        assert (child.queue, child.concurrency_key) == ("anthropic", "u-free")
        assert [s.name for s in child.steps] == ["fetch-activity", "write-letter", "save-letter"]


async def test_premium_letters_go_10_per_batch_and_at_most_5_at_once_across_two_daemons(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_history(world, "u-ada", 23)
    add_history(world, "u-bob", 14)
    world.latency["anthropic"] = 0.15
    world.gather["anthropic"] = 5  # the limit must be reached, not only respected
    async with (
        start_daemon(RUN_HISTORY, poll_interval=0.05, concurrency=20) as first,
        start_daemon(RUN_HISTORY, poll_interval=0.05, concurrency=20) as second,
    ):
        ada = await client.trigger(
            "batch-ingest-run-history", {"user_id": "u-ada", "tier": "premium"}
        )
        bob = await client.trigger(
            "batch-ingest-run-history", {"user_id": "u-bob", "tier": "premium"}
        )
        ada_run = await wait_for_run(client, ada, timeout=15)
        bob_run = await wait_for_run(client, bob, timeout=15)

    assert ada_run.status is RunStatus.COMPLETED, ada_run.error
    assert bob_run.status is RunStatus.COMPLETED, bob_run.error
    assert (ada_run.output["generated"], ada_run.output["batches"]) == (23, 3)
    assert (bob_run.output["generated"], bob_run.output["batches"]) == (14, 2)
    assert ada_run.output["batch_size"] == bob_run.output["batch_size"] == 10
    results = steps_of(ada_run)
    assert [len(results[f"children:{n}"].result) for n in (1, 2, 3)] == [10, 10, 3]
    # premium: the whole history, over three pages for ada
    assert [c.key for c in world.of("list") if c.key.startswith("u-ada")] == [
        "u-ada@0",
        "u-ada@10",
        "u-ada@20",
    ]
    # one letter per activity, never more than 5 being written at once, over both daemons
    letters = Counter((c.body["metadata"]["user_id"], c.key) for c in world.of("anthropic"))
    assert len(letters) == 37 and set(letters.values()) == {1}
    assert world.peak["anthropic"] == 5
    children = await letter_runs(client, ada) + await letter_runs(client, bob)
    workers = {a.worker_id for c in children for a in c.attempts}
    assert workers == {first.worker_id, second.worker_id}  # the limit held over both
    assert {c.concurrency_key for c in children} == {"u-ada", "u-bob"}


async def test_a_letter_is_paid_for_once_through_529_429_a_failed_save_and_a_replay(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    add_history(world, "u-1", 7)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    invalid = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    world.script.update(
        {
            "list:u-1@0": [Reply(503, {"error": "deploying"}, {"Retry-After": "0"})],
            "anthropic:a-07": [Reply(529, overloaded)],
            "anthropic:a-06": [Reply(429, limited, {"retry-after": "0"})],
            "save:a-05": [Reply(500, {"error": "database is away"})],
            "anthropic:a-03": [Reply(400, invalid)],
        }
    )
    async with start_daemon(RUN_HISTORY, poll_interval=0.05):
        run_id = await client.trigger("batch-ingest-run-history", {"user_id": "u-1"})
        run = await wait_for_run(client, run_id, timeout=10)

        assert run.status is RunStatus.COMPLETED, run.error
        assert [a.outcome.value for a in run.attempts] == ["failed", "completed"]  # the 503
        assert run.output["generated"] == 6
        assert run.output["failed_activities"] == ["a-03"]
        assert run.metadata is not None and run.metadata["failed"] == 1
        # each letter paid for once: a 529, a 429 and a failed save cost no second letter
        assert world.keys("anthropic", 200) == Counter(ids(1, 2, 4, 5, 6, 7))
        assert world.keys("anthropic") == Counter(ids(1, 2, 3, 4, 5, 6, 7)) + Counter(ids(6, 7))
        children = {c.payload["activity_id"]: c for c in await letter_runs(client, run_id)}
        for activity_id, child in children.items():
            outcomes = [a.outcome.value for a in child.attempts]
            steps = steps_of(child)
            if activity_id in ("a-07", "a-06"):  # Claude refused once: the run retried
                assert outcomes == ["failed", "completed"]
                assert (steps["write-letter"].attempts, steps["write-letter"].run_attempt) == (2, 2)
            elif activity_id == "a-05":  # the save failed once: the letter was not rewritten
                assert outcomes == ["failed", "completed"]
                assert (steps["write-letter"].attempts, steps["write-letter"].run_attempt) == (1, 1)
                assert (steps["save-letter"].attempts, steps["save-letter"].run_attempt) == (2, 2)
            elif activity_id == "a-03":  # a 400: aborted, no retry
                assert child.status is RunStatus.FAILED and outcomes == ["failed"]
                assert child.error is not None and child.error["type"] == "AbortRun"
                assert "HTTP 400" in child.error["message"]
            else:
                assert outcomes == ["completed"]
        error = children["a-07"].attempts[0].error
        assert error is not None and "HTTP 529" in error["message"]
        assert len(world.of("save", 200)) == 6

        # replaying the ingestion writes only the letter that failed
        again = await wait_for_run(client, await client.replay(run_id), timeout=10)
        assert again.status is RunStatus.COMPLETED, again.error
        assert (again.output["skipped"], again.output["generated"]) == (6, 1)
        assert world.keys("anthropic", 200) == Counter(ids(1, 2, 3, 4, 5, 6, 7))
        assert all(a["letter"] for a in world.activities["u-1"])


async def test_users_take_turns_in_the_anthropic_queue(
    client: Client, start_daemon: StartDaemon, world: FakeWorld
) -> None:
    """A free user's letters do not wait for a premium user's batch: the keys take turns."""
    add_history(world, "u-big", 10)
    add_history(world, "u-small", 5)
    world.latency["anthropic"] = 0.25
    async with start_daemon(RUN_HISTORY, poll_interval=0.05, concurrency=20):
        big = await client.trigger(
            "batch-ingest-run-history", {"user_id": "u-big", "tier": "premium"}
        )

        async def letters_started() -> bool:
            return len(world.of("anthropic")) == 5

        await wait_for(letters_started, timeout=5)  # 5 of u-big's 10 writing, 5 queued
        small = await client.trigger("batch-ingest-run-history", {"user_id": "u-small"})
        small_run = await wait_for_run(client, small, timeout=10)
        big_run = await wait_for_run(client, big, timeout=10)

    assert small_run.status is big_run.status is RunStatus.COMPLETED
    calls = world.of("anthropic")
    small_starts = [c.started for c in calls if c.body["metadata"]["user_id"] == "u-small"]
    big_starts = [c.started for c in calls if c.body["metadata"]["user_id"] == "u-big"]
    assert len(small_starts) == 5 and len(big_starts) == 10
    # u-small's first letter started before u-big's batch had all started (first in, first
    # out would have run u-big's 5 queued letters first)
    assert min(small_starts) < max(big_starts)
    assert world.peak["anthropic"] <= 5

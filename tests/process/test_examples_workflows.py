"""The workflow example tasks/data_import.py, end to end (tasks/run_history.py, on ctx.llm:
tests/daemon/test_run_history.py).

As in test_examples.py nothing is patched: the tasks read their API URLs from the environment
at call time, so one real HTTP server on 127.0.0.1 (tests/support/fake_http.py) stands in for
the data source, the warehouse, the analysis API and the approvals API, and in-process daemons
run the tasks with their production retry policies and queues. The waits are the tasks' own
(``wait.for_``), made short through the payload or the environment.

The fake server measures what a user would: every call (with its start and end time), how
many calls of each API were in flight at once, and what was loaded.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import pytest

from taskd import Client, Run, RunStatus
from tasks.data_import import analyze_item, bulk_analysis, data_import_workflow
from tests.support.cli import taskd
from tests.support.fake_http import FakeHttp, Reply, Request, fake_http
from tests.support.in_process import StartDaemon
from tests.support.waiting import wait_for, wait_for_run

pytestmark = pytest.mark.timeout(30)

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
        env = {
            "DATA_SOURCE_API_URL": server.url("/source"),
            "WAREHOUSE_API_URL": server.url("/warehouse"),
            "ANALYSIS_API_URL": server.url("/analysis"),
            "APPROVALS_API_URL": server.url("/approvals"),
            # the seed's wait (5 s) made short: the tasks' own waits, not patched
            "DATA_IMPORT_RATE_LIMIT_SECONDS": "0.3",
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
        for name in ("BULK_ANALYSIS_PAUSE_SECONDS",):
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

"""``/api/stream``: server-sent events of run changes, over real HTTP against a live daemon."""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
import uuid
from typing import Any

import aiohttp
import anyio

from taskd import Client, Context, Retry, RunStatus, task, wait
from taskd.changes import ChangeKind, RunChange
from taskd.config import Settings
from tests.support.in_process import admin_url
from tests.support.in_process import running_daemon as daemon_with
from tests.support.sse import Event, open_reader
from tests.support.waiting import wait_for, wait_for_run

GATES: dict[str, anyio.Event] = {}


@task(id="stream.blocker")
async def blocker(payload: Any, ctx: Context) -> None:
    """Holds the daemon's only slot until the test lets it go."""
    await GATES["release"].wait()


@task(id="stream.flaky", retry=Retry(max_attempts=3, min_delay=0.05, max_delay=0.05, jitter=False))
async def flaky(payload: Any, ctx: Context) -> dict[str, bool]:
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    await ctx.set_metadata(progress=1.0, stage="done")
    return {"ok": True}


@task(id="stream.noop")
async def noop(payload: Any, ctx: Context) -> None:
    return None


def assert_in_stream_order(events: list[Event]) -> None:
    ids = [e.id for e in events if e.kind != "snapshot"]
    assert all(i is not None for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    for event in events:
        if event.kind != "snapshot":
            assert event.data["seq"] == event.id  # the SSE id is the change's seq


async def test_stream_delivers_a_runs_whole_life_in_order(client: Client, database: str) -> None:
    GATES["release"] = anyio.Event()
    async with (
        daemon_with(database, [blocker, flaky], concurrency=1) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        base = admin_url(daemon)
        everything = await open_reader(group, http, f"{base}/api/stream")
        of_task = await open_reader(group, http, f"{base}/api/stream?task=stream.flaky")
        # The daemon's only slot is taken: the run triggered next stays queued until released.
        blocking = await client.trigger(blocker)
        await wait_for_run(client, blocking, [RunStatus.EXECUTING])
        async with http.post(f"{base}/api/tasks/stream.flaky/trigger", json={}) as response:
            assert response.status == 201
            run_id = uuid.UUID((await response.json())["id"])
        of_run = await open_reader(group, http, f"{base}/api/stream?run={run_id}")
        await of_run.wait_for_kind(run_id, "snapshot")  # taken while the run is still queued
        GATES["release"].set()

        run_events = await of_run.wait_for_kind(run_id, "completed")
        all_events = await everything.wait_for_kind(run_id, "completed")
        task_events = await of_task.wait_for_kind(run_id, "completed")
        assert daemon.changes.subscribers == 3
        group.cancel_scope.cancel()

    life = ["created", "started", "attempt_failed", "started", "metadata", "completed"]
    assert [e.kind for e in all_events] == life
    assert [e.kind for e in task_events] == life
    assert [e.kind for e in run_events] == ["snapshot", *life[1:]]
    for events in (all_events, task_events, run_events):
        assert_in_stream_order(events)
    # One change, one seq: every reader sees the same ids.
    assert [e.id for e in task_events] == [e.id for e in all_events]
    assert [e.id for e in run_events[1:]] == [e.id for e in all_events[1:]]

    snapshot = run_events[0].data
    assert snapshot["status"] == "queued" and snapshot["task_id"] == "stream.flaky"
    changes = [e.data for e in all_events]
    assert [c["status"] for c in changes] == [
        "queued",
        "executing",
        "queued",
        "executing",
        "executing",
        "completed",
    ]
    assert [c["attempt"] for c in changes] == [None, 1, 1, 2, 2, 2]
    assert {c["task_id"] for c in changes} == {"stream.flaky"}
    assert changes[2]["data"]["error"] == {
        "type": "RuntimeError",
        "message": "the first attempt fails",
    }
    assert changes[2]["data"]["retry_in"] == 0.05
    assert changes[4]["data"] == {"progress": 1.0, "stage": "done"}
    # The task filter leaves the other task's runs out; the unfiltered stream has them.
    assert all(e.data["task_id"] == "stream.flaky" for e in of_task.events)
    assert [e.kind for e in everything.of_run(blocking)] == ["started", "completed"]


@task(id="stream.waiter")
async def waiter(payload: Any, ctx: Context) -> str:
    await wait.for_(seconds=0.3)
    return "awake"


async def test_a_suspended_run_streams_waiting_then_woken(client: Client, database: str) -> None:
    async with (
        daemon_with(database, [waiter], wait_threshold=0.1) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        everything = await open_reader(group, http, f"{admin_url(daemon)}/api/stream")
        run_id = await client.trigger(waiter)
        events = await everything.wait_for_kind(run_id, "completed")
        group.cancel_scope.cancel()
    # (triggered by another client: its "created" is that client's, not this daemon's)
    # The wake loop publishes "woken" after its commit, and the claim that its NOTIFY wakes
    # publishes "started" after its own: on a loaded machine the claim can come first (README).
    kinds = [e.kind for e in events]
    assert kinds in (
        ["started", "waiting", "woken", "started", "completed"],
        ["started", "waiting", "started", "woken", "completed"],
    ), kinds
    assert_in_stream_order(events)
    waiting = events[1].data
    assert waiting["status"] == "waiting" and 0 < waiting["data"]["wake_in"] <= 0.3
    [woken] = [e for e in events if e.kind == "woken"]
    assert woken.data["status"] == "queued"
    assert daemon.metrics is not None
    suspended = daemon.metrics.registry.get_sample_value(
        "taskd_runs_suspended_total", {"task": "stream.waiter"}
    )
    assert suspended == 1


async def test_canceling_a_queued_run_streams_canceled(database: str) -> None:
    async with (
        daemon_with(database, [noop]) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        base = admin_url(daemon)
        everything = await open_reader(group, http, f"{base}/api/stream")
        body = {"delay": "1h"}
        async with http.post(f"{base}/api/tasks/stream.noop/trigger", json=body) as response:
            run_id = uuid.UUID((await response.json())["id"])
        of_run = await open_reader(group, http, f"{base}/api/stream?run={run_id}")
        # the stream answers before it reads its snapshot: cancel once the snapshot is out
        await of_run.wait_for_kind(run_id, "snapshot")
        async with http.post(f"{base}/api/runs/{run_id}/cancel", json={}) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "canceled"
        run_events = await of_run.wait_for_kind(run_id, "canceled")
        all_events = await everything.wait_for_kind(run_id, "canceled")
        group.cancel_scope.cancel()

    assert [e.kind for e in run_events] == ["snapshot", "canceled"]
    assert run_events[0].data["status"] == "queued"
    assert [e.kind for e in all_events] == ["created", "canceled"]
    assert all_events[1].data["status"] == "canceled"
    assert_in_stream_order(all_events)


async def test_a_client_that_goes_away_is_unsubscribed(database: str) -> None:
    """Without any change flowing: the daemon notices the closed connection by itself."""
    async with daemon_with(database, [noop]) as daemon, aiohttp.ClientSession() as http:
        base = admin_url(daemon)
        async with anyio.create_task_group() as group:
            await open_reader(group, http, f"{base}/api/stream")
            await open_reader(group, http, f"{base}/api/stream?task=stream.noop")
            assert daemon.changes.subscribers == 2
            group.cancel_scope.cancel()  # both clients close their connections

        async def unsubscribed() -> bool:
            return daemon.changes.subscribers == 0

        await wait_for(unsubscribed, timeout=5)
        assert daemon.changes.dropped_total == 0  # gone, not dropped for being slow


BLOB = 48 * 1024  # bytes of data per change: a never-reading client's socket fills quickly
BUFFER = 8
AFTER_DROP = 250


async def test_a_client_that_stops_reading_is_dropped_with_bounded_memory(database: str) -> None:
    def configure(settings: Settings) -> None:
        settings.admin.stream_buffer = BUFFER

    async with (
        daemon_with(database, [noop], configure) as daemon,
        aiohttp.ClientSession(read_bufsize=4 * BLOB) as http,
        anyio.create_task_group() as group,
    ):
        base = admin_url(daemon)
        host, port = base.removeprefix("http://").rsplit(":", 1)
        # The slow client: a small receive buffer, a request, and then it never reads.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        stalled, writer = await asyncio.open_connection(sock=sock, limit=4096)
        writer.write(f"GET /api/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        normal = await open_reader(group, http, f"{base}/api/stream", keep_data=False)

        async def both_subscribed() -> bool:
            return daemon.changes.subscribers == 2

        await wait_for(both_subscribed)

        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            published = 0
            dropped_after = None
            # Publish at the normal reader's pace (it never falls behind), until the stalled
            # client has been dropped and then as many changes again.
            while dropped_after is None or published < dropped_after + AFTER_DROP:
                assert published < 1000, "the stalled client was never dropped"
                published += 1
                change = RunChange(
                    ChangeKind.METADATA,
                    uuid.uuid4(),
                    "stream.noop",
                    "executing",
                    1,
                    data={"blob": f"{published:08d}" + "x" * BLOB},  # a fresh string each
                )
                daemon.changes.publish(change)
                seq = change.seq

                async def received(seq: int = seq) -> bool:
                    return bool(normal.events) and normal.events[-1].id == seq

                await wait_for(received, interval=0.001)
                if dropped_after is None and daemon.changes.dropped_total:
                    dropped_after = published
            # what is still referenced, not garbage a later collection would free: the
            # collector's timing depends on the machine's load, not on the stream
            gc.collect()
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert daemon.changes.dropped_total == 1
        assert daemon.changes.subscribers == 1  # the normal reader is still subscribed
        assert [e.id for e in normal.events] == sorted(e.id for e in normal.events)
        assert len(normal.events) == published, "the normal reader missed nothing"
        assert dropped_after is not None and dropped_after > BUFFER
        # Memory: the AFTER_DROP changes published after the drop alone weigh 12 MiB; a reader
        # buffered without bound would hold them all. What the process held at any moment (the
        # daemon, and this test's own clients) stayed within a few buffers' worth, and less
        # once it dropped.
        assert peak - baseline < 80 * BLOB, (peak - baseline, published)
        assert held - baseline < 16 * BLOB, (held - baseline, published)

        # The server closed the stalled connection: its buffered bytes, then the end.
        received_bytes = 0
        with anyio.fail_after(10):
            try:
                while chunk := await stalled.read(65536):
                    received_bytes += len(chunk)
            except ConnectionResetError:
                pass
        writer.close()
        assert received_bytes > 0
        group.cancel_scope.cancel()

"""PostgreSQL crashes under load: what a committed trigger and a written outcome survive.

A PostgreSQL of this test's own with its durability settings at their defaults (``fsync=on``,
``synchronous_commit=on``; the session server runs with both off, so it could not show what a
crash keeps), one `taskd run` serving ``crash.work`` and a producer triggering runs one by one
while a backlog drains. After some runs have completed, the postmaster and every one of its
backends are SIGKILLed at once (no checkpoint, no shutdown: the WAL buffers in shared memory
are gone, only what was written to the WAL files survives), then the server is started again
and recovers from its WAL.

"Written" is observed from outside, the way an operator sees it: the daemon's own run-change
stream (``/api/stream``), whose ``completed`` events the daemon publishes only after the
statement that wrote the outcome returned (``Completer._write_outcomes``), i.e. after its
transaction committed. A trigger is committed when ``client.trigger`` returned its id.

Afterwards: every run the producer was told was triggered exists and, like every other run in
the table, ended exactly once (``check_completed_once``: one completed attempt, the last, with
its side effect; no gap in attempt numbers), and every run the stream reported completed
before the crash is still completed after recovery with the same completing attempt. A claim is
committed asynchronously (``synchronous_commit=off`` on the claim connection), so the crash may
forget one: its run is queued again at its previous attempt and runs again. The same daemon may
claim it again under the same attempt number, while the outcome of its earlier execution still
waits to be written: that outcome is dropped, never written against the new claim nor reported
(``tests/store/test_forgotten_claim.py``). Earlier attempts may therefore end ``lost``/``failed``
(the connection died under them) but never a second ``completed``.

A process kill of the whole server loses the WAL buffers, not the operating system's page
cache, so this shows what ``synchronous_commit`` keeps; what ``fsync`` adds (a power loss) is
beyond a test.
"""

from __future__ import annotations

import json
import re
import signal
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import anyio
import asyncpg
import psutil
import pytest

from taskd import Client
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations
from tests.support.daemon_process import (
    DaemonProcess,
    check_completed_once,
    count_runs,
    create_effects_table,
    daemons,
    private_postgres,
    wait_all_completed,
)
from tests.support.waiting import wait_for

BACKLOG = 1_500
CONCURRENCY = 20
CRASH_AFTER = 300  # completed runs before the crash

pytestmark = pytest.mark.timeout(90)


def crash(server: Any) -> int:
    """SIGKILL the postmaster and all its children at once; returns how many were killed."""
    postmaster = psutil.Process(server.get_pid())
    children = postmaster.children(recursive=True)
    postmaster.send_signal(signal.SIGSTOP)  # it must not restart or reset anything meanwhile
    for process in [postmaster, *children]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([postmaster, *children], timeout=10)
    return 1 + len(children)


class CompletedStream:
    """The ``completed`` events of a daemon's ``/api/stream``: the outcomes it wrote."""

    def __init__(self) -> None:
        self.completed: list[tuple[uuid.UUID, int]] = []  # (run id, completing attempt)
        self.connected = anyio.Event()
        self.ended: str | None = None

    async def follow(self, url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/api/stream", timeout=aiohttp.ClientTimeout(total=None)) as r,
        ):
            assert r.status == 200, await r.text()
            event = ""
            try:
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        event = line[len("event: ") :]
                    elif line.startswith("data: ") and event == "completed":
                        data = json.loads(line[len("data: ") :])
                        self.completed.append((uuid.UUID(data["run_id"]), data["attempt"]))
            except aiohttp.ClientError as exc:
                self.ended = f"{type(exc).__name__}: {exc}"
                return
            self.ended = "closed by the daemon"


def admin_url(daemon: DaemonProcess) -> str:
    record = next(r for r in daemon.records if r["msg"].startswith("admin endpoint on "))
    match = re.search(r"http://\S+", record["msg"])
    assert match, record
    return match.group(0).rstrip("/")


async def test_postgres_crash_keeps_every_committed_trigger_and_written_outcome() -> None:
    began = time.monotonic()
    async with private_postgres("taskd-dbcrash-", durable=True) as server, daemons() as group:
        dsn: str = server.get_uri()
        db = await asyncpg.connect(dsn)
        try:
            settings = {
                name: await db.fetchval(f"SHOW {name}")
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            }
        finally:
            await db.close()
        assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        connection = await connect(dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        await create_effects_table(dsn)

        daemon = await group.start(dsn, concurrency=CONCURRENCY)
        await daemon.ready()
        stream = CompletedStream()
        triggered: list[uuid.UUID] = []
        refused = 0
        crashed = anyio.Event()
        recovered = anyio.Event()
        stop_producing = anyio.Event()
        producer_stopped = anyio.Event()

        async with anyio.create_task_group() as background:
            background.start_soon(stream.follow, admin_url(daemon))
            with anyio.fail_after(10):
                await stream.connected.wait()
            async with Client.connect(dsn) as client:
                triggered += await client.batch_trigger(
                    "crash.work", [{"i": i} for i in range(BACKLOG)], max_attempts=20
                )

                async def produce() -> None:
                    # One run at a time through the crash: an id returned is a committed
                    # trigger; a call that failed may or may not have committed.
                    nonlocal refused
                    n = 0
                    while not stop_producing.is_set():
                        try:
                            with anyio.fail_after(5):
                                triggered.append(await client.trigger("crash.work", {"p": n}))
                        except Exception:  # the server is down: try again
                            refused += 1
                            await anyio.sleep(0.05)
                        n += 1
                        await anyio.sleep(0.005)
                    producer_stopped.set()

                background.start_soon(produce)

                db = await asyncpg.connect(dsn)
                try:

                    async def some_completed() -> int:
                        done = (await count_runs(db)).get("completed", 0)
                        return done if done >= CRASH_AFTER else 0

                    await wait_for(some_completed, timeout=30, interval=0.01)
                finally:
                    await db.close()

                written_before = len(stream.completed)
                killed = await anyio.to_thread.run_sync(crash, server)
                crashed.set()
                crashed_at = time.time()
                # the daemon notices the outage (and keeps running, or exits: then restart it)
                await daemon.wait_for_record(
                    lambda r: r["level"] in {"warning", "error"} and _after(r, crashed_at),
                    timeout=10,
                )
                written_at_crash = dict(stream.completed)
                assert stream.ended is None, f"the stream ended: {stream.ended}\n{daemon.output()}"
                assert len(written_at_crash) == len(stream.completed), "a run completed twice"
                await anyio.to_thread.run_sync(server.ensure_postgres_running)
                recovered.set()
                assert server.get_uri() == dsn, "the socket moved"
                down = time.time() - crashed_at

                async def reconnect() -> asyncpg.Connection | None:
                    try:
                        return await asyncpg.connect(dsn)
                    except (OSError, asyncpg.CannotConnectNowError):
                        return None  # still recovering

                db = await wait_for(reconnect, timeout=20, interval=0.1)
                try:
                    # every outcome the daemon reported written survived the crash
                    rows = await db.fetch(
                        "SELECT id, status, attempt FROM taskd.runs WHERE id = ANY($1::uuid[])",
                        list(written_at_crash),
                    )
                    after = {row["id"]: (row["status"], row["attempt"]) for row in rows}
                    lost_outcomes = {
                        run_id: (attempt, after.get(run_id))
                        for run_id, attempt in written_at_crash.items()
                        if after.get(run_id) != ("completed", attempt)
                    }
                    assert not lost_outcomes, (
                        f"{len(lost_outcomes)} of {len(written_at_crash)} outcomes reported "
                        f"written before the crash are gone (run: (attempt, now)), e.g. "
                        f"{list(lost_outcomes.items())[:5]}"
                    )

                    await anyio.sleep(0.5)  # some triggers after the recovery too
                    stop_producing.set()
                    # a trigger in flight commits after the flag: count the runs only once
                    # the producer has returned, or the total misses it and never matches
                    with anyio.fail_after(10):
                        await producer_stopped.wait()
                    serving = [d for d in group.started if d.alive]
                    if not serving:
                        # the daemon gave up during the outage: its successor finishes
                        serving = [await group.start(dsn, concurrency=CONCURRENCY)]
                        await serving[0].ready()
                    total = await db.fetchval("SELECT count(*) FROM taskd.runs")
                    await wait_all_completed(db, total, serving, timeout=45)
                    for survivor in serving:
                        assert await survivor.stop() == 0, survivor.output()

                    all_runs = [r["id"] for r in await db.fetch("SELECT id FROM taskd.runs")]
                    missing = set(triggered) - set(all_runs)
                    assert not missing, (
                        f"{len(missing)} committed trigger(s) lost, e.g. {list(missing)[:3]}"
                    )
                    figures = await check_completed_once(
                        db, all_runs, allowed_failures=frozenset({"lost", "failed"})
                    )
                    # every outcome streamed, before, during and after the crash, is the one
                    # the run ended with, and no run was reported completed twice
                    final = {
                        row["id"]: row["attempt"]
                        for row in await db.fetch("SELECT id, attempt FROM taskd.runs")
                    }
                    streamed = dict(stream.completed)
                    assert len(streamed) == len(stream.completed), "a run completed twice"
                    changed = [
                        (r, a, final.get(r)) for r, a in streamed.items() if final.get(r) != a
                    ]
                    assert not changed, changed[:5]
                finally:
                    await db.close()
            background.cancel_scope.cancel()

    print(
        f"\npostgres crash (fsync=on, synchronous_commit=on): {killed} server processes "
        f"SIGKILLed after {written_before} outcomes streamed, down {down:.2f} s\n"
        f"  runs: {len(all_runs)} ({len(triggered)} triggers acknowledged, {refused} refused "
        f"during the outage); outcomes streamed by the crash: {len(written_at_crash)}, all kept\n"
        f"  attempt outcomes: {figures['outcomes']}; side-effect rows: "
        f"{figures['effect_rows']}; outcomes streamed in all: {len(stream.completed)}\n"
        f"  total: {time.monotonic() - began:.1f} s"
    )


def _after(record: dict[str, Any], moment: float) -> bool:
    return datetime.fromisoformat(record["ts"]).timestamp() >= moment - 0.005

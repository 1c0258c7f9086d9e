"""Every daemon's run changes on any daemon's ``/api/stream``: two `taskd run` processes on one
database, the tasks served only by daemon B, a stream opened on daemon A (worker/change_feed.py).

While no daemon has a stream client, nothing is sent: a session LISTENing on the feed's
channel receives no notification while B completes runs. Once A and B have a client each, A's
stream shows B's runs (created through B's API, started, completed; an attempt failed, then
failed), each change once, B's stream shows A's run, and each daemon's own changes reach its
stream once (not again through the database).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest

from taskd import Client
from tests.support.daemon_process import DaemonProcess, create_effects_table, daemons
from tests.support.tasks.limits import CREATE_SPANS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

CRASH = {"TASKD_TASKS__MODULES": '["tests.support.tasks.crash"]'}
LIMITS = {"TASKD_TASKS__MODULES": '["tests.support.tasks.limits"]'}


def admin_url(daemon: DaemonProcess) -> str:
    record = next(r for r in daemon.records if r["msg"].startswith("admin endpoint on "))
    match = re.search(r"http://\S+", record["msg"])
    assert match, record
    return match.group(0).rstrip("/")


class Stream:
    """The events of one ``/api/stream``, as (kind, data) in arrival order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = anyio.Event()

    async def follow(self, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/api/stream", timeout=timeout) as reply,
        ):
            assert reply.status == 200, await reply.text()
            kind = ""
            async for raw in reply.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[len("data: ") :])))

    def of(self, run_id: uuid.UUID) -> list[str]:
        return [kind for kind, data in self.events if data["run_id"] == str(run_id)]


async def test_a_stream_on_one_daemon_shows_the_runs_of_another(
    database: str, client: Client
) -> None:
    await create_effects_table(database)
    db = await asyncpg.connect(database)
    received: list[str] = []

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.append(payload)

    try:
        await db.execute(CREATE_SPANS)
        async with daemons() as group:
            a = await group.start(database, **LIMITS)
            b = await group.start(database, **CRASH)
            await a.ready()
            await b.ready()

            # Nobody streams: B completes 50 runs and sends no notification at all.
            await db.add_listener("taskd_changes", on_notify)
            quiet = await client.batch_trigger("crash.work", [{"i": i} for i in range(50)])

            async def all_done() -> bool:
                done = await db.fetchval(
                    "SELECT count(*) FROM taskd.runs WHERE id = ANY($1) AND status = 'completed'",
                    quiet,
                )
                return bool(done == len(quiet))

            await wait_for(all_done, timeout=30)
            assert received == []
            assert not b.find(lambda r: r["msg"].startswith("forwarding run changes"))

            stream = Stream()
            on_b = Stream()
            async with anyio.create_task_group() as background:
                background.start_soon(stream.follow, admin_url(a))
                background.start_soon(on_b.follow, admin_url(b))
                with anyio.fail_after(10):
                    await stream.connected.wait()
                    await on_b.connected.wait()
                # each learns that the other streams (its NOTIFY on taskd_stream_watch, or the
                # next look at pg_stat_activity) and says so in its log
                for daemon in (a, b):
                    await daemon.wait_for_record(
                        lambda r: r["msg"].startswith("forwarding run changes"), timeout=20
                    )
                async with aiohttp.ClientSession() as http:
                    reply = await http.post(
                        f"{admin_url(b)}/api/tasks/crash.work/trigger", json={"payload": {}}
                    )
                    assert reply.status == 201, await reply.text()
                    works = uuid.UUID((await reply.json())["id"])
                fails = await client.trigger("crash.fail", {})
                # a run A itself executes: in its stream once, not again through the database
                own = await client.trigger("limits.rated", {})

                async def check() -> bool:
                    return (
                        "completed" in stream.of(works)
                        and "failed" in stream.of(fails)
                        and "completed" in stream.of(own)
                        and "completed" in on_b.of(own)
                        and "failed" in on_b.of(fails)
                    )

                await wait_for(check, timeout=30)
                background.cancel_scope.cancel()
            await db.remove_listener("taskd_changes", on_notify)
    finally:
        await db.close()

    # each change once; in the order B's own stream has them (a run's `created` and `started`,
    # or an attempt's `attempt_failed` and the retry's `started`, may come either way)
    assert Counter(stream.of(works)) == Counter(["created", "started", "completed"]), stream.events
    assert stream.of(works)[-1] == "completed"
    assert Counter(stream.of(fails)) == Counter(
        ["started", "attempt_failed", "started", "failed"]
    ), stream.events
    assert stream.of(fails)[-1] == "failed"
    # A's run on both streams, once each: A's own readers had it in process, A skipped it
    # when the database sent it back, and B received it through the database
    assert stream.of(own) == ["started", "completed"], stream.events
    assert on_b.of(own) == ["started", "completed"], on_b.events
    assert on_b.of(fails) == stream.of(fails), (on_b.events, stream.events)
    # the events keep their format: B's completion as B's own stream would show it
    completed = next(d for k, d in stream.events if k == "completed" and d["run_id"] == str(works))
    assert completed["task_id"] == "crash.work"
    assert completed["status"] == "completed"
    assert completed["attempt"] == 1
    assert completed["data"]["attempt_outcome"] == "completed"
    failed = next(d for k, d in stream.events if k == "failed" and d["run_id"] == str(fails))
    assert failed["data"]["error"]["type"] == "AlwaysFails"
    assert Counter(d["seq"] for _, d in stream.events).most_common(1)[0][1] == 1
    # changes were sent as notifications once A streamed
    assert received

"""The fleet's change feed (worker/change_feed.py) of one in-process daemon, seen from the
database: what it costs while nobody streams, what it sends once another daemon streams, and
what a stream whose connection was cut catches up on."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import anyio
import asyncpg
import orjson

from taskd import Client, Context, RunStatus, task
from tests.support.in_process import admin_url
from tests.support.in_process import running_daemon as daemon_with
from tests.support.sse import open_reader
from tests.support.waiting import wait_for, wait_for_run


@task(id="feed.noop")
async def noop(payload: Any, ctx: Context) -> None:
    return None


async def test_nothing_is_sent_until_another_daemon_streams(client: Client, database: str) -> None:
    received: list[str] = []

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.append(payload)

    listener = await asyncpg.connect(database)
    await listener.add_listener("taskd_changes", on_notify)
    try:
        async with daemon_with(database, [noop]) as daemon:
            feed = daemon.change_feed
            assert feed is not None
            quiet = await client.batch_trigger(noop, [None] * 100)
            for run_id in quiet:
                await wait_for_run(client, run_id)
            # no reader anywhere: no change built, none sent
            assert not daemon.changes.active
            assert (feed.forwarding, feed.sent_total, feed.notifications_total) == (False, 0, 0)
            assert received == []

            # another daemon's stream, as the feed sees one: a taskd-stream session that
            # announces itself
            streamer = await asyncpg.connect(
                database, server_settings={"application_name": "taskd-stream"}
            )
            try:
                await streamer.execute("SELECT pg_notify('taskd_stream_watch', '')")

                async def forwarding() -> bool:
                    return feed.forwarding

                await wait_for(forwarding, timeout=20)
                assert daemon.changes.active
                run_id = await client.trigger(noop, None)

                async def completed_sent() -> list[Any] | None:
                    for payload in received:
                        message = orjson.loads(payload)
                        assert message["o"] == str(daemon.worker_id)
                        for entry in message["c"]:
                            if entry[1] == str(run_id) and entry[0] == "completed":
                                return list(entry)
                    return None

                entry = await wait_for(completed_sent)
                assert entry[2:5] == ["feed.noop", "completed", 1]
            finally:
                await streamer.close()

            # the last streamer left: the daemon stops sending at its next look
            async def stopped() -> bool:
                return not feed.forwarding

            await wait_for(stopped, timeout=20)
            assert not daemon.changes.active
    finally:
        await listener.close()


async def test_a_stream_catches_up_on_what_finished_while_its_feed_was_cut(
    client: Client, database: str
) -> None:
    async with (
        daemon_with(database, [noop]) as daemon,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        feed = daemon.change_feed
        assert feed is not None
        reader = await open_reader(group, http, f"{admin_url(daemon)}/api/stream")

        async def streaming() -> bool:
            return feed.streaming

        await wait_for(streaming, timeout=20)
        # a run no daemon serves, canceled by a producer of its own: no daemon publishes that
        # change, as if its notification had been lost
        run_id = await client.trigger("feed.nobody_serves", {})
        assert await client.cancel(run_id) == RunStatus.CANCELED
        db = await asyncpg.connect(database)
        try:
            cut = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'taskd-stream'"
            )
            assert cut == 1
        finally:
            await db.close()
        events = await reader.wait_for_kind(run_id, "canceled")
        assert [(e.kind, e.data["status"], e.data["task_id"]) for e in events] == [
            ("canceled", "canceled", "feed.nobody_serves")
        ]
        assert isinstance(uuid.UUID(events[0].data["run_id"]), uuid.UUID)
        group.cancel_scope.cancel()


BIG = {"report": "z" * 20_000}  # too large for a notification: read from the run's row


@task(id="feed.big_metadata")
async def big_metadata(payload: Any, ctx: Context) -> None:
    await ctx.set_metadata(**BIG)


async def test_metadata_too_large_for_a_notification_reaches_the_other_daemon_whole(
    client: Client, database: str
) -> None:
    async with (
        daemon_with(database, [noop]) as reading,
        daemon_with(database, [big_metadata]) as running,
        aiohttp.ClientSession() as http,
        anyio.create_task_group() as group,
    ):
        reader = await open_reader(group, http, f"{admin_url(reading)}/api/stream")
        feed = running.change_feed
        assert feed is not None

        async def forwarding() -> bool:
            return feed.forwarding

        await wait_for(forwarding, timeout=20)
        run_id = await client.trigger(big_metadata, None)
        events = await reader.wait_for_kind(run_id, "completed")
        metadata = [e for e in events if e.kind == "metadata"]
        assert len(metadata) == 1
        assert metadata[0].data["data"] == BIG
        assert metadata[0].data["task_id"] == "feed.big_metadata"
        group.cancel_scope.cancel()

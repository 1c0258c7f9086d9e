"""What a running task leaves on its run: metadata (ctx.set_metadata) and stored ctx.log lines."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import pytest

from taskd import Client, Context, Retry, RunStatus, task
from taskd.config import Settings
from taskd.errors import MetadataTooLarge
from taskd.models import LogLine
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.log_writer import RunLogWriter
from tests.support.in_process import admin_url
from tests.support.in_process import running_daemon as daemon_with
from tests.support.waiting import wait_for, wait_for_run

MAX_METADATA = 200
QUICK_RETRY = Retry(max_attempts=2, min_delay=0.01, max_delay=0.01, jitter=False)

GATES: dict[str, anyio.Event] = {}
SEEN: dict[str, Any] = {}


# metadata ---------------------------------------------------------------------------------


@task(id="data.progress", retry=QUICK_RETRY)
async def progress(payload: Any, ctx: Context) -> dict[str, Any]:
    if ctx.attempt == 1:
        SEEN["at_start"] = ctx.metadata
        await ctx.set_metadata(progress=0.4, stage="download")
        await ctx.set_metadata(stage="parse", counts={"rows": 3})  # merged by key
        SEEN["after_set"] = ctx.metadata
        try:
            await ctx.set_metadata(blob="x" * MAX_METADATA)
        except MetadataTooLarge as exc:
            SEEN["too_large"] = exc
        try:
            await ctx.set_metadata(when=object())
        except TypeError as exc:
            SEEN["not_json"] = exc
        try:
            await ctx.set_metadata(note="a\x00b")
        except ValueError as exc:
            SEEN["nul"] = exc
        SEEN["after_refused"] = ctx.metadata
        GATES["set"].set()
        await GATES["go"].wait()
        raise RuntimeError("the first attempt fails after setting metadata")
    SEEN["second_attempt"] = ctx.metadata
    # Concurrent calls from one task: each merges into what the other stored.
    await asyncio.gather(ctx.set_metadata(progress=1.0), ctx.set_metadata(stage="done"))
    SEEN["gathered"] = ctx.metadata
    return {"ok": True}


def small_metadata(settings: Settings) -> None:
    settings.tasks.max_metadata_bytes = MAX_METADATA


async def test_metadata_is_visible_while_the_run_executes_and_kept_after(
    client: Client, database: str
) -> None:
    GATES.update(set=anyio.Event(), go=anyio.Event())
    SEEN.clear()
    async with (
        daemon_with(database, [progress], small_metadata) as daemon,
        aiohttp.ClientSession() as http,
    ):
        run_id = await client.trigger(progress)
        await GATES["set"].wait()

        executing = await client.get_run(run_id)
        assert executing.status is RunStatus.EXECUTING
        assert executing.metadata == {"progress": 0.4, "stage": "parse", "counts": {"rows": 3}}
        async with http.get(f"{admin_url(daemon)}/api/runs/{run_id}") as response:
            assert response.status == 200
            detail = await response.json()
        assert detail["run"]["status"] == "executing"
        assert detail["run"]["metadata"] == executing.metadata

        GATES["go"].set()
        run = await wait_for_run(client, run_id)
        async with http.get(f"{admin_url(daemon)}/api/runs/{run_id}") as response:
            finished_detail = await response.json()

    assert SEEN["at_start"] == {}
    assert SEEN["after_set"] == {"progress": 0.4, "stage": "parse", "counts": {"rows": 3}}
    # Refused values change nothing, locally or stored (the run showed the same above).
    too_large = SEEN["too_large"]
    assert too_large.limit == MAX_METADATA and too_large.size > MAX_METADATA
    assert "over the limit of 200 bytes" in str(too_large)
    assert "JSON" in str(SEEN["not_json"])
    assert "NUL" in str(SEEN["nul"])
    assert SEEN["after_refused"] == SEEN["after_set"]
    # The retry starts from what the first attempt stored.
    assert SEEN["second_attempt"] == SEEN["after_set"]

    assert run.status is RunStatus.COMPLETED
    assert [a.outcome for a in run.attempts] == ["failed", "completed"]
    assert run.metadata == {"progress": 1.0, "stage": "done", "counts": {"rows": 3}}
    assert SEEN["gathered"] == run.metadata
    assert finished_detail["run"]["metadata"] == run.metadata


@task(id="data.limit")
async def at_the_limit(payload: Any, ctx: Context) -> None:
    # {"k":"..."} is exactly MAX_METADATA bytes: allowed; one byte more is not.
    await ctx.set_metadata(k="x" * (MAX_METADATA - 8))
    with pytest.raises(MetadataTooLarge):
        await ctx.set_metadata(k="x" * (MAX_METADATA - 7))
    with pytest.raises(MetadataTooLarge):
        await ctx.set_metadata(other=1)  # the merged object is what is capped


async def test_metadata_cap_applies_to_the_merged_object(client: Client, database: str) -> None:
    async with daemon_with(database, [at_the_limit], small_metadata):
        run = await wait_for_run(client, await client.trigger(at_the_limit))
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.metadata == {"k": "x" * (MAX_METADATA - 8)}


async def test_metadata_outside_a_daemon_stays_on_the_context() -> None:
    ctx = Context(
        run_id=uuid.uuid4(),
        task_id="t",
        attempt=1,
        max_attempts=1,
        payload=None,
        queue="default",
        tags=[],
        metadata={"a": 1},
    )
    await ctx.set_metadata(b=2)
    assert ctx.metadata == {"a": 1, "b": 2}


# logs -------------------------------------------------------------------------------------

CAP = 5


@task(id="data.chatty", retry=QUICK_RETRY)
async def chatty(payload: Any, ctx: Context) -> None:
    if ctx.attempt == 1:
        ctx.log.debug("below the stored level")
        ctx.log.info("fetched", rows=12, source={"host": "db", "port": 5432})
        ctx.log.warning("slow response", ms=1500)
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            ctx.log.exception("division failed", step="ratio")
        raise RuntimeError("retry me")
    ctx.log.error("second attempt", n=2)
    for i in range(10):
        ctx.log.info("spam", i=i)


@task(id="data.quiet")
async def quiet(payload: Any, ctx: Context) -> None:
    ctx.log.info("hello from quiet")
    ctx.log.warning("careful", by_status={200: 5, 404: 1})  # keys that are not strings
    ctx.log.info("raw body", body='{"a": "\\u0000"}', nul="a\x00b")  # escapes, a NUL


def capped(settings: Settings) -> None:
    settings.log.run_lines = CAP


async def test_log_lines_are_stored_with_the_run_capped_across_attempts(
    client: Client, database: str
) -> None:
    async with daemon_with(database, [chatty, quiet], capped):
        run_id = await client.trigger(chatty)
        other_id = await client.trigger(quiet)
        run = await wait_for_run(client, run_id)
        other = await wait_for_run(client, other_id)
        # Seen finished: its lines are stored already (no waiting for them).
        lines = await client.list_logs(run=run_id)
        other_lines = await client.list_logs(run=other_id)

    assert run.status is RunStatus.COMPLETED and run.attempt == 2
    assert other.status is RunStatus.COMPLETED
    assert [(line.attempt, line.level, line.message) for line in lines] == [
        (1, "info", "fetched"),
        (1, "warning", "slow response"),
        (1, "error", "division failed"),
        (2, "error", "second attempt"),
        (2, "info", "spam"),
        (2, "warning", lines[-1].message),
    ]
    assert lines[-1].message.startswith("log cap reached")
    assert f"at most {CAP} lines" in lines[-1].message
    assert lines[0].fields == {"rows": 12, "source": {"host": "db", "port": 5432}}
    assert lines[1].fields == {"ms": 1500}
    assert lines[2].fields is not None and lines[2].fields["step"] == "ratio"
    assert "ZeroDivisionError: division by zero" in lines[2].fields["exc"]
    assert "Traceback" in lines[2].fields["exc"]
    assert lines[3].fields == {"n": 2}
    assert lines[4].fields == {"i": 0}
    assert all(line.run_id == run_id and line.task_id == "data.chatty" for line in lines)
    assert [line.id for line in lines] == sorted(line.id for line in lines)

    assert [(line.level, line.message, line.fields) for line in other_lines] == [
        ("info", "hello from quiet", None),
        ("warning", "careful", {"by_status": {"200": 5, "404": 1}}),
        ("info", "raw body", {"body": '{"a": "\\u0000"}', "nul": "ab"}),
    ]

    # The filters of client.list_logs (those of `taskd logs`).
    by_task = await client.list_logs(task="data.quiet")
    assert [line.id for line in by_task] == [line.id for line in other_lines]
    assert [line.id for line in await client.list_logs(task=chatty)] == [x.id for x in lines]
    errors = await client.list_logs(levels=["error"])
    assert [line.message for line in errors] == ["division failed", "second attempt"]
    warnings = await client.list_logs(run=run_id, levels=["warning", "error"])
    assert [line.id for line in warnings] == [lines[i].id for i in (1, 2, 3, 5)]
    after = await client.list_logs(run=run_id, after=lines[2].id)
    assert [line.id for line in after] == [line.id for line in lines[3:]]
    everything = await client.list_logs()
    assert {line.id for line in everything} == {x.id for x in lines + other_lines}
    assert [line.id for line in await client.list_logs(after=everything[-1].id)] == []
    newest = await client.list_logs(run=run_id, limit=2, newest=True)
    assert [line.id for line in newest] == [line.id for line in lines[-2:]]


@task(id="data.levels")
async def levels(payload: Any, ctx: Context) -> None:
    ctx.log.debug("debug line")
    ctx.log.info("info line")
    ctx.log.warning("warning line")
    ctx.log.error("error line")


async def test_lines_below_the_configured_level_are_not_stored(
    client: Client, database: str
) -> None:
    def warnings_only(settings: Settings) -> None:
        settings.log.run_level = "WARNING"

    async with daemon_with(database, [levels], warnings_only):
        run_id = await client.trigger(levels)
        await wait_for_run(client, run_id)
        lines = await client.list_logs(run=run_id)
    assert [(line.level, line.message) for line in lines] == [
        ("warning", "warning line"),
        ("error", "error line"),
    ]


async def test_run_lines_zero_stores_nothing(client: Client, database: str) -> None:
    def none(settings: Settings) -> None:
        settings.log.run_lines = 0

    async with daemon_with(database, [levels], none):
        run_id = await client.trigger(levels)
        await wait_for_run(client, run_id)
        assert await client.list_logs(run=run_id) == []


@task(id="data.surrogate")
async def surrogate(payload: Any, ctx: Context) -> None:
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")  # a non-UTF-8 file name
    ctx.log.info(f"listed {name}")
    ctx.log.info(f"read {name}", file=name)
    ctx.log.info("after it")


async def test_a_line_postgres_cannot_take_does_not_hold_back_other_lines(
    client: Client, database: str
) -> None:
    async with daemon_with(database, [surrogate, levels]) as daemon:
        bad_id = await client.trigger(surrogate)
        await wait_for_run(client, bad_id)
        good_id = await client.trigger(levels)
        await wait_for_run(client, good_id)
        good = await client.list_logs(run=good_id)
        bad = await client.list_logs(run=bad_id)

        async def drained() -> bool:
            assert daemon.log_writer is not None
            return daemon.log_writer.written == len(good) + len(bad)

        await wait_for(drained)
    assert [line.message for line in good] == ["info line", "warning line", "error line"]
    assert [line.message for line in bad] == [
        "listed report-\ufffd.csv",
        "read report-\ufffd.csv",
        "after it",
    ]
    assert bad[1].fields == {"file": "report-\ufffd.csv"}


async def test_the_writer_keeps_the_lines_the_database_takes(client: Client, database: str) -> None:
    """A refused line costs only itself, not the batch it was written with."""
    run_id = await client.trigger("data.anything")
    pool = await create_pool(database)
    try:
        writer = RunLogWriter(Store(pool))

        def line(message: str, fields: bytes | None = None) -> LogLine:
            return LogLine(run_id, "data.anything", 1, datetime.now(UTC), "info", message, fields)

        writer.add(line("first"))
        writer.add(line("refused", b'{"a": "\\u0000"}'))  # jsonb takes no \u0000
        writer.add(line("last", b'{"n": 1}'))
        assert await writer.flush()
    finally:
        await pool.close()
    stored = await client.list_logs(run=run_id)
    assert [(x.message, x.fields) for x in stored] == [("first", None), ("last", {"n": 1})]
    assert (writer.written, writer.dropped) == (2, 1)


@task(id="data.huge")
async def huge(payload: Any, ctx: Context) -> None:
    ctx.log.info("x" * 100_000, blob="y" * 100_000, small=1)


async def test_a_huge_line_is_stored_capped(client: Client, database: str) -> None:
    async with daemon_with(database, [huge]):
        run_id = await client.trigger(huge)
        await wait_for_run(client, run_id)
        [line] = await client.list_logs(run=run_id)
    assert line.message.startswith("x" * 8_000)
    assert line.message.endswith("[92000 more characters]")
    assert line.fields is not None
    assert set(line.fields) == {"truncated", "preview"}
    assert line.fields["truncated"].endswith("bytes of fields")
    assert len(line.fields["preview"]) <= 8_192

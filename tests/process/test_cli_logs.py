"""`taskd logs`: a finished run's lines, filters, and -f tailing a running task (subprocesses)."""

from __future__ import annotations

import asyncio
import uuid

import anyio
import asyncpg
import orjson
from anyio.abc import ByteReceiveStream

from taskd import Client, Context, task
from tests.support.cli import TASKD, cli_env, one_line_failure, taskd
from tests.support.waiting import wait_for, wait_for_run

gates: dict[str, asyncio.Event] = {}


@task(id="logs.chatty")
async def chatty(payload: dict, ctx: Context) -> dict:
    ctx.log.debug("not stored at the default run_level")
    ctx.log.info("fetching", page=1)
    ctx.log.warning("slow page", seconds=2.5)
    gate = gates.get(payload.get("gate", ""))
    if gate is not None:
        await gate.wait()
    try:
        raise KeyError("missing")
    except KeyError:
        ctx.log.exception("lookup failed")
    ctx.log.info("done", rows=12)
    return {}


async def tail_listening(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%taskd_logs%'"
        )
    finally:
        await connection.close()
    return bool(count)


class Lines:
    """Lines of a subprocess's stdout as they arrive."""

    def __init__(self, stream: ByteReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.lines: list[str] = []

    async def pump(self) -> None:
        async for chunk in self._stream:
            self._buffer += chunk
            *complete, self._buffer = self._buffer.split(b"\n")
            self.lines.extend(line.decode() for line in complete)


async def test_logs_of_a_finished_run_with_filters(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([chatty]):
        run_id = await client.trigger("logs.chatty", {})
        await wait_for_run(client, run_id)
        other = await client.trigger("logs.chatty", {})
        await wait_for_run(client, other)

    everything = await taskd(database, "logs", "--run", str(run_id))
    assert everything.code == 0, str(everything)
    messages = [line for line in everything.out.splitlines() if str(run_id) in line]
    assert [m.split(f"{run_id}#1  ", 1)[1].split("  ")[0] for m in messages] == [
        "fetching",
        "slow page",
        "lookup failed",
        "done",
    ]
    assert "page=1" in messages[0] and "WARNING" in messages[1]
    assert "KeyError: 'missing'" in everything.out  # the traceback under its line
    assert "not stored" not in everything.out
    assert str(other) not in everything.out

    warnings = await taskd(database, "logs", "--run", str(run_id), "--level", "warning", "--json")
    parsed = [orjson.loads(line) for line in warnings.out.splitlines()]
    assert [(p["level"], p["message"]) for p in parsed] == [
        ("warning", "slow page"),
        ("error", "lookup failed"),
    ]
    assert parsed[0]["fields"] == {"seconds": 2.5} and parsed[0]["attempt"] == 1

    newest = await taskd(database, "logs", "--task", "logs.chatty", "--lines", "2", "--json")
    assert newest.code == 0, str(newest)
    assert [
        (orjson.loads(line)["run_id"], orjson.loads(line)["message"])
        for line in newest.out.splitlines()
    ] == [(str(other), "lookup failed"), (str(other), "done")]

    unknown = await taskd(database, "logs", "--run", str(uuid.uuid4()))
    assert one_line_failure(unknown, "no run with id", code=1) is None
    bad_level = await taskd(database, "logs", "--level", "loud")
    assert one_line_failure(bad_level, "unknown level", code=1) is None


async def test_logs_follow_sees_lines_of_a_running_task(
    database: str, client: Client, start_daemon
) -> None:
    gates["follow"] = asyncio.Event()
    async with start_daemon([chatty]):
        run_id = await client.trigger("logs.chatty", {"gate": "follow"})
        process = await anyio.open_process(
            [str(TASKD), "logs", "-f", "--run", str(run_id)], env=cli_env(database)
        )
        assert process.stdout is not None
        lines = Lines(process.stdout)
        async with process, anyio.create_task_group() as group:
            group.start_soon(lines.pump)

            async def seen(text: str) -> bool:
                return any(text in line for line in lines.lines)

            # the run is still executing (held at its gate) while its lines are printed
            await wait_for(lambda: seen("slow page"))
            assert (await client.get_run(run_id)).status == "executing"
            assert not any("done" in line for line in lines.lines)
            gates["follow"].set()
            await wait_for(lambda: seen("rows=12"))
            # the run finished: the tail ends by itself
            with anyio.fail_after(10):
                code = await process.wait()
            assert code == 0
            group.cancel_scope.cancel()
    printed = [line for line in lines.lines if str(run_id) in line]
    assert len(printed) == 4, lines.lines


async def test_logs_follow_without_a_run_tails_every_new_line(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([chatty]):
        first = await client.trigger("logs.chatty", {})
        await wait_for_run(client, first)
        process = await anyio.open_process(
            [str(TASKD), "logs", "-f", "--lines", "0", "--json", "--level", "info"],
            env=cli_env(database),
        )
        assert process.stdout is not None
        lines = Lines(process.stdout)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(lines.pump)
                # the tail has read its (empty) backlog once it LISTENs
                await wait_for(lambda: tail_listening(database), timeout=15)
                second = await client.trigger("logs.chatty", {})
                third = await client.trigger("logs.chatty", {})

                async def both_done() -> bool:
                    runs = {orjson.loads(line)["run_id"] for line in lines.lines if line}
                    done = [orjson.loads(line) for line in lines.lines if '"done"' in line]
                    return {str(second), str(third)} <= runs and len(done) >= 2

                await wait_for(both_done)
                group.cancel_scope.cancel()
        finally:
            process.kill()
            await process.wait()
    parsed = [orjson.loads(line) for line in lines.lines if line]
    assert str(first) not in {p["run_id"] for p in parsed}  # --lines 0: no backlog
    ids = [p["id"] for p in parsed]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    per_run = {
        run: [p["message"] for p in parsed if p["run_id"] == str(run)] for run in (second, third)
    }
    for run, messages in per_run.items():
        assert messages == ["fetching", "slow page", "lookup failed", "done"], (run, parsed)

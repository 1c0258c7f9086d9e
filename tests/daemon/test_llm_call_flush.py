"""LLM call records are stored before the outcome they belong to, even behind a backlog of
log lines: the flush before outcomes (and hand-backs) writes the calls first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import anyio

from taskd import Client
from taskd.app import flush_run_rows
from taskd.models import LLMCall, LogLine
from taskd.store.database import create_pool
from taskd.store.store import Store
from taskd.worker.llm_call_writer import LLMCallWriter
from taskd.worker.log_writer import RunLogWriter
from tests.support.waiting import wait_for


class StuckLogWriter(RunLogWriter):
    """A log writer whose database never answers (a backlog, a lock)."""

    async def insert(self, rows: Sequence[LogLine]) -> None:
        await anyio.sleep_forever()


async def test_the_calls_are_stored_though_the_log_lines_are_stuck(
    client: Client, database: str
) -> None:
    run_id = await client.trigger("flush.anything")
    pool = await create_pool(database)
    try:
        store = Store(pool)
        lines, calls = StuckLogWriter(store), LLMCallWriter(store)
        lines.add(LogLine(run_id, "flush.anything", 1, datetime.now(UTC), "info", "hi", None))
        calls.add(
            LLMCall(
                run_id,
                "flush.anything",
                1,
                None,
                "default",
                None,
                [],
                "claude-haiku-4-5",
                "message",
                "ok",
                10,
                5,
                0,
                0,
                None,
                12,
                "end_turn",
                "req_1",
                None,
                datetime.now(UTC),
            )
        )

        async def stored() -> bool:
            # the writer counts a batch once its INSERT has returned, a moment after the row
            # is visible: both, or a slow machine cancels in between
            if calls.written != 1:
                return False
            count = await pool.fetchval(
                "SELECT count(*) FROM taskd.llm_calls WHERE run_id = $1", run_id
            )
            return bool(count == 1)

        async with anyio.create_task_group() as group:
            group.start_soon(flush_run_rows, lines, calls)
            # stored while the log lines are still stuck (the completer would give up on them
            # after its bound and write the outcome)
            await wait_for(stored)
            group.cancel_scope.cancel()
    finally:
        await pool.close()
    assert calls.written == 1 and lines.written == 0

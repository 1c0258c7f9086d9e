"""`taskd run --until-empty` as a CI job runs it: a subprocess that runs what is due, prints one
summary line and exits by itself, 0 when every run it finished completed and 3 when one failed.

Each process is given a poll interval of a minute, beyond the deadline of its command: a burst
must end on its own signals, never by waiting for a poll.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from tests.support.cli import Result, one_line_failure, taskd
from tests.support.paths import ROOT
from tests.support.runs import insert_runs, sql

ENV = {
    "TASKD_TASKS__MODULES": '["tests.support.tasks.burst"]',
    "TASKD_LOG__FORMAT": "json",
    "TASKD_WORKER__POLL_INTERVAL": "60s",
}


async def burst(database: str, *args: str, **env: str) -> Result:
    return await taskd(database, "run", "--until-empty", *args, cwd=ROOT, timeout=45, **ENV, **env)


def summary(result: Result) -> dict[str, Any]:
    """The burst's one summary line (a JSON log line on stdout)."""
    lines = [orjson.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    found = [line for line in lines if line.get("logger") == "taskd.burst"]
    assert len(found) == 1, str(result)
    record: dict[str, Any] = found[0]
    return record


async def statuses(db: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> list[str]:
    rows = await db.fetch(
        "SELECT status FROM taskd.runs r JOIN unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)"
        " ON u.id = r.id ORDER BY u.n",
        list(ids),
    )
    return [row["status"] for row in rows]


async def test_the_due_runs_are_run_the_delayed_one_is_left_and_it_exits_0(
    database: str, db: asyncpg.Connection
) -> None:
    due = await insert_runs(db, 3, task_id="burst.ok", payload=sql("to_jsonb(n)"))
    delayed = await insert_runs(db, 1, task_id="burst.ok", run_at=sql("now() + interval '1h'"))

    result = await burst(database)

    assert result.code == 0, str(result)
    assert result.err == "", str(result)
    assert await statuses(db, due) == ["completed"] * 3
    assert await statuses(db, delayed) == ["queued"]
    line = summary(result)
    assert line["msg"].startswith("burst done (nothing due left): claimed 3, completed 3"), line
    assert {k: line[k] for k in ("claimed", "completed", "failed", "left_delayed")} == {
        "claimed": 3,
        "completed": 3,
        "failed": 0,
        "left_delayed": 1,
    }
    assert line["exit_code"] == 0


async def test_a_failed_run_makes_it_exit_3(database: str, db: asyncpg.Connection) -> None:
    ok = await insert_runs(db, 2, task_id="burst.ok")
    failed = await insert_runs(db, 1, task_id="burst.fails")

    result = await burst(database)

    assert result.code == 3, str(result)
    assert await statuses(db, [*ok, *failed]) == ["completed", "completed", "failed"]
    line = summary(result)
    assert (line["level"], line["completed"], line["failed"]) == ("warning", 2, 1), line
    assert "failed 1" in line["msg"] and line["msg"].endswith("exit 3"), line


async def test_queue_limits_the_burst_to_those_queues(
    database: str, db: asyncpg.Connection
) -> None:
    ids = await insert_runs(
        db, 3, task_id="burst.ok", queue=sql("(ARRAY['reports', 'emails', 'backfill'])[n]")
    )

    # --queue replaces [worker] queues (given here through its variable)
    result = await burst(
        database, "--queue", "reports", "--queue", "backfill", TASKD_WORKER__QUEUES="emails"
    )

    assert result.code == 0, str(result)
    assert await statuses(db, ids) == ["completed", "queued", "completed"]
    assert summary(result)["claimed"] == 2


async def test_with_nothing_due_it_exits_at_once(database: str, db: asyncpg.Connection) -> None:
    await insert_runs(db, 1, task_id="burst.ok", run_at=sql("now() + interval '1h'"))
    await insert_runs(db, 1, task_id="not-served-here")

    result = await burst(database)

    assert result.code == 0, str(result)
    line = summary(result)
    assert (line["claimed"], line["left_delayed"], line["left_due"]) == (0, 1, 0), line
    # the worker row says it stopped, like any drained daemon
    assert await db.fetchval("SELECT count(*) FROM taskd.workers WHERE stopped_at IS NULL") == 0


async def test_an_empty_queue_name_is_a_usage_error(database: str) -> None:
    result = await burst(database, "--queue", " ")
    assert (problem := one_line_failure(result, "--queue", code=2)) is None, problem

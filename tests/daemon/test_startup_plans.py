"""Start-up does not grow with history: no statement the daemon runs up to READY reads the
finished runs.

Not a timing test: every statement a real (in-process) daemon sends from its start to READY is
recorded (asyncpg's query logger, installed by the connection set-up every taskd connection
goes through), then each one that reads the tables holding history is run again under
``EXPLAIN (ANALYZE)`` in a transaction rolled back, and the rows its plan visits in those
tables are counted. The tables hold 50,000 finished runs without statistics (right after a
bulk load, a restore, or a major-version upgrade, before autovacuum analyzes them): the state
in which the planner is most tempted to walk the history.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from taskd import Context, task
from taskd.store import database as store_database
from taskd.store.database import connect
from tests.support.runs import insert_runs, sql

HISTORY = 50_000
# A statement may visit the few live rows start-up is about (the gone worker's runs), never
# a sizable part of the history.
MOST_ROWS_VISITED = 100
HISTORY_TABLES = {"runs", "attempts", "run_logs", "steps", "events"}


@task(id="plans.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


async def write_history(connection: asyncpg.Connection) -> None:
    # Autovacuum must not analyze the tables behind the test's back.
    for table in HISTORY_TABLES:
        await connection.execute(f"ALTER TABLE taskd.{table} SET (autovacuum_enabled = false)")
    a_day_ago = sql("now() - interval '1 day'")
    await insert_runs(
        connection,
        HISTORY,
        task_id="plans.echo",
        status="completed",
        attempt=1,
        created_at=a_day_ago,
        started_at=a_day_ago,
        attempt_started_at=a_day_ago,
        finished_at=a_day_ago,
        output=sql("""'{"ok": true}'"""),
    )
    await connection.execute(
        """
        INSERT INTO taskd.attempts (run_id, attempt, started_at, finished_at, outcome)
        SELECT id, 1, started_at, finished_at, 'completed' FROM taskd.runs
        """
    )


GONE_WORKER = uuid.UUID("00000000-0000-7000-8000-00000000dead")


async def seed_gone_worker_runs(connection: asyncpg.Connection, runs: int) -> list[uuid.UUID]:
    """Runs still executing on a worker killed a moment ago (its lock free): start-up's
    reconciliation hands them back, the path a restart after a crash takes."""
    await connection.execute(
        "INSERT INTO taskd.workers (id, host, pid, version, concurrency, tasks, lock_key) "
        "VALUES ($1, 'gone-host', 4242, 'test', 10, '{plans.echo}', 4242) "
        "ON CONFLICT (id) DO UPDATE SET stopped_at = NULL",
        GONE_WORKER,
    )
    return await insert_runs(
        connection,
        runs,
        task_id="plans.echo",
        payload=sql("'1'"),
        status="executing",
        attempt=1,
        worker_id=GONE_WORKER,
        lease_expires_at=sql("now() + interval '1 hour'"),
        attempt_started_at=sql("now()"),
        started_at=sql("now()"),
    )


class Recorder:
    """Every statement sent on the taskd connections opened while ``recording`` is set."""

    def __init__(self) -> None:
        self.recording = False
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def log(self, query: Any) -> None:
        if self.recording:
            self.statements.append((query.query, tuple(query.args or ())))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    set_up = store_database.init_connection

    async def init_connection(connection: asyncpg.Connection) -> None:
        await set_up(connection)
        if recorder.recording:  # the daemon's connections, not the test's own
            connection.add_query_logger(recorder.log)

    monkeypatch.setattr(store_database, "init_connection", init_connection)
    yield recorder
    recorder.recording = False


def rows_visited(plan: dict[str, Any]) -> dict[str, int]:
    """Rows each history table's scans returned or filtered out, over every loop."""
    counts: dict[str, int] = {}
    table = plan.get("Relation Name")
    if table in HISTORY_TABLES and "Scan" in plan["Node Type"]:
        loops = plan.get("Actual Loops", 1)
        seen = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        seen += plan.get("Rows Removed by Index Recheck", 0)
        counts[table] = counts.get(table, 0) + int(seen * loops)
    for child in plan.get("Plans", []):
        for name, count in rows_visited(child).items():
            counts[name] = counts.get(name, 0) + count
    return counts


def plan_text(plan: Any, depth: int = 0) -> str:
    """The plan's nodes, one a line, for the failure message."""
    nodes = plan[0]["Plan"] if isinstance(plan, list) else plan
    line = "  " * depth + f"{nodes['Node Type']} {nodes.get('Relation Name', '')}"
    line += f" {nodes.get('Index Name', '')} rows={nodes.get('Actual Rows')}"
    line += f" removed={nodes.get('Rows Removed by Filter', 0)}"
    children = [plan_text(child, depth + 1) for child in nodes.get("Plans", [])]
    return "\n".join([line, *children])


READS_HISTORY = re.compile(r"\btaskd\.(" + "|".join(HISTORY_TABLES) + r")\b")
EXPLAINABLE = re.compile(r"^\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", re.I)


def strip_comments(query: str) -> str:
    return re.sub(r"--[^\n]*", "", query)


async def test_no_statement_before_ready_reads_the_history(
    database: str, start_daemon: Any, recorder: Recorder
) -> None:
    connection = await connect(database)
    try:
        await write_history(connection)
        rescued = await seed_gone_worker_runs(connection, 5)
        recorder.recording = True
        async with start_daemon([echo]):
            recorder.recording = False  # READY
        ran: dict[str, tuple[Any, ...]] = {}
        for query, args in recorder.statements:
            ran.setdefault(query, args)  # each distinct statement once, with its first args
        left = await connection.fetchval(
            "SELECT count(*) FROM taskd.runs WHERE id = ANY($1) AND status = 'executing'", rescued
        )
        assert left == 0, "the reconciliation should have handed the runs back"
        # the same again for the statements explained below: the rescue has runs to take
        await seed_gone_worker_runs(connection, 5)

        checked = []
        problems = []
        for query, args in ran.items():
            body = strip_comments(query)
            if not READS_HISTORY.search(body) or not EXPLAINABLE.match(body):
                continue
            transaction = connection.transaction()
            await transaction.start()
            try:
                plan = await connection.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
            except asyncpg.PostgresError as exc:  # e.g. a row it inserted exists now
                problems.append(f"could not explain ({exc}):\n{query}")
                continue
            finally:
                await transaction.rollback()
            visited = rows_visited(plan[0]["Plan"])
            checked.append(query)
            if any(count > MOST_ROWS_VISITED for count in visited.values()):
                problems.append(f"visits {visited} rows of history:\n{query}\n{plan_text(plan)}")
        assert any("run_rescue" in q or "Hand back executing runs" in q for q in checked), (
            "the reconciliation's statement was not among those checked"
        )
        assert not problems, "\n\n".join(problems)
    finally:
        await connection.close()

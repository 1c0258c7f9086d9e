"""Schema and migrations: applied once, under a lock, all in schema ``taskd``; claim plan; ids."""

from __future__ import annotations

import itertools
import re
import uuid
from pathlib import Path

import anyio
import asyncpg

from taskd.ids import new_run_id
from taskd.store.database import connect
from taskd.store.migrations import apply_migrations, shipped_migrations
from taskd.store.runs import SQL as RUN_SQL
from tests.support.cli import taskd_all
from tests.support.runs import insert_runs, sql

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


async def recorded(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT version, name, checksum, applied_at FROM taskd.migrations ORDER BY version"
    )


async def test_every_shipped_migration_is_applied_once_and_recorded(empty_database: str) -> None:
    shipped = shipped_migrations()
    assert shipped, "the package ships its migrations"
    assert [m.version for m in shipped] == sorted({m.version for m in shipped})
    connection = await connect(empty_database)
    try:
        applied = await apply_migrations(connection)
        assert [m.version for m in applied] == [m.version for m in shipped]
        first = await recorded(connection)
        assert [(r["version"], r["name"], r["checksum"]) for r in first] == [
            (m.version, m.name, m.checksum) for m in shipped
        ]

        assert await apply_migrations(connection) == []
        assert await recorded(connection) == first, "nothing re-applied or re-recorded"
        # the schema is usable: the SQL producer exists and works
        run_id = await connection.fetchval("SELECT taskd.trigger('some.task', '{}')")
        assert await connection.fetchval("SELECT status FROM taskd.runs WHERE id = $1", run_id) == (
            "queued"
        )
    finally:
        await connection.close()


async def test_everything_lives_in_schema_taskd(empty_database: str) -> None:
    connection = await connect(empty_database)
    try:
        await apply_migrations(connection)
        outside = await connection.fetch(
            """
            SELECT 'relation' AS kind, n.nspname, c.relname AS name
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname <> 'taskd' AND n.nspname <> ALL($1::text[])
               AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'
            UNION ALL
            SELECT 'function', n.nspname, p.proname
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname <> 'taskd' AND n.nspname <> ALL($1::text[])
            UNION ALL
            SELECT 'type', n.nspname, t.typname
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname <> 'taskd' AND n.nspname <> ALL($1::text[])
               AND n.nspname NOT LIKE 'pg_toast%'
            UNION ALL
            SELECT 'schema', nspname, nspname FROM pg_namespace
             WHERE nspname NOT IN ('taskd', 'public') AND nspname <> ALL($1::text[])
               AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast%'
            """,
            list(SYSTEM_SCHEMAS),
        )
        assert [dict(r) for r in outside] == []
        tables = {
            r["relname"]
            for r in await connection.fetch(
                "SELECT relname FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'taskd'::regnamespace"
            )
        }
        assert {"migrations", "runs", "attempts", "workers", "tasks", "settings"} <= tables
    finally:
        await connection.close()


async def test_two_migrate_processes_at_once(empty_database: str, tmp_path: Path) -> None:
    both = await taskd_all(
        empty_database, {"one": ["migrate"], "other": ["migrate"]}, cwd=tmp_path, timeout=60
    )
    results = [(done.code, done.out, done.err) for done in both.values()]

    assert [code for code, _, _ in results] == [0, 0], results
    assert all("Traceback" not in err for _, _, err in results), results
    outputs = sorted(out.strip() for _, out, _ in results)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in shipped_migrations())
    assert outputs == [f"applied: {names}", "schema is up to date"], results

    connection = await asyncpg.connect(empty_database)
    try:
        versions = [r["version"] for r in await recorded(connection)]
    finally:
        await connection.close()
    assert versions == [m.version for m in shipped_migrations()]


# The statements of taskd.claim_runs (plpgsql) that read runs, with its variables as
# parameters: $1 queue, $2 keys, $3 shares, $4 task ids, $5 worker, $6 lease seconds, $7 key,
# $8 the task versions, $9 pinned, $10 the claim's limit, $11 the daemon's queues.
CLAIM_VARIABLES = {
    "qname": "$1::text",
    "keys": "$2::text[]",
    "shares": "$3::int[]",
    "task_ids": "$4::text[]",
    "worker": "$5::uuid",
    "lease_seconds": "$6::float8",
    "t_start": "now()",
    "k": "$7::text",
    "task_versions": "($8::text[])",
    "pinned": "$9::boolean",
    "max_runs": "$10::int",
    "queues": "$11::text[]",
}


async def claim_statements(connection: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """The claim function's statements over taskd.runs (the one-key guard and its pick, the
    probes for keys with queued runs and the loop's pick), runnable on their own, and the
    function's pinned settings.

    EXPLAIN cannot see inside a function: explain its statements instead, with its settings,
    which are the plans the function runs.
    """
    function = await connection.fetchrow(
        "SELECT p.prosrc, p.proconfig FROM pg_proc p"
        " WHERE p.proname = 'claim_runs' AND p.pronamespace = 'taskd'::regnamespace"
    )
    assert function is not None
    body: str = function["prosrc"]
    statements = []
    for match in re.finditer(
        r"SELECT lo\.queue.*?;|SELECT r\.concurrency_key INTO k FROM taskd\.runs r.*?;"
        r"|WITH picked AS \(.*?;",
        body,
        re.S,
    ):
        statement = match.group(0).rstrip(";").replace(" INTO k ", " ")
        statement = re.sub(r"\s+INTO qname, k, one_key", "", statement)
        # (the short path's pick: its update is a second CTE)
        returned = "RETURNING r.id) SELECT id FROM claimed" if "claimed AS" in statement else ""
        statement = re.sub(r"RETURNING .*", returned or "RETURNING r.id", statement, flags=re.S)
        for name, parameter in CLAIM_VARIABLES.items():
            statement = re.sub(rf"(?<![.\w]){name}\b(?!\s*[(.])", parameter, statement)
        statements.append(statement)
    assert len(statements) == 5, body
    return statements, list(function["proconfig"] or [])


async def explain_claim(connection: asyncpg.Connection, *args: object) -> list[str]:
    statements, settings = await claim_statements(connection)
    plans = []
    async with connection.transaction():
        for setting in settings:
            key, value = setting.split("=", 1)
            await connection.execute(f"SET LOCAL {key} = '{value}'")
        for statement in statements:
            used = sorted({int(n) for n in re.findall(r"\$(\d+)", statement)})
            # numbered anew: a statement's parameters must be $1..$n
            renumbered = statement
            for new, old in enumerate(used, start=1):
                renumbered = re.sub(rf"\${old}\b", f"${new}", renumbered)
            rows = await connection.fetch("EXPLAIN " + renumbered, *[args[n - 1] for n in used])
            plans.append("\n".join(r[0] for r in rows))
    return plans


async def test_the_claim_uses_the_partial_index_whatever_the_history(database: str) -> None:
    connection = await connect(database)
    try:
        await insert_runs(
            connection,
            50000,
            task_id="noop",
            status="completed",
            attempt=1,
            started_at=sql("now()"),
            finished_at=sql("now()"),
            output=sql("""'{"ok": true}'"""),
        )
        for _ in range(5):
            await connection.execute("SELECT taskd.trigger('noop', '{}')")
        # queue, keys, shares, tasks, worker, lease, key, versions, pinned, limit, queues
        statement_args = (
            *("default", [""], [100], ["noop"], uuid.uuid4(), 60.0, "k", ["1"], True),
            *(100, None),
        )

        # Right after the burst (no statistics yet), then once analyzed: ordered scans of the
        # partial index that stop at the limit; nothing that reads or sorts the history, and
        # the picked runs joined back by primary key (no hash join over the table).
        for moment in ("before ANALYZE", "after ANALYZE"):
            if moment == "after ANALYZE":
                await connection.execute("ANALYZE taskd.runs")
            for plan in await explain_claim(connection, *statement_args):
                assert "runs_claim_idx" in plan, f"{moment}:\n{plan}"
                for unwanted in ("Seq Scan", "Bitmap", "Sort", "Hash", "runs_task_idx"):
                    assert unwanted not in plan, f"{moment}:\n{plan}"

        # and the claim itself takes exactly the queued runs
        args = (["noop"], None, 100, uuid.uuid4(), 60.0, None, "{}", ["1"], True)
        claimed = await connection.fetch(RUN_SQL["claim"], *args)
        assert len([row for row in claimed if row["id"] is not None]) == 5
    finally:
        await connection.close()


async def sequence_of_ids(connection: asyncpg.Connection, function: str, count: int) -> list:
    """``count`` ids made one after another by ``function()`` in one session, in that order."""
    await connection.execute(
        f"""
        CREATE OR REPLACE FUNCTION pg_temp.id_sequence(n int) RETURNS uuid[]
        LANGUAGE plpgsql AS $$
        DECLARE made uuid[] := '{{}}';
        BEGIN
            FOR i IN 1..n LOOP made := made || {function}(); END LOOP;
            RETURN made;
        END $$
        """
    )
    return list(await connection.fetchval("SELECT pg_temp.id_sequence($1)", count))


async def test_run_ids_sort_by_creation(database: str) -> None:
    python_ids = [new_run_id() for _ in range(5000)]
    assert python_ids == sorted(python_ids)
    assert all(i.version == 7 for i in python_ids)

    connection = await asyncpg.connect(database)
    try:
        sql_ids = await sequence_of_ids(connection, "taskd.new_run_id", 2000)
        one_by_one = [await connection.fetchval("SELECT taskd.new_run_id()") for _ in range(200)]
        # a run's id and its creation order agree across producers, a millisecond apart
        mixed = []
        for _ in range(5):
            mixed.append(new_run_id())
            await anyio.sleep(0.002)
            mixed.append(await connection.fetchval("SELECT taskd.new_run_id()"))
            await anyio.sleep(0.002)
    finally:
        await connection.close()
    assert sql_ids == sorted(sql_ids)
    assert one_by_one == sorted(one_by_one)
    assert mixed == sorted(mixed)
    assert all(i.version == 7 for i in sql_ids)


async def test_run_ids_sort_by_creation_on_servers_without_uuidv7(database: str) -> None:
    """PostgreSQL before 18 has no uuidv7(): the migration installs its own body instead.

    Runs enqueued one after another (a loop calling taskd.trigger, several runs in one
    transaction) must still sort, and be claimed FIFO, in creation order.
    """
    migration = shipped_migrations()[0].sql
    fallback = re.search(
        r"CREATE FUNCTION taskd\.new_run_id\(\)(.*?\$\$.*?\$\$)\s*;", migration, re.DOTALL
    )
    assert fallback is not None, "the first migration defines taskd.new_run_id()"
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(f"CREATE FUNCTION pg_temp.fallback_run_id(){fallback.group(1)}")
        ids = await sequence_of_ids(connection, "pg_temp.fallback_run_id", 2000)
    finally:
        await connection.close()
    assert all(i.version == 7 for i in ids)
    inversions = sum(1 for a, b in itertools.pairwise(ids) if a > b)
    assert inversions == 0, f"{inversions} of {len(ids) - 1} consecutive ids out of order"

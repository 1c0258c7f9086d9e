"""Upgrading to migration 0011 with runs suspended on wait tokens by the previous version.

0011 wakes a waiting run only for a token it awaits (a flag set by wait.for_token). Runs that
the previous version had already suspended in for_token must count as awaiting their pending
tokens, or completing one would leave its run asleep until the token's timeout.
"""

from __future__ import annotations

from taskd.store.database import connect
from taskd.store.migrations import apply_migrations, shipped_migrations
from tests.support.runs import insert_run, sql


async def test_a_run_suspended_on_a_token_before_the_upgrade_wakes_when_it_is_completed(
    empty_database: str,
) -> None:
    connection = await connect(empty_database)
    try:
        # the schema before 0011, with a run suspended on a token for an hour
        await connection.execute("CREATE SCHEMA taskd")
        before = [m for m in shipped_migrations() if m.version < 11]
        for migration in before:
            await connection.execute(migration.sql)
        await connection.execute(
            "CREATE TABLE taskd.migrations (version int PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in before:
            await connection.execute(
                "INSERT INTO taskd.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        run_id = await insert_run(
            connection, task_id="t", status="waiting", run_at=sql("now() + interval '1 hour'")
        )
        token_id = await connection.fetchval(
            "INSERT INTO taskd.wait_tokens (id, run_id, expires_at)"
            " VALUES (taskd.new_run_id(), $1, now() + interval '1 hour') RETURNING id",
            run_id,
        )

        applied = await apply_migrations(connection)
        assert 11 in [m.version for m in applied]

        await connection.execute("SELECT taskd.complete_token($1, '\"yes\"')", token_id)
        row = await connection.fetchrow(
            "SELECT status, run_at <= now() AS due FROM taskd.runs WHERE id = $1", run_id
        )
        assert (row["status"], row["due"]) == ("queued", True), dict(row)
    finally:
        await connection.close()

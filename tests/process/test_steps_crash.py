"""A SIGKILLed daemon in the middle of a five-step run: after a restart, the recorded steps
are not called again and the run completes (real `taskd run` subprocesses)."""

from __future__ import annotations

import asyncpg

from taskd import Client, RunStatus
from tests.support.daemon_process import daemons
from tests.support.tasks.crash import CREATE_STEP_TABLES
from tests.support.waiting import wait_for, wait_for_run


async def test_a_crash_between_steps_3_and_4_does_not_redo_steps_1_to_3(
    database: str, client: Client
) -> None:
    db = await asyncpg.connect(database)
    try:
        await db.execute(CREATE_STEP_TABLES)
        async with daemons() as group:
            first = await group.start(database)
            await first.ready()
            run_id = await client.trigger("crash.steps", {})

            async def three_recorded() -> bool:
                recorded = await db.fetchval(
                    "SELECT count(*) FROM taskd.steps WHERE run_id = $1", run_id
                )
                return bool(recorded == 3)

            await wait_for(three_recorded)  # step 4 is now waiting at its gate
            await first.kill()
            await db.execute("INSERT INTO step_gate VALUES (true)")
            second = await group.start(database)
            await second.ready()
            run = await wait_for_run(client, run_id, timeout=20)
    finally:
        effects = await db.fetch("SELECT step, pid FROM step_effects ORDER BY step")
        await db.close()
    assert run.status is RunStatus.COMPLETED, run
    assert run.output == [10, 20, 30, 40, 50]
    # every step's function ran exactly once: 1-3 in the killed daemon, 4-5 after the restart
    assert [row["step"] for row in effects] == [1, 2, 3, 4, 5]
    assert {row["pid"] for row in effects[:3]} == {first.pid}
    assert {row["pid"] for row in effects[3:]} == {second.pid}
    assert [(s.name, s.run_attempt) for s in run.steps] == [
        ("step-1", 1),
        ("step-2", 1),
        ("step-3", 1),
        ("step-4", 2),
        ("step-5", 2),
    ]
    assert [a.outcome.value for a in run.attempts] == ["lost", "completed"]

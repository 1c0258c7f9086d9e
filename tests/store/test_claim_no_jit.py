"""The claim never JIT-compiles its statements.

claim_runs switches plan nodes off (enable_seqscan = off and the like) to leave one ordered
index scan per statement; a switched-off node costs 10^10, above any `jit_above_cost`, so on a
server built with LLVM (Debian's PostgreSQL 15 here; 18's embedded wheel has no JIT) every claim
statement was compiled: a claim of 100 took 7.5-8.2 s instead of 8-48 ms (bench/throughput.py's
profiled drain found it). The function carries `jit = off`, which wins over the session's and
the server's settings while it runs.
"""

from __future__ import annotations

import uuid

import asyncpg

from tests.support.runs import insert_runs


async def test_the_claim_function_turns_jit_off_whatever_the_session_says(
    db: asyncpg.Connection,
) -> None:
    config = await db.fetchval(
        "SELECT proconfig FROM pg_proc WHERE proname = 'claim_runs'"
        " AND pronamespace = 'taskd'::regnamespace"
    )
    assert "jit=off" in config
    # a session that asks for JIT at any cost still claims, and the claim ran without it:
    # inside the function the setting is its own
    await insert_runs(db, 200, task_id="jit.task")
    await db.execute("SET jit = on; SET jit_above_cost = 0")
    await db.execute(
        "SELECT * FROM taskd.claim_runs(ARRAY['jit.task'], NULL, 100, $1, 30)", uuid.uuid4()
    )
    executing = "SELECT count(*) FROM taskd.runs WHERE status = 'executing'"
    assert await db.fetchval(executing) == 100
    assert await db.fetchval("SHOW jit") == "on"  # the session's own setting is untouched

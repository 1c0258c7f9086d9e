"""`taskd runs show` says which retry and max_duration a run was triggered with."""

from __future__ import annotations

import orjson

from taskd import Client
from tests.support.cli import one_line_failure, taskd


async def test_runs_show_prints_the_triggers_retry(client: Client, database: str) -> None:
    own = await client.trigger(
        "t", retry={"max_attempts": 5, "min_delay": "1s", "factor": 2}, max_duration="90s"
    )
    plain = await client.trigger("t")
    shown = await taskd(database, "runs", "show", str(own))
    as_json = await taskd(database, "runs", "show", str(own), "--json")
    plain_shown = await taskd(database, "runs", "show", str(plain))
    assert shown.code == 0, shown
    assert "attempt 0 of 5" in shown.out
    assert "retry     min_delay 1s, factor 2 (the trigger's; the rest: the task's)" in shown.out
    assert "duration  at most 90s per attempt (the trigger's)" in shown.out
    run = orjson.loads(as_json.out)
    assert run["retry"] == {"min_delay": 1.0, "factor": 2.0} and run["max_duration"] == 90.0
    assert plain_shown.code == 0 and "retry " not in plain_shown.out
    assert "duration " not in plain_shown.out


async def test_taskd_trigger_takes_a_retry_and_a_max_duration(
    client: Client, database: str
) -> None:
    async with client.pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO taskd.tasks (id, queue, max_attempts) VALUES ('t', 'default', 3)"
        )
    given = await taskd(
        database, "trigger", "t", "--retry", '{"max_attempts": 6, "factor": 3}',
        "--max-duration", "5m",
    )  # fmt: skip
    bad_json = await taskd(database, "trigger", "t", "--retry", "{max_attempts: 6}")
    bad_field = await taskd(database, "trigger", "t", "--retry", '{"factor": 0}')
    bad_duration = await taskd(database, "trigger", "t", "--max-duration", "0")
    assert given.code == 0, given
    run = await client.get_run(given.out.strip())
    assert run.max_attempts == 6 and run.retry == {"factor": 3.0} and run.max_duration == 300
    assert not one_line_failure(bad_json, "--retry is not valid JSON", code=2)
    assert not one_line_failure(bad_field, "--retry: retry.factor must be", code=2)
    assert not one_line_failure(bad_duration, "--max-duration must be positive", code=2)

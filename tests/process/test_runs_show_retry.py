"""`taskd runs show` says which retry and max_duration a run was triggered with."""

from __future__ import annotations

import orjson

from taskd import Client
from tests.support.cli import taskd


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

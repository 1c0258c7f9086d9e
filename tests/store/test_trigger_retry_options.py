"""A trigger's retry and max_duration options, as every producer writes them: stored on the run
normalised (seconds, the attempt limit in max_attempts), and bad ones refused with one line
naming the option, before anything is enqueued."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from taskd import Client, Retry


async def sql_trigger(db: asyncpg.Connection, options: dict[str, Any]) -> asyncpg.Record:
    run_id = await db.fetchval(
        "SELECT taskd.trigger('t', 'null', $1::jsonb)", orjson.dumps(options).decode()
    )
    row = await db.fetchrow(
        "SELECT max_attempts, retry::text, max_duration FROM taskd.runs WHERE id = $1", run_id
    )
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("options", "max_attempts", "retry", "max_duration"),
    [
        ({"retry": {"max_attempts": 5, "min_delay": "1s", "factor": 2}}, 5,
         {"min_delay": 1.0, "factor": 2.0}, None),
        ({"retry": {"min_delay": 0.5, "max_delay": "1 hour", "jitter": False}}, None,
         {"min_delay": 0.5, "max_delay": 3600.0, "jitter": False}, None),
        ({"max_attempts": 3, "retry": {"max_attempts": 3}}, 3, None, None),
        ({"retry": {"min_delay": "500ms", "max_delay": "1h30m"}}, None,
         {"min_delay": 0.5, "max_delay": 5400.0}, None),
        ({"retry": {}}, None, None, None),
        ({"retry": None, "max_duration": "5m"}, None, None, 300.0),
        ({"max_duration": 1.5}, None, None, 1.5),
    ],
)  # fmt: skip
async def test_sql_options_are_stored_normalised(
    db: asyncpg.Connection,
    options: dict[str, Any],
    max_attempts: int | None,
    retry: dict[str, Any] | None,
    max_duration: float | None,
) -> None:
    row = await sql_trigger(db, options)
    assert row["max_attempts"] == max_attempts
    assert (orjson.loads(row["retry"]) if row["retry"] else None) == retry
    assert row["max_duration"] == max_duration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": [1]}, "retry must be a JSON object"),
        ({"retry": {"backoff": 2}}, "unknown retry field(s): backoff (known: max_attempts"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts must be a whole number of at least 1"),
        ({"retry": {"max_attempts": 2.5}}, "retry.max_attempts must be a whole number"),
        ({"retry": {"min_delay": "soon"}}, 'retry.min_delay must be seconds or an interval'),
        ({"retry": {"min_delay": -1}}, "retry.min_delay must be at least 0"),
        ({"retry": {"min_delay": 10, "max_delay": 5}},
         "retry.min_delay (10s) must not exceed retry.max_delay (5s)"),
        ({"retry": {"factor": 0.5}}, "retry.factor must be a number of at least 1"),
        ({"retry": {"jitter": "yes"}}, "retry.jitter must be true or false"),
        ({"max_attempts": 2, "retry": {"max_attempts": 3}},
         "max_attempts (2) and retry.max_attempts (3) differ"),
        ({"max_duration": 0}, "max_duration must be positive"),
        ({"max_duration": "forever"}, "max_duration must be seconds or an interval"),
    ],
)  # fmt: skip
async def test_bad_sql_options_are_refused_with_one_line(
    db: asyncpg.Connection, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError) as caught:
        await db.fetchval(
            "SELECT taskd.trigger('t', 'null', $1::jsonb)", orjson.dumps(options).decode()
        )
    text = str(caught.value)
    assert text.startswith("taskd.trigger: ") and message in text, text
    assert "\n" not in text
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 0


async def test_python_options_are_stored_as_sql_stores_them(
    client: Client, db: asyncpg.Connection
) -> None:
    plain = await client.trigger("t", retry={"max_attempts": 5, "min_delay": "1s", "factor": 2})
    keyed = await client.trigger(
        "t",
        retry={"max_attempts": 5, "min_delay": "1s", "factor": 2},
        idempotency_key="k",  # through taskd.trigger
    )
    whole = await client.trigger("t", retry=Retry(max_attempts=2, jitter=False), max_duration=9)
    rows = {
        row["id"]: row
        for row in await db.fetch(
            "SELECT id, max_attempts, retry::text, max_duration FROM taskd.runs"
        )
    }
    for run_id in (plain, keyed):
        assert rows[run_id]["max_attempts"] == 5
        assert orjson.loads(rows[run_id]["retry"]) == {"min_delay": 1.0, "factor": 2.0}
    assert rows[whole]["max_attempts"] == 2 and rows[whole]["max_duration"] == 9.0
    assert orjson.loads(rows[whole]["retry"]) == {
        "min_delay": 1.0,
        "max_delay": 60.0,
        "factor": 2.0,
        "jitter": False,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": "fast"}, "retry must be a Retry(...) or a dict"),
        ({"retry": {"backoff": 2}}, "unknown retry field(s): backoff (known: max_attempts"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts must be a whole number of at least 1"),
        ({"retry": {"min_delay": "soon"}}, "retry.min_delay: not a duration: 'soon'"),
        ({"retry": {"min_delay": 10, "max_delay": 5}},
         "retry.min_delay (10s) must not exceed retry.max_delay (5s)"),
        ({"retry": {"factor": 0.5}}, "retry.factor must be a number of at least 1"),
        ({"retry": {"factor": 10**400}}, "retry.factor must be a number of at least 1"),
        ({"retry": {"jitter": "yes"}}, "retry.jitter must be True or False"),
        ({"max_attempts": 2, "retry": {"max_attempts": 3}},
         "max_attempts (2) and retry.max_attempts (3) differ"),
        ({"max_duration": 0}, "max_duration must be positive and at most 100 years"),
        ({"max_duration": "forever"}, "max_duration: not a duration"),
    ],
)  # fmt: skip
async def test_bad_python_options_are_refused_with_one_line(
    client: Client, db: asyncpg.Connection, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        await client.trigger("t", **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert await db.fetchval("SELECT count(*) FROM taskd.runs") == 0

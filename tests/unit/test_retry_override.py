"""A trigger's retry over the task's: the fields it gives replace the task's, the rest stay;
when its min_delay passes the task's max_delay (or its max_delay the task's min_delay), the
field the trigger gave wins."""

from __future__ import annotations

from taskd import Retry
from taskd.sdk.retry import retry_override

TASKS = Retry(max_attempts=3, min_delay=1, max_delay=60, factor=2, jitter=True)


def test_no_fields_leave_the_tasks_policy() -> None:
    assert TASKS.overridden(None) is TASKS
    assert TASKS.overridden({}) is TASKS


def test_the_fields_given_replace_the_tasks() -> None:
    fields = retry_override({"min_delay": "2s", "factor": 3, "jitter": False})
    assert TASKS.overridden(fields) == Retry(
        max_attempts=3, min_delay=2, max_delay=60, factor=3, jitter=False
    )
    assert TASKS.overridden(fields).delay_after(3) == 18


def test_a_min_delay_past_the_tasks_max_delay_raises_it() -> None:
    assert TASKS.overridden({"min_delay": 600.0}) == Retry(
        max_attempts=3, min_delay=600, max_delay=600, factor=2, jitter=True
    )


def test_a_max_delay_under_the_tasks_min_delay_lowers_it() -> None:
    slow = Retry(min_delay=30, max_delay=300)
    assert slow.overridden({"max_delay": 5.0}).min_delay == 5


def test_a_retry_object_is_every_field() -> None:
    assert retry_override(Retry(max_attempts=2)) == {
        "max_attempts": 2,
        "min_delay": 1.0,
        "max_delay": 60.0,
        "factor": 2.0,
        "jitter": True,
    }

"""`--until-empty` and `--queue` on both daemon commands (`taskd run`, `taskd dev`), and the
burst's tally of outcomes that decides its exit code."""

from __future__ import annotations

import uuid

import pytest

from taskd.cli import _parser
from taskd.models import AttemptOutcome, Outcome, RunStatus
from taskd.worker.burst import Burst


@pytest.mark.parametrize("command", ["run", "dev"])
def test_both_daemon_commands_take_until_empty_and_queues(command: str) -> None:
    args = _parser().parse_args([command, "--until-empty", "--queue", "a", "--queue", "b"])
    assert (args.until_empty, args.queue) == (True, ["a", "b"])
    plain = _parser().parse_args([command])
    assert (plain.until_empty, plain.queue) == (False, None)


def outcome(run_id: uuid.UUID, status: RunStatus) -> Outcome:
    return Outcome(run_id, 1, status, AttemptOutcome.COMPLETED)


def test_a_run_retried_and_then_completed_within_the_burst_is_not_a_failure() -> None:
    burst = Burst(None, [], None, None, None)  # type: ignore[arg-type]  # no database needed
    flaky, later, broken = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    retried = [outcome(flaky, RunStatus.QUEUED), outcome(later, RunStatus.QUEUED)]
    burst.written(retried, {o.run_id: "queued" for o in retried})
    assert burst.runs_failed  # two runs left to retry, so far
    ended = [outcome(flaky, RunStatus.COMPLETED), outcome(broken, RunStatus.COMPLETED)]
    # the database says what became of each: broken was canceled meanwhile
    burst.written(ended, {flaky: "completed", broken: "canceled"})
    assert (burst.completed, burst.canceled, burst.failed, burst.retrying) == (1, 1, 0, 1)
    assert burst.runs_failed  # `later` is still left to retry
    burst.written([outcome(later, RunStatus.FAILED)], {later: "failed"})
    assert (burst.failed, burst.retrying, burst.runs_failed) == (1, 0, True)

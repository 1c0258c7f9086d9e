"""The run's state machine: every status change a run can make, and the room that makes it.

The writes themselves are SQL (daemon/taskd/store/*.sql and the functions of the schema),
each a compare-and-set on the status it leaves; this table is what they may do, in one
place. tests/daemon/test_run_states.py drives runs through a daemon and checks every status change
the database saw against it. ``describe()`` gives it as text (the README's).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from taskd.models import RunStatus


class Room(enum.StrEnum):
    """Who moves a run: a chore of the daemon, or a caller of the client or of SQL."""

    PRODUCER = "producer"
    CLAIMER = "claimer"
    COMPLETER = "completer"
    RELEASER = "releaser"
    RESCUER = "rescuer"
    WAKER = "waker"
    EXPIRER = "expirer"
    UNKNOWN_TASK_FAILER = "unknown-task failer"
    CANCELER = "canceler"


@dataclass(frozen=True, slots=True)
class Transition:
    """``source`` None: the run is created in ``target``."""

    source: RunStatus | None
    target: RunStatus
    room: Room
    verbs: tuple[str, ...]
    when: str


Q, X, W = RunStatus.QUEUED, RunStatus.EXECUTING, RunStatus.WAITING
C, F, K, E = RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED

_COMPLETE = ("runs.complete_many",)
_RELEASE = ("runs.release_many",)
_RESCUE = ("runs.rescue",)

TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        None,
        Q,
        Room.PRODUCER,
        (
            "runs.insert_many",
            "runs.trigger (taskd.trigger)",
            "events.send (taskd.send_event)",
            "schedules.fire",
            "schedules.trigger (taskd.trigger_schedule)",
            "waits.create_children",
            "runs.replay",
        ),
        "a trigger, an event, a schedule's fire time (or a fire on demand), a parent's "
        "trigger_and_wait, a replay "
        "(a new run copying a finished one; the finished run does not change)",
    ),
    Transition(Q, X, Room.CLAIMER, ("runs.claim (taskd.claim_runs)",), "due, within limits"),
    Transition(X, C, Room.COMPLETER, _COMPLETE, "the attempt returned"),
    Transition(X, F, Room.COMPLETER, _COMPLETE, "it raised, its attempts used up"),
    Transition(X, Q, Room.COMPLETER, _COMPLETE, "it raised: a retry"),
    Transition(X, W, Room.COMPLETER, _COMPLETE, "it suspended in a wait"),
    Transition(
        X, K, Room.COMPLETER, _COMPLETE, "a cancel requested during the attempt (or its retry)"
    ),
    Transition(X, Q, Room.RELEASER, _RELEASE, "drain or shutdown: the attempt is given back"),
    Transition(X, K, Room.RELEASER, _RELEASE, "drain or shutdown of a run asked to cancel"),
    Transition(X, Q, Room.RESCUER, _RESCUE, "lease expired or worker gone: the attempt counts"),
    Transition(X, F, Room.RESCUER, _RESCUE, "lost, its attempts used up"),
    Transition(X, K, Room.RESCUER, _RESCUE, "lost, a cancel requested"),
    Transition(
        W,
        Q,
        Room.WAKER,
        (
            "waits.wake_due",
            "waits.wake_completed_tokens",
            "waits.wake_parents",
            "waits.wake_missed_parents",
            "tokens.complete (taskd.complete_token)",
        ),
        "its timer is due, its token completed, or its last child finished",
    ),
    Transition(Q, E, Room.EXPIRER, ("runs.expire",), "not started within its ttl"),
    Transition(
        Q, F, Room.UNKNOWN_TASK_FAILER, ("runs.fail_unknown",), "no live worker serves its task"
    ),
    Transition(
        Q,
        K,
        Room.CANCELER,
        ("runs.cancel (taskd.cancel)",),
        "not started yet (an executing run is only asked: see the completer's, the "
        "releaser's and the rescuer's canceled)",
    ),
    Transition(W, K, Room.CANCELER, ("runs.cancel (taskd.cancel)",), "while waiting"),
    Transition(
        W,
        Q,
        Room.CANCELER,
        ("runs.cancel (taskd.cancel)",),
        "the cancel of its last unfinished child resumes a waiting parent",
    ),
)

_ROOMS: dict[tuple[RunStatus | None, RunStatus], frozenset[Room]] = {}
for _t in TRANSITIONS:
    _ROOMS[_t.source, _t.target] = _ROOMS.get((_t.source, _t.target), frozenset()) | {_t.room}

FINAL = frozenset(s for s in RunStatus if not any(t.source is s for t in TRANSITIONS))
"""States no room moves a run out of (models.TERMINAL_STATES says the same)."""


def allowed(source: RunStatus | None, target: RunStatus, room: Room | None = None) -> bool:
    """Whether a run may go from ``source`` to ``target`` (by ``room``, when given)."""
    rooms = _ROOMS.get((source, target), frozenset())
    return bool(rooms) if room is None else room in rooms


def check(room: Room, source: RunStatus | None, target: RunStatus) -> None:
    """ValueError unless ``room`` may move a run from ``source`` to ``target``."""
    if not allowed(source, target, room):
        raise ValueError(f"the {room} cannot move a run from {source or 'nothing'} to {target}")


def exits(state: RunStatus) -> list[Transition]:
    """The ways out of ``state``."""
    return [t for t in TRANSITIONS if t.source is state]


def describe() -> str:
    """The table as text (the README's)."""
    width = max(len(f"{t.source or '(new)'} -> {t.target}") for t in TRANSITIONS)
    lines = []
    for t in TRANSITIONS:
        move = f"{t.source or '(new)'} -> {t.target}"
        lines.append(f"{move:<{width}}  {t.room:<19}  {', '.join(t.verbs)}: {t.when}")
    lines.append(f"final (no way out): {', '.join(sorted(FINAL))}")
    return "\n".join(lines)

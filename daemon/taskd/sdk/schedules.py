"""``@schedules.task``: a task fired by cron, and the payload every scheduled run receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from taskd.sdk.context import Context
from taskd.sdk.cron import cron_trigger
from taskd.sdk.task import TaskDefinition, task

CatchUp = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "all", "none")

P = TypeVar("P")
R = TypeVar("R")


class ScheduledRun(BaseModel):
    """The payload of a run fired by a schedule (annotate your task's payload with it)."""

    timestamp: datetime
    """The fire time this run is for (timezone-aware)."""
    last_timestamp: datetime | None = None
    """The schedule's previous fire time that got a run; None on the first."""
    schedule_id: str
    """The schedule that fired it (the task id for a schedule declared in code)."""
    timezone: str
    """The schedule's timezone (``timestamp`` is given in it)."""
    external_id: str | None = None
    """The schedule's ``external_id`` (a user id...)."""
    payload: Any = None
    """The extra payload given when the schedule was created through the API."""
    manual: bool = False
    """True for a run fired on demand (``client.trigger_schedule``, ``taskd.trigger_schedule``,
    ``taskd schedules trigger``); ``timestamp`` is then the moment it was fired."""


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = "latest"

    def __post_init__(self) -> None:
        cron_trigger(self.cron, self.timezone)  # validates, with a clear message
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ValueError(f"catch_up must be one of {CATCH_UP_POLICIES}, not {self.catch_up!r}")


class Schedules:
    """``schedules.task(id=..., cron="0 9 * * *", timezone="Europe/Paris")``."""

    def task(
        self,
        *,
        id: str,
        cron: str,
        timezone: str = "UTC",
        catch_up: CatchUp = "latest",
        **options: Any,
    ) -> Callable[[Callable[[P, Context], Awaitable[R]]], TaskDefinition[P, R]]:
        """Declare a task fired by ``cron`` in ``timezone`` (UTC by default).

        The schedule's id is the task's id; removing it from the code deactivates it when a
        daemon starts. ``catch_up`` decides what happens to fire times missed (more than 60 s
        late: every daemon was down, or the schedule was paused): ``latest`` (one run, for the
        most recent), ``all`` (one per missed time, the latest 100), ``none``; a fire time at
        most 60 s late always fires. A cron that never fires (``0 0 30 2 *``) is refused here
        with a ValueError, as a bad cron or timezone is. Other keywords are ``@task``'s.
        """
        spec = ScheduleSpec(cron, timezone, catch_up)
        make = task(id=id, **options)

        def decorate(fn: Callable[[P, Context], Awaitable[R]]) -> TaskDefinition[P, R]:
            definition = make(fn)
            definition.schedule = spec
            return definition

        return decorate


schedules = Schedules()

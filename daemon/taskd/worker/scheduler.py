"""Fires cron schedules: APScheduler's triggers compute the times, the database decides.

Every daemon runs this loop. At each pass it reads the active schedules (with how far each
has fired), computes the fire times due since, applies the schedule's catch-up policy, and
inserts one run per (schedule, fire time) with ON CONFLICT DO NOTHING: a time another daemon
fired first inserts nothing. Then it sleeps until the next fire time of any schedule, or
until a schedule changes (NOTIFY taskd_schedules), or RELOAD_INTERVAL.

The cron math stays off the event loop's critical path whatever the number of schedules or how
long one was paused (PITFALLS 4): triggers are built once per (cron, timezone), each schedule's
next fire time is remembered until its row changes, so a tick costs a dictionary lookup per
schedule that is not due; catch-up computes only what its policy fires, in a worker thread;
and the loop is given back every few milliseconds.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel
import orjson

from taskd import clock
from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.ids import new_run_id
from taskd.logs import log_event
from taskd.sdk.cron import Due, cached_trigger, due_fire_times, next_fire_after
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store

if TYPE_CHECKING:
    from asyncpg import Record as Row

    from taskd.sdk.cron import CronTrigger  # APScheduler loads at the first cron computed
else:
    Row = Any

log = logging.getLogger("taskd.scheduler")

SCHEDULES_CHANNEL = "taskd_schedules"
RELOAD_INTERVAL = 30.0
CATCH_UP_ALL_LIMIT = 100
# A fire time this late is "missed" (every daemon was down), and its schedule's catch-up
# policy applies; later than a fire time but within this, it is simply fired late.
MISFIRE_GRACE = 60.0
# The longest the tick runs on the loop without giving it back.
YIELD_EVERY = 0.002


class Scheduler:
    def __init__(self, store: Store, changes: ChangeHub | None = None) -> None:
        self._store = store
        self._changes = changes or ChangeHub()
        self._changed = anyio.Event()
        self.fired = 0
        # schedule id -> ((cron, timezone, since), first fire time after since): valid while
        # the row's cron, timezone and last fired time stay the same
        self._next: dict[str, tuple[tuple[str, str, datetime], datetime | None]] = {}
        self._refused: dict[str, tuple[str, str]] = {}  # unusable crons, logged once each
        self._math = anyio.CapacityLimiter(1)  # catch-up math: one thread, not the loop

    def changed(self, _payload: str = "") -> None:
        """A schedule was created, changed or removed somewhere: look again now."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed = anyio.Event()
            try:
                next_at = await self.tick()
            except DB_ERRORS as exc:
                log.error("scheduler: %s; retrying", exc)
                next_at = None
                delay = 1.0
            else:
                now = clock.now()
                delay = RELOAD_INTERVAL
                if next_at is not None:
                    delay = min(delay, max(0.0, (next_at - now).total_seconds()))
            with anyio.move_on_after(delay):
                await self._changed.wait()

    async def tick(self, now: datetime | None = None) -> datetime | None:
        """Fire what is due at ``now``; return the next fire time of any active schedule."""
        now = now or clock.now()
        soonest: datetime | None = None
        schedules = await self._store.schedules.active()
        await anyio.lowlevel.checkpoint()  # reading many rows took a slice of the loop already
        slice_start = time.perf_counter()
        for schedule in schedules:
            if time.perf_counter() - slice_start > YIELD_EVERY:
                await anyio.lowlevel.checkpoint()
                slice_start = time.perf_counter()
            trigger = self._trigger(schedule)
            if trigger is None:
                continue
            since = schedule["last_fired_at"] or schedule["created_at"]
            key = (schedule["cron"], schedule["timezone"], since)
            known = self._next.get(schedule["id"])
            if known is not None and known[0] == key:
                first = known[1]
            else:
                first = next_fire_after(trigger, since)
                self._next[schedule["id"]] = (key, first)
            if first is None:
                continue
            if first > now:
                upcoming: datetime | None = first  # nothing in (since, now]: first is next
            else:
                await self._fire_due(schedule, trigger, since, first, now)
                upcoming = next_fire_after(trigger, now)
                slice_start = time.perf_counter()  # the inserts gave the loop back
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        if len(self._next) + len(self._refused) > len(schedules):  # deleted, paused ones
            active = {schedule["id"] for schedule in schedules}
            self._next = {k: v for k, v in self._next.items() if k in active}
            self._refused = {k: v for k, v in self._refused.items() if k in active}
        return soonest

    def _trigger(self, schedule: Row) -> CronTrigger | None:
        spec = (schedule["cron"], schedule["timezone"])
        try:
            return cached_trigger(*spec)
        except ValueError as exc:
            # Written before taskd refused it (or by hand): say so once, not at every tick.
            if self._refused.get(schedule["id"]) != spec:
                self._refused[schedule["id"]] = spec
                log_event(log, logging.ERROR, f"schedule skipped: {exc}", schedule=schedule["id"])
            return None

    async def _fire_due(
        self,
        schedule: Row,
        trigger: CronTrigger,
        since: datetime,
        first: datetime,
        now: datetime,
    ) -> None:
        policy = schedule["catch_up"]
        grace = timedelta(seconds=MISFIRE_GRACE)
        if (now - first) <= grace:  # the ordinary case: a few fire times, none missed
            due = due_fire_times(
                trigger, since, now, policy, grace=grace, limit=CATCH_UP_ALL_LIMIT, first=first
            )
        else:  # a paused schedule or a down fleet: bounded, but up to some ms: not the loop
            due = await anyio.to_thread.run_sync(
                lambda: due_fire_times(
                    trigger, since, now, policy, grace=grace, limit=CATCH_UP_ALL_LIMIT, first=first
                ),
                limiter=self._math,
            )
        if due.first_missed is not None and due.last_missed is not None:
            log_event(
                log,
                logging.WARNING,
                "schedule missed fire times while no daemon fired it; "
                f"catch_up={policy}: {_catch_up_effect(policy, due)}",
                schedule=schedule["id"],
                since=due.first_missed.isoformat(),
                until=due.last_missed.isoformat(),
            )
            if policy == "none":
                await self._store.schedules.skip_to(schedule["id"], due.last_missed)
        previous = schedule["last_fired_at"]
        zone = ZoneInfo(schedule["timezone"])
        for fire_time in due.times:
            payload = {
                "timestamp": fire_time.astimezone(zone).isoformat(),
                "last_timestamp": previous.astimezone(zone).isoformat() if previous else None,
                "schedule_id": schedule["id"],
                "timezone": schedule["timezone"],
                "external_id": schedule["external_id"],
                "payload": schedule["payload"],
            }
            run_id = new_run_id()
            if await self._store.schedules.fire(
                schedule["id"], fire_time, run_id, orjson.dumps(payload).decode()
            ):
                self.fired += 1
                if self._changes.active:
                    self._changes.publish(
                        RunChange(ChangeKind.CREATED, run_id, schedule["task_id"], "queued")
                    )
                log_event(
                    log,
                    logging.INFO,
                    "schedule fired",
                    schedule=schedule["id"],
                    task=schedule["task_id"],
                    scheduled_for=fire_time.isoformat(),
                )
            previous = fire_time


def _catch_up_effect(policy: str, due: Due) -> str:
    if policy == "all":
        return f"firing the latest {len(due.missed)}"
    if policy == "latest":
        return "firing the latest"
    return "firing none"

"""Fires cron schedules: APScheduler's triggers compute the times, the database decides.

Every daemon runs this loop. At each wake-up it reads the active schedules (with how far each
has fired), computes the fire times due since, applies the schedule's catch-up policy, and
inserts one run per (schedule, fire time) with ON CONFLICT DO NOTHING: a time another daemon
fired first inserts nothing. Then it sleeps until the next fire time of any schedule, or
until a schedule changes (NOTIFY taskd_schedules), or RELOAD_INTERVAL.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import orjson

from daemon.changes import ChangeHub, ChangeKind, RunChange
from daemon.ids import new_run_id
from daemon.logs import log_event
from daemon.sdk.cron import cron_trigger, fire_times_after, next_fire_after
from daemon.store.database import DB_ERRORS
from daemon.store.store import Store

log = logging.getLogger("taskd.scheduler")

SCHEDULES_CHANNEL = "taskd_schedules"
RELOAD_INTERVAL = 30.0
CATCH_UP_ALL_LIMIT = 100
# A fire time this late is "missed" (every daemon was down), and its schedule's catch-up
# policy applies; later than a fire time but within this, it is simply fired late.
MISFIRE_GRACE = 60.0


class Scheduler:
    def __init__(self, store: Store, changes: ChangeHub | None = None) -> None:
        self._store = store
        self._changes = changes or ChangeHub()
        self._changed = anyio.Event()
        self.fired = 0

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
                now = datetime.now(UTC)
                delay = RELOAD_INTERVAL
                if next_at is not None:
                    delay = min(delay, max(0.0, (next_at - now).total_seconds()))
            with anyio.move_on_after(delay):
                await self._changed.wait()

    async def tick(self, now: datetime | None = None) -> datetime | None:
        """Fire what is due at ``now``; return the next fire time of any active schedule."""
        now = now or datetime.now(UTC)
        soonest: datetime | None = None
        for schedule in await self._store.schedule_list(active=True):
            try:
                trigger = cron_trigger(schedule["cron"], schedule["timezone"])
            except ValueError as exc:
                log_event(log, logging.ERROR, f"schedule skipped: {exc}", schedule=schedule["id"])
                continue
            since = schedule["last_fired_at"] or schedule["created_at"]
            await self._fire_due(schedule, trigger, since, now)
            upcoming = next_fire_after(trigger, now)
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        return soonest

    async def _fire_due(
        self, schedule: dict[str, Any], trigger: Any, since: datetime, now: datetime
    ) -> None:
        due = fire_times_after(trigger, since, now, limit=CATCH_UP_ALL_LIMIT)
        if not due:
            return
        policy = schedule["catch_up"]
        missed = [t for t in due if (now - t).total_seconds() > MISFIRE_GRACE]
        if missed:
            log_event(
                log,
                logging.WARNING,
                f"schedule missed {len(missed)} fire time(s) while no daemon ran; "
                f"catch_up={policy}",
                schedule=schedule["id"],
                since=missed[0].isoformat(),
            )
        if policy == "none":
            if missed:
                await self._store.schedule_skip_to(schedule["id"], missed[-1])
            due = [t for t in due if t not in missed][-1:]
        elif policy == "latest":
            due = due[-1:]
        previous = schedule["last_fired_at"]
        zone = ZoneInfo(schedule["timezone"])
        for fire_time in due:
            payload = {
                "timestamp": fire_time.astimezone(zone).isoformat(),
                "last_timestamp": previous.astimezone(zone).isoformat() if previous else None,
                "schedule_id": schedule["id"],
                "timezone": schedule["timezone"],
                "external_id": schedule["external_id"],
                "payload": schedule["payload"],
            }
            run_id = new_run_id()
            if await self._store.schedule_fire(
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

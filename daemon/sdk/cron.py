"""Cron math, by APScheduler's CronTrigger: the only module that imports APScheduler.

Cron strings have 5 fields (minute hour day month weekday, as crontab) or 6 (seconds first),
or a shorthand (@hourly, @daily, ...). Weekdays are crontab's: 0 and 7 are Sunday (APScheduler
3 counts 0 as Monday, so numbers are translated to names). DST follows APScheduler's rules:
a time in the spring-forward gap fires once, shifted by the gap (02:30 in Paris on the last
Sunday of March fires at 03:30 CEST), and a time in the autumn fall-back hour fires at both
of its occurrences (02:30 CEST, then 02:30 CET, an hour later).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NUMBER = re.compile(r"(?<![/\d])(\d+)")
_PROGRESS_STEPS = (
    timedelta(microseconds=1),
    timedelta(seconds=1),
    timedelta(minutes=1),
    timedelta(hours=1),
    timedelta(days=1),
)


def _weekdays(field: str) -> str:
    """Crontab weekday numbers (0-7, Sunday 0 or 7) as names; step values stay numbers."""

    def name(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number > 7:
            raise ValueError(f"weekday {number} is out of range 0-7")
        return _DAY_NAMES[number]

    return _DAY_NUMBER.sub(name, field)


def cron_trigger(cron: str, timezone: str = "UTC") -> CronTrigger:
    """A CronTrigger for ``cron`` in ``timezone``; ValueError with a clear message."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {timezone!r} (use an IANA name: Europe/Paris)"
        ) from None
    text = SHORTHANDS.get(cron.strip().lower(), cron.strip())
    fields = text.split()
    if len(fields) == 5:
        second = "0"
        minute, hour, day, month, weekday = fields
    elif len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
    else:
        raise ValueError(
            f"cron {cron!r} needs 5 fields (minute hour day month weekday), 6 (seconds first), "
            "or a shorthand such as @daily"
        )
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekday),
            timezone=zone,
        )
    except ValueError as exc:
        raise ValueError(f"cron {cron!r}: {exc}") from None


def fire_times_after(
    trigger: CronTrigger, after: datetime, until: datetime, limit: int = 1000
) -> list[datetime]:
    """Fire times t with after < t <= until, oldest first, at most ``limit`` (the newest)."""
    times: list[datetime] = []
    current = after
    while True:
        nxt = next_fire_after(trigger, current)
        if nxt is None or nxt > until:
            return times[-limit:]
        times.append(nxt)
        if len(times) > 2 * limit:
            del times[:limit]
        current = nxt


def next_fire_after(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``.

    APScheduler 3.11 can answer the same time again and again at the autumn fall-back
    (PITFALLS 15: a scheduler looping on the repeated hour): when it makes no progress, ask
    again from a little later, then later still.
    """
    # In UTC: APScheduler's answer at a DST change depends on the tzinfo of what it is given.
    after = after.astimezone(UTC)
    for skip in _PROGRESS_STEPS:
        result: datetime | None = trigger.get_next_fire_time(None, after + skip)
        if result is None or result > after:
            return result.astimezone(UTC) if result is not None else None
    return None

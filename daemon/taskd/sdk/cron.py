"""Cron math, by APScheduler's CronTrigger: the only module that imports APScheduler.

Cron strings have 5 fields (minute hour day month weekday, as crontab) or 6 (seconds first),
or a shorthand (@hourly, @daily, ...). Weekdays are crontab's: 0 and 7 are Sunday (APScheduler
3 counts 0 as Monday, so numbers are translated to names). DST follows APScheduler's rules:
a time in the spring-forward gap fires once, shifted by the gap (02:30 in Paris on the last
Sunday of March fires at 03:30 CEST), and a time in the autumn fall-back hour fires at both
of its occurrences (02:30 CEST, then 02:30 CET, an hour later).

APScheduler 3 only walks forward, one fire time per call (about 10-35 µs). Nothing here walks
every fire time of a long range: the last fire time before a moment is found by bisection, and
the newest N by starting the walk close enough to the end (PITFALLS 4: a blocked loop loses its
leases). A cron that can never fire (``0 0 30 2 *``) is refused when it is built, after a search
bounded to one Gregorian cycle instead of APScheduler's walk to the year 9999.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    # re-exported: this module is taskd's only import of APScheduler
    from apscheduler.triggers.cron import CronTrigger as CronTrigger


def __getattr__(name: str) -> Any:
    # APScheduler (with its own import of package metadata) loads at the first cron computed:
    # a daemon, a client or a test without schedules never pays for it
    if name == "CronTrigger":
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
# The Gregorian calendar repeats every 400 years (146,097 days, a whole number of weeks): a
# cron with no fire time within that (plus a year of margin) has none at all.
_NEVER_HORIZON = timedelta(days=146_097 + 366)
_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)
_PROBE_STEPS = 16  # the first walk of fire_times_after: the ordinary case ends within it
TRIGGER_CACHE_SIZE = 16_384


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
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger(
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
    # Unbounded, APScheduler answers "never" only after stepping to the year 9999 (0.1-0.3 s).
    probe = copy.copy(trigger)
    probe.end_date = datetime.now(UTC) + _NEVER_HORIZON
    if probe.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(
            f"cron {cron!r} never fires: no date matches its day, month and weekday fields"
        )
    return trigger


def cached_trigger(cron: str, timezone: str = "UTC") -> CronTrigger:
    """``cron_trigger``, built once per (cron, timezone): a scheduler with many schedules or
    an impossible cron pays the construction once. A CronTrigger is only read once built."""
    result = _cached(cron, timezone)
    if isinstance(result, ValueError):
        raise ValueError(str(result))
    return result


@functools.lru_cache(maxsize=TRIGGER_CACHE_SIZE)
def _cached(cron: str, timezone: str) -> CronTrigger | ValueError:
    try:
        return cron_trigger(cron, timezone)
    except ValueError as exc:
        return exc


_UPCOMING: dict[tuple[str, str], tuple[datetime, datetime | None]] = {}


def upcoming_fire(cron: str, timezone: str, now: datetime) -> datetime | None:
    """The first fire time after ``now``, remembered per (cron, timezone) until it passes: a
    listing of many schedules that share crons computes each once. ValueError for a cron
    ``cron_trigger`` refuses."""
    key = (cron, timezone)
    known = _UPCOMING.get(key)
    if known is not None and known[0] <= now and (known[1] is None or now < known[1]):
        return known[1]
    upcoming = next_fire_after(cached_trigger(cron, timezone), now)
    if len(_UPCOMING) >= TRIGGER_CACHE_SIZE:
        _UPCOMING.clear()
    _UPCOMING[key] = (now, upcoming)
    return upcoming


def fire_times_after(
    trigger: CronTrigger, after: datetime, until: datetime, limit: int = 1000
) -> list[datetime]:
    """Fire times t with after < t <= until, oldest first, at most ``limit`` (the newest).

    Costs a few times ``limit`` fire-time computations whatever the length of the range: when
    the walk from ``after`` is long, it starts again closer to ``until`` (galloping back from
    ``until``, then bisecting between a start with too many and one with too few).
    """
    if limit <= 0:
        return []
    times, reached = _walk(trigger, after, until, _PROBE_STEPS)
    if reached:
        return times[-limit:]
    crowded = after  # a start known to leave more than 4 * limit fire times up to `until`
    sparse = until  # one known to leave fewer than `limit`
    # about `limit` fire times at the density seen after `after`, plus a margin
    span = max((times[-1] - times[0]) * (limit / (len(times) - 1)) * 1.25, _SECOND)
    galloping = True
    while sparse - crowded >= _SECOND:
        if galloping:
            start = max(after, until - span)
            span *= 2
        else:
            start = crowded + (sparse - crowded) / 2
        times, reached = _walk(trigger, start, until, 4 * limit)
        if not reached:
            crowded = start
            galloping = False
        elif len(times) >= limit or start <= after:
            return times[-limit:]
        else:
            sparse = start
    # Fire times fall on whole seconds: less than a second between a start with more than
    # 4 * limit and one with fewer than `limit` cannot happen; walk as a last resort anyway.
    times, _ = _walk(trigger, crowded, until, 4 * limit)
    return times[-limit:]


def last_fire_at_or_before(
    trigger: CronTrigger, after: datetime, until: datetime
) -> datetime | None:
    """The newest fire time t with after < t <= until, by bisection (about 40 steps for a
    year of per-second fire times), or None."""
    times, reached = _walk(trigger, after, until, 8)
    if not times:
        return None
    low = times[-1]  # a fire time <= until; the answer is in [low, high]
    high = until
    while not reached and high - low >= _SECOND:
        middle = low + (high - low) / 2
        nxt = next_fire_after(trigger, middle)
        if nxt is not None and nxt <= until:
            low = nxt
        else:
            high = middle
    if not reached:  # (low, high] is under a second: at most one whole second left
        times, _ = _walk(trigger, low, until, 2)
        low = times[-1] if times else low
    return low


@dataclass(slots=True)
class Due:
    """What a schedule fires at one tick, its catch-up policy applied."""

    on_time: list[datetime] = field(default_factory=list)
    """Fire times at most ``grace`` late: always fired, whatever the policy."""
    missed: list[datetime] = field(default_factory=list)
    """Missed fire times (more than ``grace`` late) to fire: policy ``latest`` or ``all``."""
    first_missed: datetime | None = None
    last_missed: datetime | None = None
    """The newest missed time (``none`` moves the schedule past it without a run)."""

    @property
    def times(self) -> list[datetime]:
        return [*self.missed, *self.on_time]


def due_fire_times(
    trigger: CronTrigger,
    since: datetime,
    now: datetime,
    catch_up: str,
    *,
    grace: timedelta,
    limit: int,
    first: datetime | None = None,
) -> Due:
    """The fire times after ``since`` that are due at ``now``, computed at most as far as the
    policy fires: ``latest`` and ``none`` find only the newest missed time, ``all`` the
    newest ``limit``. ``first`` is ``next_fire_after(trigger, since)`` when already known."""
    due = Due()
    first = first if first is not None else next_fire_after(trigger, since)
    if first is None or first > now:
        return due
    cutoff = now - grace  # a fire time before it is missed
    # at most one fire time a second: a walk of grace + 2 steps reaches `now`
    due.on_time, _ = _walk(trigger, max(since, cutoff - _TICK), now, int(grace.total_seconds()) + 2)
    if first >= cutoff:
        return due
    due.first_missed = first
    if catch_up == "all":
        due.missed = fire_times_after(trigger, since, cutoff - _TICK, limit)
        due.last_missed = due.missed[-1] if due.missed else None
    else:
        due.last_missed = last_fire_at_or_before(trigger, since, cutoff - _TICK)
        if catch_up == "latest" and due.last_missed is not None:
            due.missed = [due.last_missed]
    return due


def _walk(
    trigger: CronTrigger, after: datetime, until: datetime, max_steps: int
) -> tuple[list[datetime], bool]:
    """Up to ``max_steps`` fire times in (after, until], oldest first, and whether the walk
    reached ``until`` (False: there are more)."""
    times: list[datetime] = []
    current = after
    for _ in range(max_steps):
        nxt = next_fire_after(trigger, current)
        if nxt is None or nxt > until:
            return times, True
        times.append(nxt)
        current = nxt
    nxt = next_fire_after(trigger, current)
    return times, nxt is None or nxt > until


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

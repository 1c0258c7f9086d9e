"""The queue sampler: once a minute, by one daemon of the fleet, the figures the console's charts
read (``GET /api/stats``): the depth of every queue (``taskd.queue_samples``) and the runs
started, completed and failed per task and queue in the minutes before (``taskd.run_minutes``).

Every daemon runs this loop: it looks when the daemon starts, then shortly after each minute
starts (a random delay of up to SPREAD seconds, so the daemons do not all look at once), one
statement each time, for the minute the database's clock is in (a daemon whose clock runs ahead
must not write a minute that is not over). The first daemon to look at a minute inserts its row in
``taskd.stats_minutes`` and writes it: one row per queue, the roll-up of the minutes since the
previous roll-up up to the one before this minute, and deletes what is older than two days; the
others find the minute's row there and write nothing (store/stats.sql says how). A minute in
which no daemon runs has no depth sample; its runs are rolled up by the next minute written (at
most a day back).
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime

import anyio

from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry

log = logging.getLogger("taskd.maintenance")

SAMPLE_INTERVAL = 60.0  # seconds: one sample per queue per minute
SPREAD = 5.0  # seconds after the minute's start within which each daemon looks


def minute_of(moment: datetime) -> datetime:
    """The start of ``moment``'s minute (UTC)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


class QueueSampler:
    def __init__(self, store: Store, *, telemetry: Telemetry | None = None) -> None:
        self._store = store
        self._telemetry = telemetry or Telemetry()

    async def run_once(self, now: datetime | None = None) -> int:
        """Write ``now``'s minute (by default the database's current minute: the daemons'
        clocks may disagree, the database's is one) unless a daemon did; how many queue samples
        written (0: the minute was written already, or there is no queue)."""
        moment = now or await self._store.stats.database_now()
        return await self._store.stats.sample_minute(minute_of(moment))

    async def run(self) -> None:
        """At once (a daemon starting writes the current minute if no daemon has), then once a
        minute, a few seconds after the minute starts, in a loop of its own."""
        while True:
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("sampling the queues' depth failed, next try in a minute: %s", exc)
            now = datetime.now(UTC).timestamp()
            next_minute = (now // SAMPLE_INTERVAL + 1) * SAMPLE_INTERVAL
            await anyio.sleep(next_minute - now + random.uniform(0.0, SPREAD))

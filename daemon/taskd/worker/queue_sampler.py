"""The queue sampler: once a minute, the depth of every queue recorded for the console's
charts (``taskd.queue_samples``, read by ``GET /api/stats``), by one daemon of the fleet.

Every daemon runs this loop; each wakes shortly after a minute starts (a random delay of up to
SPREAD seconds, so the daemons do not all look at once) and makes one statement: the first
daemon to look at the minute writes one row per queue (due, delayed, executing, the oldest due
run's age) and deletes the samples older than two days; the others find the minute written
and write nothing (store/stats.sql says how). A minute in which no daemon runs has no sample.
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
        """Sample the queues for ``now``'s minute unless a daemon did; how many rows written
        (0: the minute was written already, or there is no queue)."""
        return await self._store.stats.sample_queues(minute_of(now or datetime.now(UTC)))

    async def run(self) -> None:
        """Once a minute, in a loop of its own, a few seconds after the minute starts."""
        while True:
            now = datetime.now(UTC).timestamp()
            next_minute = (now // SAMPLE_INTERVAL + 1) * SAMPLE_INTERVAL
            await anyio.sleep(next_minute - now + random.uniform(0.0, SPREAD))
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("sampling the queues' depth failed, next try in a minute: %s", exc)

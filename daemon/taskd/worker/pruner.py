"""The pruner: rows past their retention (``[retention]``) are deleted, a small batch per
statement, until none is left.

Finished runs (with their attempts, steps and log lines), recorded events, expired idempotency
keys, done failure-hook rows, stopped workers, LLM admissions older than a day, records of
LLM calls (kept longer than runs: costs outlive the runs' history). Each batch is its own short
transaction that skips locked rows: the queue never waits on the pruner, and two daemons
pruning at once split the work.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from taskd import clock
from taskd.config import RetentionSettings
from taskd.ids import id_time
from taskd.logs import log_event
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry

log = logging.getLogger("taskd.maintenance")

# The share of its own time the run pruner spends in its statements, sleeping the rest: a day
# of runs past the retention at once (a retention shortened, daemons stopped for a day) is
# deleted beside the drain instead of taking a core of the database from it
# (bench/history.py measures both). Rates: README "Performance".
PACE = 0.1
# How far behind the cutoff (a share of the retention) the pruner may fall at that pace: a
# steady load beyond what it deletes at PACE makes it fall behind, and then it goes flat out.
CATCH_UP = 0.1
# The longest sleep between two batches at that pace (seconds).
MAX_PAUSE = 5.0


class Pruner:
    def __init__(
        self,
        store: Store,
        retention: RetentionSettings | None = None,
        *,
        telemetry: Telemetry | None = None,
        pace: float = PACE,
    ) -> None:
        self._store = store
        self._pace = pace
        self._retention = retention or RetentionSettings()
        self._telemetry = telemetry or Telemetry()
        self.pruned: dict[str, int] = {
            "runs": 0,
            "events": 0,
            "workers": 0,
            "idempotency_keys": 0,
            "llm_calls": 0,
        }
        """Rows deleted since start, counted as each batch commits (the metrics read it)."""
        self.paced = 0.0
        """Seconds slept between batches of runs since start, to keep to the pace."""

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Delete what is past its retention at ``now``; how many rows of each kind."""
        now = now or clock.now()
        retention = self._retention
        deleted = {"runs": 0, "events": 0, "workers": 0, "idempotency_keys": 0, "llm_calls": 0}

        def done(table: str, count: int) -> None:
            deleted[table] += count
            self.pruned[table] += count

        if retention.runs > 0:
            cutoff = now - timedelta(seconds=retention.runs)
            # Further behind than this, the pruner deletes flat out: the history it holds is
            # then a tenth longer than the retention asks, and growing.
            slack = timedelta(seconds=retention.runs * CATCH_UP)
            after: uuid.UUID | None = None
            while True:
                # Each batch starts after the previous one's last run: the old runs that stay
                # (not finished, or a child of a parent not finished) are read once per pass.
                started = time.monotonic()
                count, after = await self._store.retention.prune_runs(
                    cutoff, retention.batch, after
                )
                done("runs", count)
                if after is None:  # the pass read up to the cutoff
                    break
                if cutoff - id_time(after) > slack:
                    await anyio.lowlevel.checkpoint()  # the daemon's other work between batches
                else:
                    # capped: one statement stalled by a checkpoint or an I/O hiccup must not
                    # stop the pass for minutes
                    pause = min(
                        (time.monotonic() - started) * (1 - self._pace) / self._pace, MAX_PAUSE
                    )
                    self.paced += pause
                    await clock.sleep(pause)  # a test's virtual clock may skip it
            # status webhooks' finished deliveries go with the runs' retention (not counted
            # in the figures above: those name the run's own rows)
            while await self._store.webhooks.prune(cutoff, retention.batch) == retention.batch:
                await anyio.lowlevel.checkpoint()
        if retention.events > 0:
            cutoff = now - timedelta(seconds=retention.events)
            while (count := await self._store.retention.prune_events(cutoff, retention.batch)) > 0:
                done("events", count)
                await anyio.lowlevel.checkpoint()
        if retention.llm_calls > 0:
            cutoff = now - timedelta(seconds=retention.llm_calls)
            while (
                count := await self._store.retention.prune_llm_calls(cutoff, retention.batch)
            ) > 0:
                done("llm_calls", count)
                await anyio.lowlevel.checkpoint()
        while (count := await self._store.retention.prune_idempotency_keys(retention.batch)) > 0:
            done("idempotency_keys", count)
            await anyio.lowlevel.checkpoint()
        while (count := await self._store.retention.prune_failure_hooks(retention.batch)) > 0:
            await anyio.lowlevel.checkpoint()
        # LLM admissions past the longest window (a day) count toward no limit any more
        while (count := await self._store.llm_limits.prune(retention.batch)) > 0:
            await anyio.lowlevel.checkpoint()
        if retention.workers > 0:
            done(
                "workers",
                await self._store.retention.prune_workers(
                    now - timedelta(seconds=retention.workers)
                ),
            )
        if any(deleted.values()):
            log_event(log, logging.INFO, "pruned rows past their retention", **deleted)
        return deleted

    async def run(self) -> None:
        """Every retention interval, in a loop of its own: a long backlog of rows to prune
        must not delay a rescue."""
        while True:
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("prune")
                log.error("pruning failed, retrying at the next interval: %s", exc)
            await anyio.sleep(self._retention.interval)

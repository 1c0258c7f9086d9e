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
import uuid
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from taskd import clock
from taskd.config import RetentionSettings
from taskd.logs import log_event
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.telemetry import Telemetry

log = logging.getLogger("taskd.maintenance")


class Pruner:
    def __init__(
        self,
        store: Store,
        retention: RetentionSettings | None = None,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._store = store
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
            after: uuid.UUID | None = None
            while True:
                # Each batch starts after the previous one's last run: the old runs that stay
                # (not finished, or a child of a parent not finished) are read once per pass.
                count, after = await self._store.retention.prune_runs(
                    cutoff, retention.batch, after
                )
                done("runs", count)
                if count < retention.batch:  # the batch read up to the cutoff
                    break
                await anyio.lowlevel.checkpoint()  # the daemon's other work between batches
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

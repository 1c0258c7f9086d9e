"""The dead-letter hook for runs that failed outside their attempt's code.

The executor runs a task's ``on_failure`` when an attempt it ran fails for good. Three other
paths fail a run in SQL, where no hook can run: a rescue that finds the lost attempt was the
last one (WorkerLost: a crash loop, an OOM kill, ``os._exit`` in the task), a run of a task no
daemon served within ``unknown_task_timeout`` (UnknownTask), and an outcome the database
refused, replaced by a failure (OutcomeNotStored). Those statements also insert the run into
``taskd.failure_hooks``; here a daemon that serves the task claims it, runs the hook, and
deletes the row. A daemon that dies or stops mid-hook leaves its claim behind, and the claim
is taken again once that worker is known to be gone: the hook runs at least once.

A chore of its own (a slow hook must not delay a rescue): every heartbeat, and at once when
this daemon's rescuer or unknown-task failer failed runs (``Findings.hooks_due``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import anyio

from taskd.config import WorkerSettings
from taskd.errors import FailedOutsideAttempt
from taskd.logs import log_event
from taskd.sdk.context import Context, RunServices
from taskd.sdk.registry import Registry
from taskd.store.database import DB_ERRORS
from taskd.store.store import Store
from taskd.worker.findings import Findings

log = logging.getLogger("taskd.failure_hooks")
maintenance_log = logging.getLogger("taskd.maintenance")

BATCH = 50
HOOK_TIMEOUT = 300.0
"""Seconds a hook may take; then it is cancelled and counts as run (as a hook that raised)."""


class FailureHooks:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        worker_id: uuid.UUID,
        services: RunServices | None = None,
        *,
        settings: WorkerSettings | None = None,
        findings: Findings | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._worker_id = worker_id
        self._services = services
        self._settings = settings or WorkerSettings()
        self._findings = findings or Findings(store, worker_id)
        self.ran = 0
        """Hooks run by this daemon (tests and figures)."""

    async def run_once(self) -> int:
        """Claim owed hooks of the tasks served here, run them (at once, each bounded), and
        mark them done; how many were claimed. Only tasks with a hook are worth claiming, but
        every served task's rows are taken: a row of a task without a hook is simply done."""
        total = 0
        while True:
            rows = await self._store.failure_hooks.claim(self._worker_id, self._registry.ids, BATCH)
            if not rows:
                return total
            total += len(rows)
            async with anyio.create_task_group() as group:
                for row in rows:
                    group.start_soon(self._run_hook, row)
            await self._store.failure_hooks.done([row["run_id"] for row in rows], self._worker_id)
            if len(rows) < BATCH:
                return total

    async def run(self) -> None:
        while True:
            self._findings.hooks_due = anyio.Event()
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._findings.telemetry.db_error("maintenance")
                maintenance_log.error("running on_failure hooks failed, retrying: %s", exc)
            with anyio.move_on_after(self._settings.heartbeat):
                await self._findings.hooks_due.wait()

    async def _run_hook(self, row: dict[str, Any]) -> None:
        definition = self._registry.get(row["task_id"])
        hook = definition.on_failure_hook
        if hook is None or row["status"] is None:  # no hook, or the run was pruned meanwhile
            return
        error = row["error"] or {}
        exc = FailedOutsideAttempt(
            str(error.get("type", "Failed")), str(error.get("message", "the run failed"))
        )
        try:
            payload = definition.parse_payload(row["payload"])
        except Exception:  # the hook gets the raw payload, as for an invalid one in an attempt
            payload = row["payload"]
        attempt = row["attempt"]
        ctx = Context(
            run_id=row["run_id"],
            task_id=row["task_id"],
            attempt=attempt,
            max_attempts=row["max_attempts"] or definition.retry.max_attempts,
            payload=payload,
            queue=row["queue"],
            tags=list(row["tags"] or []),
            metadata=row["metadata"],
            services=self._services,
        )
        log_event(
            log,
            logging.INFO,
            f"running on_failure for a run failed with {exc.type}",
            run_id=str(row["run_id"]),
            task=row["task_id"],
        )
        with anyio.move_on_after(HOOK_TIMEOUT) as scope:
            try:
                await hook(payload, exc, attempt, ctx)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the time limit or a shutdown: the row is claimed again later
                ctx.log.exception("on_failure hook raised CancelledError itself")
            except BaseException:  # SystemExit, KeyboardInterrupt...: the run has failed anyway
                ctx.log.exception("on_failure hook raised")
        if scope.cancelled_caught:
            ctx.log.error(f"on_failure hook cancelled after {HOOK_TIMEOUT:g}s")
        self.ran += 1

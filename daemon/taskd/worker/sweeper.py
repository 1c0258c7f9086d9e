"""The sweeper: the one loop that runs the expirer, and every heartbeat the unknown-task failer,
the version failer, the rescuer and the subscription retirer, one after the other in that order.

Each chore is a module of its own, with a ``run_once`` a test can call; this loop is their
order and their cadence. One loop, not one per chore, for two reasons:

- a pass's rescue publishes the report of what the chores found, and it comes after the
  expirer and the failer of the same pass, so its report names the runs they just ended;
- these chores never hold more than one connection of the daemon's pool at a time, a pool
  the claimer, the completer, the heartbeat and the tasks' own writes need.

The waker, the failure hooks and the pruner keep loops of their own: a slow hook, or a long
backlog of rows to prune, must not delay a rescue, and the waker's interval is the resume
latency of a suspended run.
"""

from __future__ import annotations

import logging

from taskd import clock
from taskd.config import WorkerSettings
from taskd.store.database import DB_ERRORS
from taskd.telemetry import Telemetry
from taskd.worker.expirer import Expirer
from taskd.worker.rescuer import Rescuer
from taskd.worker.subscription_retirer import SubscriptionRetirer
from taskd.worker.unknown_task_failer import UnknownTaskFailer
from taskd.worker.version_failer import VersionFailer

log = logging.getLogger("taskd.maintenance")


class Sweeper:
    def __init__(
        self,
        settings: WorkerSettings,
        expirer: Expirer,
        unknown_task_failer: UnknownTaskFailer,
        rescuer: Rescuer,
        subscription_retirer: SubscriptionRetirer,
        *,
        telemetry: Telemetry | None = None,
        version_failer: VersionFailer | None = None,
    ) -> None:
        self._settings = settings
        self._version_failer = version_failer
        self._expirer = expirer
        self._unknown_task_failer = unknown_task_failer
        self._rescuer = rescuer
        self._subscription_retirer = subscription_retirer
        self._telemetry = telemetry or Telemetry()
        # Seconds since the heartbeat-paced chores last started; the first pass runs them.
        self._since_rescue = float("inf")
        # The chore the current pass is in, for the error line.
        self._chore = ""

    async def run_once(self) -> None:
        """One pass: expire; then, if a heartbeat has gone by since they last started (or this
        is the first pass), fail unknown tasks, rescue (publishing the report of what this
        pass and the expiry-only ones since the last rescue found), retire subscriptions.

        A database error ends the pass where it is raised. The heartbeat-paced chores count
        as started once the expirer has succeeded: if one of them fails, the rest of them
        wait for the next heartbeat; if the expirer fails, the next pass tries them all."""
        self._chore = "expirer"
        await self._expirer.run_once()
        if self._since_rescue >= self._settings.heartbeat:
            self._since_rescue = 0.0
            self._chore = "unknown-task failer"
            await self._unknown_task_failer.run_once()
            if self._version_failer is not None:
                self._chore = "version failer"
                await self._version_failer.run_once()
            self._chore = "rescuer"
            await self._rescuer.run_once()
            self._chore = "subscription retirer"
            await self._subscription_retirer.run_once()

    async def run(self) -> None:
        """A pass every second (every heartbeat, if that is shorter), forever: a database
        error is logged and counted, and the next pass goes on."""
        tick = min(1.0, self._settings.heartbeat)
        while True:
            try:
                await self.run_once()
            except DB_ERRORS as exc:
                self._telemetry.db_error("maintenance")
                log.error("maintenance failed, retrying (%s): %s", self._chore, exc)
            await clock.sleep(tick)
            self._since_rescue += tick

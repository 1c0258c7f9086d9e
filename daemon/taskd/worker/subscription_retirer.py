"""The subscription retirer: the event subscriptions of a task that no live worker has served
for RETIRE_SUBSCRIPTIONS_AFTER are deleted, so a task removed from the code stops collecting
runs. The sweeper (sweeper.py) calls it every heartbeat, after the rescue."""

from __future__ import annotations

import logging

from taskd.logs import log_event
from taskd.store.store import Store

log = logging.getLogger("taskd.maintenance")

RETIRE_SUBSCRIPTIONS_AFTER = 3600.0
"""Seconds a task must have gone unserved (no live worker lists it) before its event
subscriptions are deleted: long enough that a deploy, or an outage of the daemons that serve
it, loses no event; short enough that a task removed from the code stops collecting runs."""


class SubscriptionRetirer:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def run_once(self) -> list[tuple[str, str]]:
        """Delete the event subscriptions of tasks no live worker has served for
        RETIRE_SUBSCRIPTIONS_AFTER: (event name, task id) of each."""
        retired = await self._store.events.retire_subscriptions(RETIRE_SUBSCRIPTIONS_AFTER)
        for event_name, task_id in retired:
            log_event(
                log,
                logging.WARNING,
                f"subscription of task {task_id!r} to {event_name!r} retired: no live worker "
                f"has served the task for {RETIRE_SUBSCRIPTIONS_AFTER:g}s",
                task=task_id,
                event=event_name,
            )
        return retired

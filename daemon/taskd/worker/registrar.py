"""The registrar: what this daemon serves, written where the fleet (and the operator) can see it.

At start-up, before the first claim: the registry's tasks (default queue, retry policy), the
queues they declare (their limits), their event subscriptions, their cron schedules, and the
worker's own row, which names its tasks and its lock. After the reconciliation, schedules that
the code declared before and declares no more are deactivated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson

from taskd.config import Settings
from taskd.sdk.registry import Registry
from taskd.sdk.task import TaskDefinition
from taskd.store.schedules import DeclaredSchedule
from taskd.store.store import Store
from taskd.store.tasks import TaskRegistration
from taskd.store.workers import WorkerRegistration
from taskd.worker import process_identity

log = logging.getLogger("taskd.daemon")


async def publish_registry(
    store: Store,
    registry: Registry,
    settings: Settings,
    *also: Callable[[], Awaitable[None]],
) -> None:
    """The tasks, queues, subscriptions and schedules of the code, and the payload limit that
    SQL producers check against; and ``also`` (the config's webhooks). Two steps, each of two
    writes at once on the worker pool's two connections (no connection opened for it): the
    tasks and the queues first, then what refers to a task (its event subscriptions, its
    schedule: a schedule fired before its task's row would take the queue ``default``) beside
    the config's webhooks."""

    async def tasks() -> None:
        await store.settings.put("max_payload_bytes", settings.tasks.max_payload_bytes)
        await store.tasks.sync(
            [
                TaskRegistration(d.id, d.queue.name, d.retry.max_attempts, _describe(d))
                for d in registry
            ]
        )

    async def queues() -> None:
        # theirs and the tasks' statements each make asyncpg look up array types (three round
        # trips on a fresh connection): side by side, on the two connections
        await store.queues.sync([queue.settings() for queue in registry.queues()])

    async def task_parts() -> None:
        await store.events.sync_subscriptions(
            registry.ids, [(event, d.id) for d in registry for event in d.events]
        )
        await store.schedules.declare(
            [
                DeclaredSchedule(d.id, d.schedule.cron, d.schedule.timezone, d.schedule.catch_up)
                for d in registry
                if d.schedule is not None
            ]
        )

    async def config_parts() -> None:
        for write in also:
            await write()

    await _side_by_side(tasks(), queues())
    await _side_by_side(task_parts(), config_parts())


async def _side_by_side(*writes: Awaitable[None]) -> None:
    """Both run to their end (no write left running behind an error), then the first error."""
    done = await asyncio.gather(*writes, return_exceptions=True)
    for outcome in done:
        if isinstance(outcome, BaseException):
            raise outcome


async def register_worker(
    store: Store,
    worker_id: uuid.UUID,
    registry: Registry,
    settings: Settings,
    *,
    lock_key: int,
    version: str,
) -> None:
    """The worker's row. Every registered task is served; ``[worker] queues`` restricts the
    claim by the run's queue (which a trigger may override), not by the task's default queue."""
    identity = process_identity.current()
    await store.workers.register(
        WorkerRegistration(
            worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=version,
            concurrency=settings.worker.concurrency,
            queues=settings.worker.queues,
            tasks=registry.ids,
            lock_key=lock_key,
            # lets a successor on this machine prove this process gone (reconciler.py)
            process=identity.stored() if identity else None,
            # which version of each task (worker/versions.py): the claim and the version
            # failer read them
            task_versions=[registry.get(t).version for t in registry.ids],
            version_policy=settings.worker.version_policy,
        )
    )


async def retire_undeclared_schedules(store: Store, registry: Registry) -> list[str]:
    """Declared schedules that the code no longer declares are deactivated: those of tasks
    registered here without a schedule, and those of tasks no live worker serves any more."""
    undeclared = [d.id for d in registry if d.schedule is None]
    served = await store.tasks.list_served()
    retired = await store.schedules.retire_declared(undeclared, served)
    for schedule_id in retired:
        log.info("schedule %s deactivated: no longer declared in code", schedule_id)
    return retired


MAX_PAYLOAD_SCHEMA_BYTES = 32_768
"""The largest payload JSON Schema stored with a task (larger: none is stored, and a log line
says so): every daemon reads the tasks' rows, so they stay small."""


def _describe(definition: TaskDefinition[Any, Any]) -> dict[str, Any]:
    return {
        "retry": asdict(definition.retry),
        "max_duration": definition.max_duration,
        "budget_usd": definition.budget_usd,
        "payload_schema": payload_schema(definition),
    }


def payload_schema(definition: TaskDefinition[Any, Any]) -> dict[str, Any] | None:
    """The JSON Schema of the task's payload type (pydantic), or None when the task takes any
    JSON, when its type has no JSON Schema, or when the schema is over
    MAX_PAYLOAD_SCHEMA_BYTES (both logged)."""
    adapter = definition.payload_adapter
    if adapter is None:
        return None
    try:
        schema: dict[str, Any] = adapter.json_schema()
        size = len(orjson.dumps(schema))
    except Exception as exc:  # a type pydantic cannot describe (an arbitrary class, say)
        log.warning(
            "task %s: its payload schema is not stored: pydantic cannot describe its payload "
            "type (%s: %s)",
            definition.id,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return None
    if size > MAX_PAYLOAD_SCHEMA_BYTES:
        log.warning(
            "task %s: its payload schema is not stored: %d bytes of JSON Schema, over %d",
            definition.id,
            size,
            MAX_PAYLOAD_SCHEMA_BYTES,
        )
        return None
    return schema

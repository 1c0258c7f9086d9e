"""A worker row as a daemon registers it, for store tests that drive the chores themselves."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

from taskd.store.store import Store
from taskd.store.workers import WorkerRegistration


async def register_worker(
    store: Store, tasks: Sequence[str], *, host: str = "test-host", lock_key: int | None = None
) -> uuid.UUID:
    """A worker serving ``tasks``; its lock is held by nobody unless the test takes
    ``lock_key``."""
    worker_id = uuid.uuid4()
    await store.workers.register(
        WorkerRegistration(
            worker_id,
            host=host,
            pid=4242,
            version="test",
            concurrency=10,
            queues=[],
            tasks=list(tasks),
            lock_key=lock_key if lock_key is not None else int.from_bytes(os.urandom(7), "big"),
        )
    )
    return worker_id

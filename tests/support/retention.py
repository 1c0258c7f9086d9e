"""Finished runs as the daemon leaves them, dated in the past, and a pruner over them: what
the retention tests seed and run."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from taskd.config import RetentionSettings
from taskd.ids import uuid_at
from taskd.store.store import Store
from taskd.worker.pruner import Pruner
from tests.support.runs import insert_run

DAY = 86_400.0
NOW = datetime.now(UTC)
LONG_AGO = NOW - timedelta(days=10)
TASK = "retention.task"


def id_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 made at ``moment`` (random below the millisecond, as ids made then are)."""
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=uuid_at(moment).int | random_bits)


async def seed_run(
    db: asyncpg.Connection,
    status: str,
    created: datetime,
    finished: datetime | None,
    *,
    lines: int = 2,
) -> uuid.UUID:
    """A run as the daemon leaves it: the row, one attempt, some stored log lines."""
    run_id = id_at(created)
    await insert_run(
        db,
        id=run_id,
        task_id=TASK,
        status=status,
        created_at=created,
        run_at=created,
        attempt=1,
        started_at=created,
        finished_at=finished,
    )
    await db.execute(
        "INSERT INTO taskd.attempts (run_id, attempt, started_at, finished_at, outcome)"
        " VALUES ($1, 1, $2, $3, 'failed')",
        run_id,
        created,
        finished or created,
    )
    await db.executemany(
        "INSERT INTO taskd.run_logs (run_id, task_id, attempt, at, level, message)"
        " VALUES ($1, $2, 1, $3, 'info', $4)",
        [(run_id, TASK, created, f"line {i}") for i in range(lines)],
    )
    return run_id


def pruner(store: Store, **retention: Any) -> Pruner:
    settings = RetentionSettings(
        **{"runs": DAY, "events": 2 * DAY, "workers": 3 * DAY, **retention}
    )
    return Pruner(store, settings)

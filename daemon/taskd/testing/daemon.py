"""A daemon in the test's own event loop: test settings, start, drain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from taskd.app import Daemon
from taskd.config import Settings, load_settings
from taskd.sdk.registry import Registry
from taskd.sdk.task import TaskDefinition


def test_settings(dsn: str, **worker: Any) -> Settings:
    """The defaults, on ``dsn``: the admin endpoint on any free port, a short poll interval
    and drain grace, then ``worker`` settings (``concurrency=3``...)."""
    settings = load_settings(None)
    settings.database.url = dsn
    settings.admin.listen = "127.0.0.1:0"  # several daemons at once: any free port
    settings.worker.poll_interval = worker.pop("poll_interval", 0.5)
    settings.worker.shutdown_grace = worker.pop("shutdown_grace", 5.0)
    for key, value in worker.items():
        setattr(settings.worker, key, value)
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@asynccontextmanager
async def running_daemon(
    database: str,
    tasks: Sequence[TaskDefinition[Any, Any]],
    configure: Callable[[Settings], None] | None = None,
    **worker: Any,
) -> AsyncIterator[Daemon]:
    """One daemon in-process, drained when the block ends; ``configure`` may change any
    setting (admin, tasks, log...) after the test defaults and ``worker`` ones."""
    settings = test_settings(database, **worker)
    if configure is not None:
        configure(settings)
    daemon = Daemon(settings, Registry(tasks), database)
    async with anyio.create_task_group() as group:
        started: Daemon = await group.start(_run_daemon, daemon)
        try:
            yield started
        finally:
            await started.stop()


def admin_url(daemon: Daemon) -> str:
    assert daemon.admin is not None and daemon.admin.url is not None
    return daemon.admin.url


async def _run_daemon(daemon: Daemon, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    await daemon.run(handle_signals=False, task_status=task_status)

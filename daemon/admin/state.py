"""What the admin handlers reach: the daemon's store, client, registry, change stream and
readiness, gathered in one object so the handlers do not depend on the Daemon class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daemon.admin.metrics import Metrics
from daemon.admin.schemas import Readiness
from daemon.changes import ChangeHub
from daemon.client import Client
from daemon.config import AdminSettings
from daemon.sdk.registry import Registry
from daemon.store.store import Store


@dataclass
class AdminState:
    store: Store
    client: Client
    registry: Registry
    changes: ChangeHub
    metrics: Metrics
    settings: AdminSettings
    readiness: Callable[[], Awaitable[Readiness]]
    max_payload_bytes: int

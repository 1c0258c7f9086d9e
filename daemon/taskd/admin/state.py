"""What the admin handlers reach: the daemon's store, client, registry, change stream and
readiness, gathered in one object so the handlers do not depend on the Daemon class."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskd.admin.metrics import Metrics
from taskd.admin.schemas import Readiness
from taskd.changes import ChangeHub
from taskd.client import Client
from taskd.config import AdminSettings
from taskd.sdk.registry import Registry
from taskd.store.store import Store

if TYPE_CHECKING:
    from taskd.admin.read_replica import ReadReplica


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
    replica: ReadReplica | None = None
    """[admin] read_url's replica: the GET routes that read history run on it (read_replica.py)."""

"""The response model of GET /api/replica (replica_api.py): where the admin API's reads go
([admin] read_url) and how far that replica is behind the primary."""

from __future__ import annotations

from typing import Literal

from taskd.admin.schemas import _Model


class ReplicaStatus(_Model):
    configured: bool
    """[admin] read_url is set: the API's reads of history go to that server."""
    reading_from: Literal["replica", "primary"]
    """Where the next read goes: ``primary`` when no replica is configured, or while the
    replica is unreachable (reads fall back to the primary, tried again every 5 s)."""
    reachable: bool | None
    """The replica answered this request's lag query (null: no replica configured)."""
    in_recovery: bool | None
    """The replica is still a standby (false: promoted; it is no longer following)."""
    lag_seconds: float | None
    """Seconds since the primary committed the last transaction the replica has replayed; 0
    when nothing is left to replay (null: unknown)."""
    lag_bytes: int | None
    """WAL bytes the primary has written that the replica has not replayed yet."""
    error: str | None = None
    """Why the replica could not be read, one line (without credentials)."""

"""GET /api/replica: where the admin API reads ([admin] read_url) and the replica's lag."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskd.admin.replica_schemas import ReplicaStatus
from taskd.admin.routing import Route
from taskd.admin.state import AdminState


async def replica_status(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> ReplicaStatus:
    if state.replica is None:
        return ReplicaStatus(
            configured=False,
            reading_from="primary",
            reachable=None,
            in_recovery=None,
            lag_seconds=None,
            lag_bytes=None,
        )
    return await state.replica.status()


REPLICA_ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/replica",
        replica_status,
        "The read replica ([admin] read_url): where the API's reads go, and its lag behind "
        "the primary (measured now)",
        response=ReplicaStatus,
    ),
]

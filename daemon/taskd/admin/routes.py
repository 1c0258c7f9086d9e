"""A route of the admin API: its method and path, handler, and the models of its query, body
and response (api.py holds the table; modules of routes such as stats_api.py add theirs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from taskd.admin.schemas import NoQuery
from taskd.admin.state import AdminState

Handler = Callable[[AdminState, web.Request, Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    query: type[BaseModel] = NoQuery
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: dict[int, str] = field(default_factory=dict)
    content_type: str = "application/json"
    public: bool = False  # reachable without the token

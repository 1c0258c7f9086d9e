"""A route of the admin API (its method, path, handler and models) and the error a handler
raises for a request that does not fit: apart from api.py so that route modules beside it
(fleet_api.py) build routes without importing api.py, which gathers them."""

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


class RequestInvalid(Exception):
    """A request that does not fit its route's models: 400 (query) or 422 (body); or a
    handler's own 404/422 with a one-line message."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail

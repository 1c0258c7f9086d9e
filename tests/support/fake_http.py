"""A real HTTP server on 127.0.0.1 standing in for third-party APIs.

``async with fake_http() as server:`` starts it on a free port; ``server.route("POST",
"/users/{user}/letters", answer)`` adds a route (aiohttp's path syntax, ``{name}`` or
``{name:regex}``), before or while requests come. ``answer`` is a ``Reply`` given every time, or
a function (plain or async) of the ``Request`` returning a ``Reply`` or a JSON body for a 200.
Every request is recorded, in arrival order, before it is answered: ``server.requests``,
``server.seen(path)``. A request no route takes gets a 404 and is recorded too.

Nothing in the tasks under test is patched: they read their API's URL from the environment,
and a test points it at ``server.url(...)``.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One request as it arrived; ``params`` holds the route's ``{name}`` parts."""

    method: str
    path: str
    raw_path: str  # as sent, percent-encoding kept
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, None when empty
    params: dict[str, str] = field(default_factory=dict)


Answer = Reply | Callable[[Request], Reply | Any | Awaitable[Reply | Any]]

_PART = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    answer: Answer


def _compile(path: str) -> re.Pattern[str]:
    regex, end = "", 0
    for part in _PART.finditer(path):
        regex += re.escape(path[end : part.start()])
        regex += f"(?P<{part.group(1)}>{part.group(2) or '[^/]+'})"
        end = part.end()
    return re.compile(regex + re.escape(path[end:]))


class FakeHttp:
    def __init__(self) -> None:
        self.base = ""
        self.requests: list[Request] = []
        self._routes: list[_Route] = []

    def route(self, method: str, path: str, answer: Answer) -> None:
        """Routes are tried in the order they were added; the first that matches answers."""
        self._routes.append(_Route(method.upper(), _compile(path), answer))

    def url(self, path: str = "") -> str:
        return f"{self.base}{path}"

    def seen(self, path: str | None = None, method: str | None = None) -> list[Request]:
        return [
            r
            for r in self.requests
            if (path is None or r.path == path) and (method is None or r.method == method.upper())
        ]

    async def _handle(self, incoming: web.Request) -> web.Response:
        raw = await incoming.read()
        request = Request(
            incoming.method,
            incoming.path,
            incoming.raw_path,
            dict(incoming.query),
            dict(incoming.headers),
            json.loads(raw) if raw else None,
        )
        self.requests.append(request)
        for route in self._routes:
            match = route.pattern.fullmatch(request.path)
            if route.method == request.method and match is not None:
                request.params = match.groupdict()
                return await _respond(route.answer, request)
        return web.json_response(
            {"error": f"no route for {request.method} {request.path}"}, status=404
        )


async def _respond(answer: Answer, request: Request) -> web.Response:
    result = answer if isinstance(answer, Reply) else answer(request)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, Reply):
        return web.json_response(result.body, status=result.status, headers=result.headers)
    return web.json_response(result)


@asynccontextmanager
async def fake_http() -> AsyncIterator[FakeHttp]:
    server = FakeHttp()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()

"""The admin HTTP server (aiohttp) inside the daemon: routes, auth, errors as JSON.

Every request but /healthz, /api/session and the console's static files needs
``Authorization: Bearer <token>`` or the console's session cookie when ``[admin] token`` is set
(compared in constant time; session.py); ``[admin] read_token`` may look (GET, HEAD) but not
act (403). Binding anything but loopback without a token is refused by the config. Every
answer carries the console's security headers (CSP, nosniff, no Referer). Errors are
``{"error": "...", "detail": ...}`` with the status the route table documents; an unexpected
failure is a 500 with one line, logged with its traceback, and never stops the daemon.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, get_args, get_origin

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from taskd.admin.api import ROUTES, ReadinessFailed, RequestInvalid, Route
from taskd.admin.console_files import CONSOLE_PAGES, CONSOLE_PREFIX, SECURITY_HEADERS, add_console
from taskd.admin.listen import AdminListener
from taskd.admin.openapi import openapi_document
from taskd.admin.read_replica import LAG_HEADER, READ_FROM, ReadReplica, reads_history
from taskd.admin.schemas import ErrorBody
from taskd.admin.session import bearer_role, cookie_role
from taskd.admin.state import AdminState
from taskd.config import AdminSettings, admin_address
from taskd.errors import (
    InvalidPayload,
    InvalidRunId,
    PayloadTooLarge,
    RunFinished,
    RunNotFound,
    ScheduleNotFound,
    UnknownTask,
    WebhookExists,
    WebhookNotFound,
)
from taskd.store.database import DB_ERRORS

log = logging.getLogger("taskd.admin")

_STATE: web.AppKey[AdminState] = web.AppKey("state", AdminState)
_ERROR_STATUS: dict[type[Exception], int] = {
    RunNotFound: 404,
    ScheduleNotFound: 404,
    WebhookNotFound: 404,
    UnknownTask: 404,
    InvalidRunId: 404,
    RunFinished: 409,
    WebhookExists: 409,
    PayloadTooLarge: 413,
    InvalidPayload: 422,
}


def json_response(value: Any, status: int = 200) -> web.Response:
    if isinstance(value, BaseModel):
        body = value.__pydantic_serializer__.to_json(value)
    else:
        body = orjson.dumps(value)
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(status: int, message: str, detail: Any = None) -> web.Response:
    return json_response(ErrorBody(error=message, detail=detail), status)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.status != 413 else "request body too large"
        return error_response(exc.status, message)
    except RequestInvalid as exc:
        return error_response(exc.status, str(exc), exc.detail)
    except ReadinessFailed as exc:
        failed = [
            name
            for name in ("database", "listener", "worker_lock", "reconciled")
            if not getattr(exc.readiness, name)
        ]
        if exc.readiness.draining:
            failed.append("draining")
        return error_response(
            503, "not ready: " + ", ".join(failed), exc.readiness.model_dump(mode="json")
        )
    except tuple(_ERROR_STATUS) as exc:
        return error_response(_ERROR_STATUS[type(exc)], str(exc))
    except asyncpg.DataError as exc:
        # SQLSTATE class 22: PostgreSQL refused a value of the request (out of range, bad
        # encoding...) that validation let through. The request's fault, not the database's.
        log.warning("admin request %s %s: value refused: %s", request.method, request.path, exc)
        status = 400 if request.method == "GET" else 422
        return error_response(status, f"a value was refused by the database: {exc}")
    except DB_ERRORS as exc:
        log.warning("admin request %s %s: database error: %s", request.method, request.path, exc)
        return error_response(503, f"database unavailable: {exc}")
    except Exception as exc:
        log.exception("admin request %s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


def _auth(settings: AdminSettings, public: set[str]) -> Any:
    """With ``[admin] token`` set, every request but the public ones proves a role.

    A bearer token or the console's session cookie (session.py). The read-only role gets 403
    on every method but GET and HEAD. A browser attaches the cookie on its own, so a state
    change proven by the cookie alone must also be same-origin JSON (see ``_cross_site``).
    """

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in public or request.path.startswith(CONSOLE_PREFIX):
            if request.method not in _SAFE_METHODS and (refused := _cross_site(request)):
                return refused
            result: web.StreamResponse = await handler(request)
            return result
        via_cookie = "Authorization" not in request.headers
        role = cookie_role(settings, request) if via_cookie else bearer_role(settings, request)
        if role is None:
            response = error_response(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="taskd"'
            return response
        if role == "read" and request.method not in _READ_METHODS:
            return error_response(
                403,
                f"the read-only token can look but not act: {request.method} {request.path} "
                "needs the admin token",
            )
        if via_cookie and request.method not in _SAFE_METHODS and (refused := _cross_site(request)):
            return refused
        result = await handler(request)
        return result

    return check


def _cross_site(request: web.Request) -> web.Response | None:
    """A state change a browser sends with its cookie: same-origin JSON, or refused (CSRF).

    The Origin a browser sends must name the Host the request was sent to; a form or a
    ``no-cors`` fetch cannot send ``Content-Type: application/json``.
    """
    origin = request.headers.get("Origin")
    host = request.headers.get("Host", "").lower()
    scheme, _, rest = (origin or "").lower().partition("://")
    if origin is None or scheme not in ("http", "https") or rest != host or not host:
        shown = "no Origin" if origin is None else f"Origin {origin[:100]!r}"
        return error_response(403, f"cross-origin request refused (CSRF): {shown}")
    if request.headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
        return error_response(403, "cross-site request refused (CSRF): Sec-Fetch-Site")
    if request.content_type != "application/json":
        return error_response(
            415, "a request that changes state needs Content-Type: application/json"
        )
    return None


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_READ_METHODS = frozenset({"GET", "HEAD"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _browser_guard(listen_host: str) -> Any:
    """Without a token, the endpoint only answers requests addressed to itself.

    A web page open in the operator's browser can reach a loopback port. Two attacks follow,
    and this refuses both:

    * DNS rebinding: a name of the attacker's re-resolves to 127.0.0.1, so the page reads the
      API as its own origin; its requests carry ``Host: evil.example``. Only the bound
      address and localhost (the name, with the port the request came in on, or none) pass.
    * CSRF: a form post or a ``no-cors`` fetch changes state without reading the answer. Its
      Content-Type can only be one a form sends (never ``application/json``, which needs a
      CORS preflight this server never grants), and browsers send ``Origin`` on every POST.
      So a state-changing request needs ``Content-Type: application/json`` and no Origin
      but the endpoint's own.
    """
    names = _LOOPBACK_NAMES | {listen_host.lower()}

    def own(host: str, port: int) -> bool:
        """``host`` (a Host header, or an Origin without its scheme) names this endpoint."""
        host = host.lower()
        if host.startswith("["):  # [::1]:8787
            name, _, after = host[1:].partition("]")
            given_port = after.removeprefix(":") if after.startswith(":") or not after else "-"
        else:
            name, _, given_port = host.partition(":")
        return name in names and given_port in ("", str(port))

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else 0
        host = request.headers.get("Host", "")
        if not own(host, port):
            return error_response(
                403, f"Host {host[:100]!r} is not this endpoint (DNS rebinding refused)"
            )
        if request.method not in _SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and not (
                origin.startswith("http://") and own(origin.removeprefix("http://"), port)
            ):
                return error_response(
                    403, f"cross-origin request from {origin[:100]!r} refused (CSRF)"
                )
            if request.content_type != "application/json":
                return error_response(
                    415, "a request that changes state needs Content-Type: application/json"
                )
        result: web.StreamResponse = await handler(request)
        return result

    return check


def _query_values(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in request.query:
        if name in values:
            continue
        field = model.model_fields.get(name)
        annotation = field.annotation if field is not None else None
        if _is_list(annotation):
            values[name] = request.query.getall(name)
        else:
            values[name] = request.query[name]
    return values


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


def _endpoint(route: Route) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[_STATE]
        try:
            query = route.query.model_validate(_query_values(request, route.query))
        except ValidationError as exc:
            raise RequestInvalid(
                400, _first_problem(exc), exc.errors(include_url=False, include_context=False)
            ) from None
        body = None
        if route.body is not None:
            raw = await request.read()
            try:
                data = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError as exc:
                raise RequestInvalid(400, f"the body is not JSON: {exc}") from None
            try:
                body = route.body.model_validate(data)
            except ValidationError as exc:
                raise RequestInvalid(
                    422,
                    _first_problem(exc),
                    exc.errors(include_url=False, include_context=False, include_input=False),
                ) from None
        if state.replica is not None and reads_history(route):
            return await _read_on_replica(route, state, state.replica, request, query)
        result = await route.handler(state, request, query, body)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result, route.status)

    return handle


async def _read_on_replica(
    route: Route, state: AdminState, replica: ReadReplica, request: web.Request, query: Any
) -> web.StreamResponse:
    """A read of history on [admin] read_url's replica (the primary as its fallback), its
    answer saying where it was read and the replica's lag."""
    result, source = await replica.read(state, lambda on: route.handler(on, request, query, None))
    response = (
        result if isinstance(result, web.StreamResponse) else json_response(result, route.status)
    )
    response.headers[READ_FROM] = source
    if source == "replica":
        lag = await replica.lag()
        if lag is not None and lag.seconds is not None:
            response.headers[LAG_HEADER] = f"{lag.seconds:.3f}"
    return response


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "request"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def build_app(state: AdminState, version: str) -> web.Application:
    public = {route.path for route in ROUTES if route.public}
    # Bodies carry one payload plus a few options: room for twice the payload limit (JSON
    # escaping), then PayloadTooLarge (413) judges the payload itself.
    # With a token, the token is the guard: a browser never attaches it on its own (CSRF)
    # and a rebinding page does not know it; without one, the endpoint is on loopback.
    public |= set(CONSOLE_PAGES)
    guard = (
        _auth(state.settings, public)
        if state.settings.token
        else _browser_guard(admin_address(state.settings.listen)[0])
    )
    app = web.Application(
        middlewares=[_errors, guard],
        client_max_size=2 * state.max_payload_bytes + 65_536,
    )
    app[_STATE] = state
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _endpoint(route))

    @functools.cache
    def document() -> dict[str, Any]:  # at the first request: 50 ms of start-up otherwise
        return openapi_document(version)

    async def openapi(request: web.Request) -> web.Response:
        return json_response(document())

    app.router.add_get("/api/openapi.json", openapi)
    add_console(app, state.settings)
    app.on_response_prepare.append(_security_headers)
    return app


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, the API's as the console's: nothing but this origin's own files run,
    nothing frames it, no Referer leaves it, no type is guessed."""
    response.headers.update(SECURITY_HEADERS)


class AdminServer:
    """Serves the admin endpoint on ``[admin] listen``'s sockets, bound before the daemon
    claimed anything (taskd.admin.listen), until ``stop``."""

    def __init__(self, state: AdminState, version: str, listener: AdminListener) -> None:
        self._state = state
        self._version = version
        self._listener = listener
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    async def start(self) -> None:
        app = build_app(self._state, self._version)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        await self._listener.serve(server)
        self.url = self._listener.url
        log.info("admin endpoint on %s", self.url)

    async def stop(self) -> None:
        self._state.changes.close()  # ends every stream, so cleanup does not wait on them
        await self._listener.close()  # stops accepting; the runner's cleanup closes the clients
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The inbound webhook listener (``[hooks] listen``): ``POST /hooks/{source}`` and nothing else.

A request is read up to ``max_body`` (413 beyond, the connection closed without reading the
rest), verified against its source's secret (401 with a short reason), then sent as the
source's event with its delivery id as idempotency key, in one transaction: 202 and the
event's id once committed; a redelivery (same id) 200 and the first delivery's event id,
no second event; the database unreachable 503 (the sender retries). Every other path is a
404 and every other method a 405, as JSON. No admin route, no console, no token: this
listener is meant to face the internet (behind a TLS proxy).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import anyio
import asyncpg
import orjson
from aiohttp import web

from taskd.config import HooksSettings, admin_address
from taskd.errors import TaskdError
from taskd.hooks.intake import delivery_id, event_payload, idempotency_key, parse_body
from taskd.hooks.refusals import RefusalLog
from taskd.hooks.verify import Refused, Verifier, verifier_for
from taskd.store.database import DB_ERRORS
from taskd.store.hooks import HookStore
from taskd.telemetry import Telemetry

log = logging.getLogger("taskd.hooks")

READ_TIMEOUT = 30.0
"""Longest a sender may take to send its body (408 after)."""
ACQUIRE_TIMEOUT = 5.0
"""Longest a request waits for one of the listener's connections (503 after: a flood of
valid requests queues no further)."""
RETRY_AFTER = "5"
"""Seconds a sender is asked to wait after a 503."""
UNKNOWN_SOURCE = "(unknown)"
"""The source label of requests to a source that is not configured."""
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class HooksListenFailed(TaskdError):
    """``[hooks] listen`` cannot be bound (the port is taken, the address is not local)."""


def _answer(status: int, body: Mapping[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=SECURITY_HEADERS,
    )


class HooksServer:
    """Binds ``[hooks] listen`` (``start``, with the pool its events go through); ``handle``
    serves ``POST /hooks/{source}``. Built before its pool: the sources' secrets are read
    here, and a missing one stops the start with a ConfigError."""

    def __init__(
        self,
        settings: HooksSettings,
        telemetry: Telemetry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._verifiers: dict[str, Verifier] = {
            name: verifier_for(source) for name, source in settings.sources.items()
        }
        self._store: HookStore | None = None
        self._telemetry = telemetry
        self._clock = clock
        self._refusals = RefusalLog()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._json_errors], client_max_size=self.settings.max_body
        )
        app.router.add_route("POST", "/hooks/{source}", self.handle)
        return app

    @web.middleware
    async def _json_errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """aiohttp's own 404 and 405 as JSON, with the security headers."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            answer = _answer(exc.status, {"error": exc.reason})
            if exc.status == 405:
                answer.headers["Allow"] = "POST"
            return answer

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["source"]
        try:
            return await self._receive(name, request)
        except Refused as refused:
            label = name if name in self._verifiers else UNKNOWN_SOURCE
            self._telemetry.hook_request(label, refused.result)
            self._refusals.refused(label, refused.status, refused.reason, request.remote)
            answer = _answer(refused.status, {"error": refused.reason})
            if refused.status == 503:
                answer.headers["Retry-After"] = RETRY_AFTER
            if refused.status in (408, 413):
                answer.force_close()  # the rest of the body is not read
            return answer

    async def _receive(self, name: str, request: web.Request) -> web.StreamResponse:
        verifier = self._verifiers.get(name)
        if verifier is None:
            raise Refused(404, "unknown_source", "no such source")
        source = verifier.source
        raw = await self._read_body(request)
        headers = {key.lower(): value for key, value in request.headers.items()}
        signed_id = verifier.verify(raw, headers, self._clock())
        body, encoding = parse_body(raw)
        delivery = delivery_id(source, signed_id, body, raw, headers)
        payload = event_payload(
            source, delivery, body, encoding, headers, datetime.fromtimestamp(self._clock(), UTC)
        )
        encoded = orjson.dumps(payload).decode()
        assert self._store is not None, "started"
        try:
            event_id, new = await self._store.send_once(
                idempotency_key(source, delivery),
                source.event,
                encoded,
                self.settings.redelivery_window,
                acquire_timeout=ACQUIRE_TIMEOUT,
            )
        except asyncpg.ProgramLimitExceededError:
            raise Refused(
                413, "too_large", "the event's payload is over tasks.max_payload_bytes"
            ) from None
        except DB_ERRORS as exc:
            log.warning("webhook %s: the database is unavailable: %s", name, exc)
            raise Refused(503, "unavailable", "the database is unavailable; retry") from None
        self._telemetry.hook_request(name, "accepted" if new else "duplicate")
        return _answer(
            202 if new else 200,
            {"event_id": str(event_id), "event": source.event, "duplicate": not new},
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, at most ``max_body`` bytes; Refused 413 past it (unread), 408 when the
        sender is too slow."""
        limit = self.settings.max_body
        too_large = Refused(413, "too_large", f"the body is over {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(READ_TIMEOUT) as reading:
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        if reading.cancelled_caught:
            raise Refused(408, "bad_request", f"the body took over {READ_TIMEOUT:g}s")
        return b"".join(chunks)

    async def start(self, pool: asyncpg.Pool) -> None:
        self._store = HookStore(pool)
        host, port = admin_address(self.settings.listen)
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            errno = f"[Errno {exc.errno}] " if exc.errno else ""
            raise HooksListenFailed(
                f"cannot open the webhook listener on {self.settings.listen} "
                f"(hooks.listen): {errno}{reason}"
            ) from None
        sockets = getattr(site._server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}"
        log.info(
            "webhook listener on %s: %s",
            self.url,
            ", ".join(f"/hooks/{name}" for name in self._verifiers),
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""A local receiver of status webhooks that verifies every request as a user's would, with
``standardwebhooks.Webhook(secret).verify(body, headers)``.

``async with webhook_receiver(secret) as receiver:`` serves ``receiver.url`` on a free port.
A request whose signature no secret of ``receiver.secrets`` verifies is answered 401 and kept
in ``receiver.rejected``; a verified one is answered by ``receiver.answer(delivery)`` (204 by
default; set it to give 503s, 410...) and kept, once answered, in ``receiver.received`` (every
arrival, duplicates included). ``receiver.verified_by[webhook_id]`` names the secrets that
verified it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    webhook_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    answered: int = 0

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def run_id(self) -> str:
        return str(self.body["data"]["id"])


@dataclass
class Receiver:
    secrets: list[str]
    url: str = ""
    received: list[Delivery] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    verified_by: dict[str, set[str]] = field(default_factory=dict)
    answer: Callable[[Delivery], web.Response] = lambda _: web.Response(status=204)
    before_answer: Callable[[Delivery], Awaitable[None]] | None = None
    """Awaited before answering (a test holds a request there: a delivery in flight)."""

    def unique(self) -> dict[str, Delivery]:
        """The first arrival of each webhook-id."""
        first: dict[str, Delivery] = {}
        for delivery in self.received:
            first.setdefault(delivery.webhook_id, delivery)
        return first

    def events_of(self, run_id: object) -> list[str]:
        """The event types of a run, in the order they first arrived."""
        return [d.type for d in self.unique().values() if d.run_id == str(run_id)]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        verified: set[str] = set()
        body: Any = None
        for secret in self.secrets:
            try:
                body = Webhook(secret).verify(raw, headers)
            except WebhookVerificationError:
                continue
            verified.add(secret)
        if not verified:
            self.rejected.append(headers)
            return web.Response(status=401, text="signature not verified")
        delivery = Delivery(headers["webhook-id"], body, headers)
        self.verified_by.setdefault(delivery.webhook_id, set()).update(verified)
        if self.before_answer is not None:
            await self.before_answer(delivery)
        response = self.answer(delivery)
        delivery.answered = response.status
        self.received.append(delivery)
        return response


@asynccontextmanager
async def webhook_receiver(*secrets: str) -> AsyncIterator[Receiver]:
    receiver = Receiver(list(secrets))
    app = web.Application()
    app.router.add_post("/hook", receiver._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()

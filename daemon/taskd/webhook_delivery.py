"""The internal task ``taskd.webhook``: one run sends one delivery of a status webhook.

A run of it is queued by the database (migration 0018) when a run event is captured for a
subscription and the delivery before it (same subscription, same run) has ended; its payload
names the delivery. Each attempt POSTs the delivery's body, signed per Standard Webhooks with
the ``standardwebhooks`` package (``webhook-id`` = the delivery's id, stable across retries;
``webhook-timestamp`` = this attempt's time; one ``v1,`` signature per valid secret, two
during a rotation). 2xx: delivered. A timeout, a connection error or any other answer: the
attempt fails and taskd's retry machinery tries again after the next delay of
``[webhook_delivery] retry_schedule`` (a Retry-After of a 429 or 503 instead); after the last
one the run fails and the delivery is dead. 410 Gone disables the subscription at once.

Lives beside the daemon's wiring (not in worker/): only it, the admin endpoint and the webhook
listener load aiohttp, and it only at a daemon's first delivery (aiohttp and standardwebhooks
cost a daemon's start about 0.2 s to import; most daemons never send a webhook).
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from taskd.config import Settings, WebhookDeliverySettings
from taskd.errors import AbortRun
from taskd.logs import log_event
from taskd.sdk.context import Context
from taskd.sdk.queues import Queue
from taskd.sdk.retry import MAX_RETRY_AFTER, Retry
from taskd.sdk.task import TaskDefinition, task
from taskd.store.store import Store
from taskd.store.webhooks import Outgoing, SubscriptionSpec
from taskd.webhook_rules import DELIVERY_QUEUE, DELIVERY_TASK

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("taskd.webhooks")

USER_AGENT = "taskd-webhooks"
MAX_ERROR_CHARS = 300


class DeliveryFailed(Exception):
    """An attempt that failed; ``retry_after``: seconds until the next one."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def signature_header(outgoing: Outgoing, timestamp: datetime, body: str) -> str:
    """``v1,<base64>`` per valid secret, space-separated (the spec's form for rotation)."""
    from standardwebhooks.webhooks import Webhook

    return " ".join(
        Webhook(secret).sign(str(outgoing.id), timestamp, body) for secret in outgoing.secrets
    )


def headers_for(outgoing: Outgoing, timestamp: datetime) -> dict[str, str]:
    body = outgoing.body.decode()
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": str(outgoing.id),
        "webhook-timestamp": str(math.floor(timestamp.timestamp())),
        "webhook-signature": signature_header(outgoing, timestamp, body),
    }


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds (a number of seconds or an HTTP date), capped at a week."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(text) - now).total_seconds()
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


class WebhookSender:
    """The daemon's HTTP client for deliveries (one aiohttp session) and the task that uses it."""

    def __init__(self, store: Store, settings: WebhookDeliverySettings) -> None:
        self.store = store
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        schedule = list(settings.retry_schedule)
        self.schedule = schedule
        self.definition = self._definition()

    def _definition(self) -> TaskDefinition[dict[str, Any], dict[str, Any]]:
        schedule = self.schedule
        retry = Retry(
            max_attempts=len(schedule) + 1,
            min_delay=min(schedule, default=0.0),
            max_delay=max(schedule, default=0.0),
            factor=1.0,
            jitter=False,
        )

        @task(
            id=DELIVERY_TASK,
            retry=retry,
            max_duration=self.settings.timeout + 30,
            queue=Queue(DELIVERY_QUEUE, concurrency=self.settings.concurrency),
        )
        async def deliver(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
            return await self.send(uuid.UUID(str(payload["delivery_id"])), ctx)

        return deliver

    def _next_delay(self, attempt: int) -> float:
        """The schedule's delay after attempt ``attempt`` (1-based) failed."""
        if not self.schedule:
            return 0.0
        return self.schedule[min(attempt, len(self.schedule)) - 1]

    async def send(self, delivery_id: uuid.UUID, ctx: Context) -> dict[str, Any]:
        import aiohttp  # at the first delivery, not at the daemon's start

        outgoing = await self.store.webhooks.to_send(delivery_id, ctx.run_id)
        if outgoing is None:
            return {"skipped": "the delivery or its subscription is gone, or another run sends it"}
        if outgoing.refused is not None:
            raise AbortRun(outgoing.refused)
        now = datetime.now(UTC)
        status: int | None = None
        retry_after: float | None = None
        error: str | None
        try:
            session = self._session_now()
            async with session.post(
                outgoing.url,
                data=outgoing.body,
                headers=headers_for(outgoing, now),
                allow_redirects=False,
            ) as response:
                status = response.status
                text = (await response.content.read(MAX_ERROR_CHARS)).decode(errors="replace")
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
            error = None if 200 <= status < 300 else f"HTTP {status}: {text.strip()}"[:300]
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS] or type(exc).__name__
        ok = error is None
        gone = status == 410
        disabled = await self._record(
            outgoing,
            ok=ok,
            status=status,
            error=error,
            disable=f"the receiver answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC"
            if gone
            else None,
        )
        if disabled is not None:
            log_event(
                log,
                logging.WARNING,
                f"webhook {outgoing.subscription!r} disabled: {disabled}",
                webhook=outgoing.subscription,
            )
        if ok:
            return {"status": status}
        message = f"webhook {outgoing.subscription!r}: {error}"
        if gone or disabled is not None:
            raise AbortRun(message)
        delay = retry_after if retry_after is not None else self._next_delay(ctx.attempt)
        raise DeliveryFailed(message, delay)

    async def _record(
        self,
        outgoing: Outgoing,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        disable: str | None = None,
    ) -> str | None:
        return await self.store.webhooks.record_attempt(
            outgoing.id,
            ok=ok,
            status=status,
            error=error,
            disable_after=self.settings.disable_after,
            disable=disable,
        )

    def _session_now(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                connector=aiohttp.TCPConnector(limit=self.settings.concurrency),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def sync_config_webhooks(store: Store, settings: Settings) -> None:
    """The config's ``[[webhooks]]`` written to the database (upsert by name); config-sourced
    subscriptions no longer listed are disabled. Secrets are resolved first (ConfigError)."""
    specs = [
        (
            SubscriptionSpec(w.name, w.url, w.events, w.tasks, w.queues, w.tags),
            w.resolved_secret(),
            w.enabled,
        )
        for w in settings.webhooks
    ]
    disabled = await store.webhooks.sync_config(specs, settings.webhook_delivery.rotation_overlap)
    if settings.worker.queues and DELIVERY_QUEUE not in settings.worker.queues:
        log_event(
            log,
            logging.WARNING,
            f"this daemon sends no status webhooks: [worker] queues leaves out {DELIVERY_QUEUE}",
        )
    if specs or disabled:
        log_event(
            log,
            logging.INFO,
            f"webhooks from the config: {len(specs)}"
            + (f"; disabled, no longer in the config: {', '.join(disabled)}" if disabled else ""),
            webhooks=[spec.name for spec, _, _ in specs],
        )


__all__ = [
    "DeliveryFailed",
    "WebhookSender",
    "headers_for",
    "parse_retry_after",
    "sync_config_webhooks",
]

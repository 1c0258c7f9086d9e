"""Seed 001's webhook handler: a third party's signed webhook becomes one run of
``handle-webhook``.

The seed's ``eventTrigger({ id: 'handle-webhook', event: 'webhook.received' })`` checked the
``x-signature`` header itself. Here taskd's webhook listener does it before anything is
stored: with this source in the configuration

```toml
[hooks]
listen = "127.0.0.1:8788"            # behind your TLS proxy

[hooks.sources.acme]
event = "webhook.received"
verify = "hmac-sha256"
header = "x-signature"               # hex HMAC-SHA256 of the body, after "sha256="
prefix = "sha256="
timestamp_header = "x-timestamp"     # signed too: "<timestamp>.<body>", 5 minutes' tolerance
id_header = "x-webhook-id"           # a redelivery (same id) makes no second run
secret_env = "ACME_WEBHOOK_SECRET"
headers = ["x-event-type"]
```

a request to ``POST /hooks/acme`` with a valid signature is recorded as the event
``webhook.received`` (``{source, id, body, body_encoding, headers, received_at}``) in the
same transaction as the run of this task it starts, and answered 202 once committed. An
invalid signature is answered 401 and starts nothing, so this task sees verified payloads
only (``taskd.send_event`` from your own code can send the event too: any role allowed to
call it is trusted).

The run processes the body, an order event (``{"type": "order.paid", "data": {"order_id":
..., ...}}``): it posts it to the orders API (``ORDERS_API_URL``, with ``ORDERS_API_KEY`` as
bearer when set) in a step, with the delivery's id as ``Idempotency-Key``, so that a retried
try (the API answered 503) does not apply it twice. Event types it does not handle are
completed without a call (``processed: false``): a sender must not see them fail.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from taskd import AbortRun, Context, Retry, task
from tasks.user_registration import post_json

DEFAULT_ORDERS_API_URL = "https://orders.example/v1/events"
HANDLED_TYPES = frozenset({"order.paid", "order.refunded", "order.canceled"})

WEBHOOK_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)


class ReceivedWebhook(BaseModel):
    """The payload of an event the webhook listener sent (``[hooks]``)."""

    source: str
    """The source's name (``/hooks/<source>``)."""
    id: str = Field(min_length=1)
    """The delivery's id (its idempotency key)."""
    body: Any = None
    """The request's body: its JSON value, else its text, else base64 (``body_encoding``)."""
    body_encoding: str = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    """The headers the source keeps (``headers = [...]``), lower-case names."""
    received_at: str = ""


class WebhookResult(BaseModel):
    processed: bool
    type: str | None = None
    order_id: str | None = None


@task(id="handle-webhook", on_event="webhook.received", retry=WEBHOOK_RETRY)
async def handle_webhook(payload: ReceivedWebhook, ctx: Context) -> WebhookResult:
    """Process one verified webhook (seed 001's ``processWebhookPayload``)."""
    body = payload.body if isinstance(payload.body, dict) else None
    if body is None:
        raise AbortRun(f"webhook {payload.id}: the body is not a JSON object")
    kind = body.get("type") or payload.headers.get("x-event-type")
    if kind not in HANDLED_TYPES:
        ctx.log.info(f"webhook {payload.id}: {kind!r} ignored", type=str(kind))
        return WebhookResult(processed=False, type=str(kind) if kind is not None else None)
    data = body.get("data")
    if not isinstance(data, dict) or not data.get("order_id"):
        raise AbortRun(f"webhook {payload.id}: {kind} without data.order_id")
    await ctx.step("process", process_webhook_payload, payload, kind, data, ctx)
    return WebhookResult(processed=True, type=kind, order_id=str(data["order_id"]))


async def process_webhook_payload(
    payload: ReceivedWebhook, kind: str, data: dict[str, Any], ctx: Context
) -> None:
    await post_json(
        os.environ.get("ORDERS_API_URL") or DEFAULT_ORDERS_API_URL,
        {"type": kind, "order": data, "source": payload.source, "delivery": payload.id},
        api_key=os.environ.get("ORDERS_API_KEY"),
        idempotency_key=f"{payload.source}:{payload.id}",
        ctx=ctx,
    )

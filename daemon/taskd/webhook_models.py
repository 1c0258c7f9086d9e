"""Status webhooks as the client, the CLI and the admin API return them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class WebhookSubscription(BaseModel):
    """A status webhook subscription (``client.webhooks()``, ``taskd webhooks list``); its
    secrets are never shown again after creation or rotation."""

    id: uuid.UUID
    """Its id."""
    name: str
    """Its name (unique): the CLI and the API address it by it."""
    url: str
    """Where the run events are POSTed."""
    events: list[str]
    """The run events sent."""
    tasks: list[str] | None = None
    """Only runs of these tasks (None: all)."""
    queues: list[str] | None = None
    """Only runs in these queues (None: all)."""
    tags: list[str] | None = None
    """Only runs with one of these tags (None: all)."""
    source: Literal["config", "api"]
    """Where it was declared: a ``[[webhooks]]`` table, or the client/CLI/API."""
    enabled: bool
    """False: disabled (``disabled_reason`` says why); ``resume`` enables it again."""
    paused: bool
    """Paused (``pause``): no events captured until resumed."""
    disabled_reason: str | None = None
    """Why it is disabled (failing for ``disable_after``, a 410 Gone, the config)."""
    failing_since: datetime | None = None
    """Its deliveries have failed since then without one success."""
    rotating: bool = False
    """A previous secret still signs too (after a rotation)."""
    pending: int = 0
    """Deliveries not sent yet (waiting, or being tried)."""
    dead: int = 0
    """Deliveries whose last try failed (redeliverable)."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed (config sync, pause, rotation)."""


class WebhookSecret(BaseModel):
    """A subscription's new secret, shown this once (creation, rotation)."""

    name: str
    """The subscription's name."""
    secret: str
    """``whsec_`` + base64: verify with ``standardwebhooks.Webhook(secret).verify(body,
    headers)``."""


class WebhookDelivery(BaseModel):
    """One event sent to one subscription (``client.webhook_deliveries()``)."""

    id: uuid.UUID
    """Its ``webhook-id`` header (the same on every retry): a receiver dedupes on it."""
    subscription: str
    """The subscription's name."""
    run_id: uuid.UUID
    """The run the event is about."""
    seq: int
    """Its place among the events of that run for that subscription (sent in this order)."""
    event: str
    """The run event: run.started, run.completed, ..."""
    status: Literal["pending", "sending", "delivered", "dead"]
    """pending (waiting for the delivery before it), sending (its run queued or executing),
    delivered, dead (its last try failed: the dead letter)."""
    attempts: int
    """HTTP attempts made."""
    last_status: int | None = None
    """The HTTP status of the last attempt (None: no answer)."""
    last_error: str | None = None
    """What went wrong with the last attempt (HTTP status and the answer's start, a timeout)."""
    delivery_run_id: uuid.UUID | None = None
    """The run of ``taskd.webhook`` sending it (``taskd runs show``)."""
    created_at: datetime
    """When the event happened (and the delivery was recorded)."""
    delivered_at: datetime | None = None
    """When a 2xx answer was recorded."""
    payload: dict[str, Any] | None = None
    """The body (``client.webhook_delivery(id)`` only)."""

"""The request and response models of the status webhook routes (webhook_api.py)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from taskd.admin.schemas import Text, _Model, _Strict
from taskd.webhook_models import WebhookDelivery, WebhookSecret, WebhookSubscription


class WebhookList(_Model):
    webhooks: list[WebhookSubscription]
    """Every subscription, by name (secrets are never listed)."""


class WebhookCreate(_Strict):
    """A new subscription (client.create_webhook)."""

    name: Text
    """1-100 letters, digits or _ . : - (unique)."""
    url: Text
    """Where the run events are POSTed (http:// or https://)."""
    events: list[Text] = Field(min_length=1, max_length=20)
    """run.started, run.completed, run.failed, run.canceled, run.expired, run.attempt_failed,
    run.waiting."""
    tasks: list[Text] | None = Field(None, min_length=1, max_length=1000)
    """Only runs of these tasks (null: all)."""
    queues: list[Text] | None = Field(None, min_length=1, max_length=1000)
    """Only runs in these queues (null: all)."""
    tags: list[Text] | None = Field(None, min_length=1, max_length=1000)
    """Only runs with one of these tags (null: all)."""
    secret: Text | None = None
    """whsec_ + base64 of 24-64 bytes; null: one is made (and returned once)."""


class WebhookRotate(_Strict):
    secret: Text | None = None
    """The new secret (null: one is made, returned once)."""
    overlap_seconds: float = Field(86_400.0, ge=0, le=365 * 86_400)
    """How long the previous secret signs too."""


class WebhookDeleted(_Model):
    name: str
    deleted: bool = True


class WebhookDeliveryQuery(_Strict):
    status: Literal["pending", "sending", "delivered", "dead"] | None = None
    """Only deliveries in this status (dead: the dead letter)."""
    run_id: uuid.UUID | None = None
    """Only the events of this run."""
    before: uuid.UUID | None = None
    """The page after the delivery with this id (next_before of the previous page)."""
    limit: int = Field(50, ge=1, le=1000)


class WebhookDeliveryPage(_Model):
    deliveries: list[WebhookDelivery]
    """Newest first."""
    next_before: uuid.UUID | None = None
    """Pass as before for the next page (null: no more)."""


class WebhookRedelivered(_Model):
    """The runs of taskd.webhook sending the deliveries again."""

    runs: list[uuid.UUID]


__all__ = [
    "WebhookCreate",
    "WebhookDeleted",
    "WebhookDeliveryPage",
    "WebhookDeliveryQuery",
    "WebhookList",
    "WebhookRedelivered",
    "WebhookRotate",
    "WebhookSecret",
]

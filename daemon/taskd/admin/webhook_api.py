"""The status webhook routes: subscriptions listed, created, paused, resumed, deleted and
their secrets rotated; deliveries listed, shown and sent again. api.py's ROUTES ends with
WEBHOOK_ROUTES. A secret is only ever in the answer of a creation or a rotation."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from taskd.admin.routing import RequestInvalid, Route
from taskd.admin.state import AdminState
from taskd.admin.webhook_schemas import (
    WebhookCreate,
    WebhookDeleted,
    WebhookDeliveryPage,
    WebhookDeliveryQuery,
    WebhookList,
    WebhookRedelivered,
    WebhookRotate,
)
from taskd.errors import WebhookNotFound
from taskd.webhook_models import WebhookDelivery, WebhookSecret, WebhookSubscription


def _name(request: web.Request) -> str:
    return request.match_info["name"]


async def _subscription(state: AdminState, name: str) -> WebhookSubscription:
    # WebhookNotFound answers 404 and WebhookExists 409 (admin/server.py _ERROR_STATUS)
    return await state.client.get_webhook(name)


async def list_webhooks(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookList:
    return WebhookList(webhooks=await state.client.webhooks())


async def create_webhook(
    state: AdminState, request: web.Request, query: Any, body: WebhookCreate
) -> WebhookSecret:
    try:
        return await state.client.create_webhook(
            body.name,
            body.url,
            body.events,
            tasks=body.tasks,
            queues=body.queues,
            tags=body.tags,
            secret=body.secret,
        )
    except ValueError as exc:
        raise RequestInvalid(422, str(exc)) from None


async def get_webhook(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookSubscription:
    return await _subscription(state, _name(request))


async def pause_webhook(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookSubscription:
    await state.client.pause_webhook(_name(request))
    return await _subscription(state, _name(request))


async def resume_webhook(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookSubscription:
    await state.client.resume_webhook(_name(request))
    return await _subscription(state, _name(request))


async def delete_webhook(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookDeleted:
    await state.client.delete_webhook(_name(request))
    return WebhookDeleted(name=_name(request))


async def rotate_webhook(
    state: AdminState, request: web.Request, query: Any, body: WebhookRotate
) -> WebhookSecret:
    try:
        return await state.client.rotate_webhook_secret(
            _name(request), secret=body.secret, overlap=body.overlap_seconds
        )
    except ValueError as exc:
        raise RequestInvalid(422, str(exc)) from None


async def list_deliveries(
    state: AdminState, request: web.Request, query: WebhookDeliveryQuery, body: Any
) -> WebhookDeliveryPage:
    await _subscription(state, _name(request))
    found = await state.client.webhook_deliveries(
        webhook=_name(request),
        status=query.status,
        run_id=query.run_id,
        before=query.before,
        limit=query.limit,
    )
    more = len(found) == query.limit
    return WebhookDeliveryPage(deliveries=found, next_before=found[-1].id if more else None)


async def _delivery(state: AdminState, request: web.Request) -> WebhookDelivery:
    try:
        delivery = await state.client.webhook_delivery(uuid.UUID(request.match_info["id"]))
    except (ValueError, WebhookNotFound):
        delivery = None
    if delivery is None or delivery.subscription != _name(request):
        raise RequestInvalid(404, f"no delivery {request.match_info['id']} of this webhook")
    return delivery


async def get_delivery(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookDelivery:
    return await _delivery(state, request)


async def redeliver(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookRedelivered:
    delivery = await _delivery(state, request)
    try:
        return WebhookRedelivered(runs=[await state.client.redeliver_webhook(delivery.id)])
    except ValueError as exc:  # still pending or being sent
        raise RequestInvalid(409, str(exc)) from None


async def redeliver_dead(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WebhookRedelivered:
    return WebhookRedelivered(runs=await state.client.redeliver_dead_webhooks(_name(request)))


_NO_WEBHOOK = {404: "No webhook of this name"}

WEBHOOK_ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/webhooks",
        list_webhooks,
        "Status webhook subscriptions (no secrets)",
        response=WebhookList,
    ),
    Route(
        "POST",
        "/api/webhooks",
        create_webhook,
        "Subscribe a URL to run events; the answer holds its secret, shown this once",
        body=WebhookCreate,
        response=WebhookSecret,
        status=201,
        errors={
            400: "The body is not JSON",
            409: "A webhook of this name exists",
            422: "A bad name, URL, event, filter or secret",
        },
    ),
    Route(
        "GET",
        "/api/webhooks/{name}",
        get_webhook,
        "One subscription",
        response=WebhookSubscription,
        errors=_NO_WEBHOOK,
    ),
    Route(
        "DELETE",
        "/api/webhooks/{name}",
        delete_webhook,
        "Delete a subscription and its deliveries",
        response=WebhookDeleted,
        errors=_NO_WEBHOOK,
    ),
    Route(
        "POST",
        "/api/webhooks/{name}/pause",
        pause_webhook,
        "Capture no events for it until resumed",
        response=WebhookSubscription,
        errors=_NO_WEBHOOK,
    ),
    Route(
        "POST",
        "/api/webhooks/{name}/resume",
        resume_webhook,
        "Resume a paused subscription, or enable a disabled one",
        response=WebhookSubscription,
        errors=_NO_WEBHOOK,
    ),
    Route(
        "POST",
        "/api/webhooks/{name}/rotate",
        rotate_webhook,
        "A new secret (returned once); the previous one signs too for overlap_seconds",
        body=WebhookRotate,
        response=WebhookSecret,
        errors={400: "The body is not JSON", **_NO_WEBHOOK, 422: "A bad secret"},
    ),
    Route(
        "GET",
        "/api/webhooks/{name}/deliveries",
        list_deliveries,
        "A subscription's deliveries, newest first (status=dead: the dead letter)",
        query=WebhookDeliveryQuery,
        response=WebhookDeliveryPage,
        errors={400: "A parameter is not valid", **_NO_WEBHOOK},
    ),
    Route(
        "POST",
        "/api/webhooks/{name}/redeliver",
        redeliver_dead,
        "Send every dead delivery of the subscription again",
        response=WebhookRedelivered,
        errors=_NO_WEBHOOK,
    ),
    Route(
        "GET",
        "/api/webhooks/{name}/deliveries/{id}",
        get_delivery,
        "One delivery with its body",
        response=WebhookDelivery,
        errors={404: "No such delivery of this webhook"},
    ),
    Route(
        "POST",
        "/api/webhooks/{name}/deliveries/{id}/redeliver",
        redeliver,
        "Send a delivered or dead delivery again (same webhook-id) by a new run",
        response=WebhookRedelivered,
        errors={404: "No such delivery of this webhook", 409: "It is still being sent"},
    ),
]

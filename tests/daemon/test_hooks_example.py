"""Seed 001's webhook handler (tasks/webhook_handler.py) end to end: a signed request to the
daemon's webhook listener, configured as the module's docstring shows, becomes the event
``webhook.received`` and one run of ``handle-webhook``, which posts the order to the orders
API (a real local server, tests/support/fake_http.py) once, whatever the redeliveries and
retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from taskd import Client, RunStatus
from taskd.config import HookSource, HooksSettings, Settings
from tasks.webhook_handler import handle_webhook
from tests.support.fake_http import FakeHttp, Reply, fake_http
from tests.support.in_process import StartDaemon
from tests.support.waiting import wait_for_run

SECRET = "acme-signing-secret"
PAID = {"type": "order.paid", "data": {"order_id": "o-17", "amount": 4200}}


def acme(settings: Settings) -> None:
    """The configuration of the module's docstring."""
    settings.hooks = HooksSettings(
        listen="127.0.0.1:0",
        sources={
            "acme": HookSource(
                event="webhook.received",
                verify="hmac-sha256",
                header="x-signature",
                prefix="sha256=",
                timestamp_header="x-timestamp",
                id_header="x-webhook-id",
                secret_env="ACME_WEBHOOK_SECRET",
                headers=["x-event-type"],
            )
        },
    )


def signed(delivery: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "x-webhook-id": delivery,
        "x-timestamp": stamp,
        "x-signature": f"sha256={digest}",
        "x-event-type": "order",
        "content-type": "application/json",
    }


@pytest.fixture
async def orders(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeHttp]:
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    async with fake_http() as server:
        monkeypatch.setenv("ORDERS_API_URL", server.url("/orders/events"))
        yield server


async def send(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


async def test_a_signed_webhook_runs_handle_webhook_once(
    client: Client, start_daemon: StartDaemon, orders: FakeHttp
) -> None:
    # the orders API fails once (retry at once): the retry posts with the same idempotency key
    answers = [Reply(503, {"error": "busy"}, {"Retry-After": "0"}), {"ok": True}]
    orders.route("POST", "/orders/events", lambda request: answers.pop(0))
    body = json.dumps(PAID).encode()
    async with start_daemon([handle_webhook], acme, poll_interval=0.05) as daemon:
        assert daemon.hooks is not None and daemon.hooks.url is not None
        url = f"{daemon.hooks.url}/hooks/acme"
        status, answer = await send(url, body, signed("wh_1", body))
        assert status == 202, answer
        [run] = await client.list_runs(event="webhook.received")
        assert run.task_id == "handle-webhook"
        assert str(run.event_id) == answer["event_id"]
        # the sender retries (its own timeout): no second run
        status, again = await send(url, body, signed("wh_1", body))
        assert (status, again["event_id"]) == (200, answer["event_id"])
        # a forged request never reaches the task
        status, _ = await send(url, body, signed("wh_2", body, secret="guessed"))
        assert status == 401
        done = await wait_for_run(client, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == {"processed": True, "type": "order.paid", "order_id": "o-17"}
    assert [a.outcome for a in done.attempts] == ["failed", "completed"]
    posted = orders.seen("/orders/events")
    assert len(posted) == 2
    assert {p.headers["Idempotency-Key"] for p in posted} == {"acme:wh_1"}
    assert posted[-1].body == {
        "type": "order.paid",
        "order": {"order_id": "o-17", "amount": 4200},
        "source": "acme",
        "delivery": "wh_1",
    }
    assert [r.task_id for r in await client.list_runs(event="webhook.received")] == [
        "handle-webhook"
    ]


async def test_an_event_type_it_does_not_handle_completes_without_a_call(
    client: Client, start_daemon: StartDaemon, orders: FakeHttp
) -> None:
    body = json.dumps({"type": "customer.updated", "data": {}}).encode()
    async with start_daemon([handle_webhook], acme, poll_interval=0.05) as daemon:
        assert daemon.hooks is not None and daemon.hooks.url is not None
        status, _ = await send(f"{daemon.hooks.url}/hooks/acme", body, signed("wh_9", body))
        assert status == 202
        [run] = await client.list_runs(event="webhook.received")
        done = await wait_for_run(client, run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.output == {"processed": False, "type": "customer.updated", "order_id": None}
    assert orders.seen("/orders/events") == []

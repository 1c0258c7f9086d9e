"""Where issue 17's parts meet: status webhooks under taskd.testing's virtual clock (a test
author's ``drain()`` and ``advance()`` follow the deliveries the tester's daemon sends)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskd import Context, RunStatus, task
from taskd.testing import Tester
from tests.support.webhook_receiver import Delivery, webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@task(id="seams-echo")
async def echo(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return payload


async def test_drain_returns_once_the_runs_status_webhooks_are_delivered(
    taskd_tester: Tester,
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        await taskd_tester.client.create_webhook(
            "jobs", receiver.url, ["run.started", "run.completed"], secret=SECRET
        )
        result = await taskd_tester.run(echo, {"n": 1})
        assert result.status is RunStatus.COMPLETED

        # the run is over: its deliveries were due with it, and drain waits for them
        await taskd_tester.drain()
        assert receiver.events_of(result.id) == ["run.started", "run.completed"]


async def test_advance_stops_at_each_retry_of_a_delivery(taskd_tester: Tester) -> None:
    answers = iter([503, 503, 204])

    def answer(_: Delivery) -> web.Response:
        return web.Response(status=next(answers, 204))

    async with webhook_receiver(SECRET) as receiver:
        receiver.answer = answer
        taskd_tester.configure(
            lambda settings: setattr(settings.webhook_delivery, "retry_schedule", [600.0, 600.0])
        )
        await taskd_tester.client.create_webhook(
            "jobs", receiver.url, ["run.completed"], secret=SECRET
        )
        result = await taskd_tester.run(echo, {"n": 2})
        await taskd_tester.drain()
        assert [d.answered for d in receiver.received] == [503]

        # the retries are ten minutes apart: skipping 25 minutes sends both, each at its time
        await taskd_tester.advance(minutes=25)
        assert [d.answered for d in receiver.received] == [503, 503, 204]
        [delivery] = await taskd_tester.client.webhook_deliveries()
        assert delivery.run_id == result.id and delivery.status == "delivered"


async def test_a_delivery_run_records_the_daemons_version(taskd_tester: Tester) -> None:
    """taskd.webhook's runs are runs like any other: the version of the code that sent them
    (the daemon's deployment version), as `taskd runs list --version` filters by."""
    async with webhook_receiver(SECRET) as receiver:
        await taskd_tester.client.create_webhook(
            "jobs", receiver.url, ["run.completed"], secret=SECRET
        )
        result = await taskd_tester.run(echo, {"n": 3})
        await taskd_tester.drain()
        [delivery] = await taskd_tester.client.webhook_deliveries()
        assert delivery.delivery_run_id is not None
        sender = await taskd_tester.client.get_run(delivery.delivery_run_id)
        assert taskd_tester.daemon is not None
        assert sender.version == taskd_tester.daemon.version != ""
        assert result.run.version == taskd_tester.daemon.version

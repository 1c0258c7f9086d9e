"""Status webhooks end to end: a daemon sends each run event to a local receiver that verifies
every request with ``standardwebhooks`` as a user's would. Delays are skipped, not waited for:
a failed delivery's run is queued again at ``now() + delay``, and the test moves its run_at to
now (as time passing would)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from taskd import AbortRun, Client, Context, Retry, RunStatus, task
from taskd.config import Settings, WebhookConfig
from taskd.errors import WebhookExists, WebhookNotFound
from tests.support.in_process import StartDaemon
from tests.support.runs import insert_run
from tests.support.waiting import wait_for, wait_for_run
from tests.support.webhook_receiver import Receiver, webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
ALL = [
    "run.started",
    "run.completed",
    "run.failed",
    "run.canceled",
    "run.expired",
    "run.attempt_failed",
    "run.waiting",
]


@task(id="wh-ok")
async def ok(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return {"echo": payload}


@task(id="wh-flaky", retry=Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False))
async def flaky(payload: None, ctx: Context) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("transient")
    return "second time"


@task(id="wh-fails")
async def fails(payload: None, ctx: Context) -> None:
    raise AbortRun("no way")


async def skip_delivery_delays(db: asyncpg.Connection) -> None:
    """Time passes for the delivery runs waiting for their next try."""
    await db.execute(
        "UPDATE taskd.runs SET run_at = now() WHERE task_id = 'taskd.webhook'"
        " AND status = 'queued' AND run_at > now()"
    )


async def arrived(receiver: Receiver, run_id: uuid.UUID) -> list[str]:
    return receiver.events_of(run_id)


async def deliveries_settled(db: asyncpg.Connection) -> bool:
    return not await db.fetchval(
        "SELECT count(*) FROM taskd.webhook_deliveries WHERE status IN ('pending', 'sending')"
    )


async def test_every_event_arrives_signed_once_in_order(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        created = await client.create_webhook("jobs", receiver.url, ALL, secret=SECRET)
        assert created.secret == SECRET
        async with start_daemon([ok, flaky, fails], concurrency=4):
            done = await ok.trigger({"n": 1}, tags=["user:1"])
            retried = await flaky.trigger(None)
            failed = await fails.trigger(None)
            canceled = await ok.trigger({"n": 2}, delay="1h")
            await client.cancel(canceled)
            for run_id in (done, retried, failed):
                await wait_for_run(client, run_id)
            await wait_for(lambda: deliveries_settled(db))
        assert receiver.rejected == []
        assert receiver.events_of(done) == ["run.started", "run.completed"]
        assert receiver.events_of(retried) == [
            "run.started",
            "run.attempt_failed",
            "run.started",
            "run.completed",
        ]
        assert receiver.events_of(failed) == ["run.started", "run.failed"]
        assert receiver.events_of(canceled) == ["run.canceled"]
        # once each (by webhook-id), and every one recorded delivered
        ids = [d.webhook_id for d in receiver.received]
        assert len(ids) == len(set(ids)) == 9
        deliveries = await client.webhook_deliveries(webhook="jobs", limit=100)
        assert {str(d.id) for d in deliveries} == set(ids)
        assert {d.status for d in deliveries} == {"delivered"}
        assert all(d.attempts == 1 and d.last_status == 204 for d in deliveries)
        completed = next(
            d for d in receiver.received if d.run_id == str(done) and d.type == "run.completed"
        )
        data = completed.body["data"]
        assert data["status"] == "completed" and data["output"] == {"echo": {"n": 1}}
        assert data["tags"] == ["user:1"] and data["task"] == "wh-ok"
        # the version of the code that started the run, as the run records it
        assert data["version"] == (await client.get_run(done)).version is not None
        assert completed.headers["webhook-id"] == completed.webhook_id
        # the delivery runs are runs: listed, completed
        sender = (await client.webhook_delivery(completed.webhook_id)).delivery_run_id
        assert sender is not None
        run = await client.get_run(sender)
        assert run.task_id == "taskd.webhook" and run.status is RunStatus.COMPLETED


async def test_receiver_down_then_back_gets_everything(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        down = True
        receiver.answer = lambda _: web.Response(status=503 if down else 200)
        await client.create_webhook("jobs", receiver.url, ["run.started", "run.completed"])
        receiver.secrets = [SECRET]
        await client.rotate_webhook_secret("jobs", secret=SECRET, overlap=0)
        async with start_daemon([ok], concurrency=4):
            runs = [await ok.trigger({"n": n}) for n in range(5)]
            for run_id in runs:
                await wait_for_run(client, run_id)

            async def tried_twice() -> bool:
                # each first delivery failed, was tried again (time skipped), failed again
                await skip_delivery_delays(db)
                failed = Counter(d.webhook_id for d in receiver.received if d.answered == 503)
                return len(failed) == 5 and min(failed.values()) >= 2

            await wait_for(tried_twice)
            assert [d.type for d in receiver.received] == ["run.started"] * len(receiver.received)
            subscription = await client.get_webhook("jobs")
            assert subscription.failing_since is not None and subscription.enabled
            down = False

            async def all_delivered() -> bool:
                await skip_delivery_delays(db)
                return await deliveries_settled(db)

            await wait_for(all_delivered)
        for run_id in runs:
            assert receiver.events_of(run_id) == ["run.started", "run.completed"]
        delivered = [d for d in receiver.received if d.answered == 200]
        assert len(delivered) == 10 and len({d.webhook_id for d in delivered}) == 10
        assert (await client.get_webhook("jobs")).failing_since is None
        listed = await client.webhook_deliveries(webhook="jobs", status="delivered")
        assert len(listed) == 10 and all(d.attempts >= 3 for d in listed if d.seq == 1)


async def test_retry_after_of_a_429_is_honoured(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        answers = iter([web.Response(status=429, headers={"Retry-After": "7200"})])
        receiver.answer = lambda _: next(answers, web.Response(status=200))
        await client.create_webhook("jobs", receiver.url, ["run.completed"], secret=SECRET)
        async with start_daemon([ok]):
            await ok.trigger({})

            async def retry_delay() -> float | None:
                value: float | None = await db.fetchval(
                    "SELECT extract(epoch FROM run_at - now())::float8 FROM taskd.runs"
                    " WHERE task_id = 'taskd.webhook' AND status = 'queued' AND attempt = 1"
                )
                return value

            delay = await wait_for(retry_delay)
            assert 7000 < delay <= 7200  # not the schedule's 5 s
            await skip_delivery_delays(db)
            await wait_for(lambda: deliveries_settled(db))
        assert [d.answered for d in receiver.received] == [429, 200]
        assert receiver.received[0].webhook_id == receiver.received[1].webhook_id


async def test_secret_rotation_signs_with_both_then_the_new_one(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET, OTHER) as receiver:
        await client.create_webhook("jobs", receiver.url, ["run.completed"], secret=SECRET)
        async with start_daemon([ok]):
            first = await ok.trigger({})
            await wait_for(lambda: arrived(receiver, first))
            rotated = await client.rotate_webhook_secret("jobs", secret=OTHER)
            assert rotated.secret == OTHER and (await client.get_webhook("jobs")).rotating
            second = await ok.trigger({})
            await wait_for(lambda: arrived(receiver, second))
            # the overlap ends
            await db.execute(
                "UPDATE taskd.webhook_subscriptions SET previous_secret_expires_at = now()"
            )
            third = await ok.trigger({})
            await wait_for(lambda: arrived(receiver, third))
        by_run = {d.run_id: d for d in receiver.received}
        assert receiver.verified_by[by_run[str(first)].webhook_id] == {SECRET}
        assert receiver.verified_by[by_run[str(second)].webhook_id] == {SECRET, OTHER}
        assert len(by_run[str(second)].headers["webhook-signature"].split(" ")) == 2
        assert receiver.verified_by[by_run[str(third)].webhook_id] == {OTHER}
        made = await client.rotate_webhook_secret("jobs")
        assert made.secret.startswith("whsec_") and made.secret != OTHER


def short_schedule(settings: Settings) -> None:
    settings.webhook_delivery.retry_schedule = [0.05, 0.05]


async def test_dead_letter_disable_after_failing_and_redelivery(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        broken = True
        receiver.answer = lambda _: web.Response(status=500 if broken else 200, text="oops")
        await client.create_webhook("jobs", receiver.url, ["run.completed"], secret=SECRET)
        async with start_daemon([ok], short_schedule):
            first = await ok.trigger({})

            async def dead() -> list[Any]:
                return await client.webhook_deliveries(status="dead")

            (letter,) = await wait_for(dead)
            assert letter.run_id == first and letter.attempts == 3
            assert letter.last_status == 500 and "HTTP 500: oops" in (letter.last_error or "")
            assert (await client.get_webhook("jobs")).dead == 1
            # failing for more than a day (time skipped): the next failure disables it
            await db.execute(
                "UPDATE taskd.webhook_subscriptions SET failing_since = now() - interval '25h'"
            )
            await ok.trigger({})
            disabled = await wait_for(lambda: _disabled(client, "jobs"), timeout=30)
            assert disabled.startswith("its deliveries have failed since ")
            assert "HTTP 500" in disabled
            # disabled: no more events captured
            await wait_for_run(client, await ok.trigger({}))
            assert len(await client.webhook_deliveries()) == 2
            broken = False
            await client.resume_webhook("jobs")
            again = await client.redeliver_dead_webhooks("jobs")
            assert len(again) == 2
            await wait_for(lambda: deliveries_settled(db))
            with pytest.raises(ValueError, match=r"is (sending|pending): it is being sent"):
                redone = await client.redeliver_webhook(letter.id)
                await client.redeliver_webhook(letter.id)
            await wait_for(lambda: deliveries_settled(db))
            assert redone != letter.delivery_run_id
        statuses = {d.status for d in await client.webhook_deliveries()}
        assert statuses == {"delivered"}
        ok_ids = [d.webhook_id for d in receiver.received if d.answered == 200]
        assert str(letter.id) in ok_ids


async def _disabled(client: Client, name: str) -> str | None:
    subscription = await client.get_webhook(name)
    return subscription.disabled_reason if not subscription.enabled else None


async def test_410_gone_disables_at_once(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        receiver.answer = lambda _: web.Response(status=410)
        await client.create_webhook("jobs", receiver.url, ["run.completed"], secret=SECRET)
        async with start_daemon([ok]):
            await ok.trigger({})
            reason = await wait_for(lambda: _disabled(client, "jobs"))
            await wait_for(lambda: deliveries_settled(db))
        assert "410 Gone" in reason
        assert len(receiver.received) == 1
        (delivery,) = await client.webhook_deliveries()
        assert delivery.status == "dead"


async def test_config_webhooks_synced_at_start(
    client: Client,
    db: asyncpg.Connection,
    start_daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_WEBHOOK_SECRET", SECRET)
    async with webhook_receiver(SECRET) as receiver:

        def configure(settings: Settings) -> None:
            settings.webhooks = [
                WebhookConfig(
                    name="jobs",
                    url=receiver.url,
                    events=["run.completed", "run.failed"],
                    tasks=["wh-fails"],
                    secret_env="JOBS_WEBHOOK_SECRET",
                )
            ]

        async with start_daemon([ok, fails], configure):
            (listed,) = await client.webhooks()
            assert listed.source == "config" and listed.tasks == ["wh-fails"]
            failed = await fails.trigger(None)
            await wait_for_run(client, await ok.trigger({}))
            await wait_for(lambda: arrived(receiver, failed))
            await wait_for(lambda: deliveries_settled(db))
        assert [d.type for d in receiver.received] == ["run.failed"]
        assert receiver.received[0].body["data"]["error"]["message"] == "no way"


async def test_client_errors(client: Client) -> None:
    await client.create_webhook("jobs", "http://127.0.0.1:9/x", ["run.failed"])
    with pytest.raises(WebhookExists):
        await client.create_webhook("jobs", "http://127.0.0.1:9/x", ["run.failed"])
    with pytest.raises(ValueError, match="unknown webhook event"):
        await client.create_webhook("other", "http://127.0.0.1:9/x", ["run.done"])
    with pytest.raises(ValueError, match="http"):
        await client.create_webhook("other", "ftp://x", ["run.failed"])
    with pytest.raises(ValueError, match="whsec_"):
        await client.create_webhook("other", "http://x", ["run.failed"], secret="plain")
    for call in (client.pause_webhook, client.resume_webhook, client.delete_webhook):
        with pytest.raises(WebhookNotFound):
            await call("nope")
    with pytest.raises(WebhookNotFound):
        await client.redeliver_webhook(uuid.uuid4())
    await client.pause_webhook("jobs")
    assert (await client.get_webhook("jobs")).paused
    await client.delete_webhook("jobs")
    assert await client.webhooks() == []


async def test_a_paused_webhooks_queued_deliveries_end_dead_and_redeliverable(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon
) -> None:
    async with webhook_receiver(SECRET) as receiver:
        await client.create_webhook("jobs", receiver.url, ["run.completed"], secret=SECRET)
        # a run completed while no daemon runs: its delivery is queued, then the webhook paused
        run_id = await insert_run(db, task_id="elsewhere")
        await db.execute("UPDATE taskd.runs SET status = 'completed' WHERE id = $1", run_id)
        await client.pause_webhook("jobs")
        async with start_daemon([ok]):
            (dead,) = await wait_for(lambda: client.webhook_deliveries(status="dead"))
            assert dead.last_error == "webhook 'jobs' is paused" and dead.attempts == 0
            assert receiver.received == []
            await client.resume_webhook("jobs")
            await client.redeliver_webhook(dead.id)
            await wait_for(lambda: deliveries_settled(db))
        assert receiver.events_of(run_id) == ["run.completed"]

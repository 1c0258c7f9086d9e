"""Status webhooks across a SIGKILL of the daemon in the middle of a delivery.

200 runs of ``crash.work``, a subscription to every event, a local receiver verifying each
request with ``standardwebhooks``. The receiver holds one delivery's request unanswered (the
daemon has sent it and waits for the answer); the daemon is SIGKILLed right then and
restarted. Every event of every run then arrives (at least once: the held one is sent again,
same webhook-id), verified, and in order per run: the first arrivals of a run's webhook-ids
follow their seq. Nothing is lost, nothing is pending."""

from __future__ import annotations

from collections import defaultdict

import anyio
import asyncpg
import pytest

from taskd import Client
from tests.support.daemon_process import create_effects_table, daemons
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Delivery, webhook_receiver

RUNS = 200
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EVENTS = ["run.started", "run.completed", "run.attempt_failed", "run.failed", "run.canceled"]

pytestmark = pytest.mark.timeout(120)


async def test_every_event_once_in_order_across_a_sigkill_mid_delivery(
    database: str, client: Client, db: asyncpg.Connection
) -> None:
    await create_effects_table(database)
    held: list[str] = []
    arrived_held = anyio.Event()
    never = anyio.Event()

    async def hold_the_hundredth(delivery: Delivery) -> None:
        if not held and len(receiver.received) >= 100:
            held.append(delivery.webhook_id)
            arrived_held.set()
            await never.wait()  # unanswered until the daemon is gone

    async with webhook_receiver(SECRET) as receiver, daemons() as fleet:
        receiver.before_answer = hold_the_hundredth
        await client.create_webhook("jobs", receiver.url, EVENTS, secret=SECRET)
        env = {"TASKD_WEBHOOK_DELIVERY__CONCURRENCY": "20"}
        first = await fleet.start(database, **env)
        await first.ready()
        await client.batch_trigger("crash.work", [{"n": n} for n in range(RUNS)])
        with anyio.fail_after(60):
            await arrived_held.wait()
        await first.kill()  # the held delivery's run is executing on it
        second = await fleet.start(database, **env)
        await second.ready()

        async def settled() -> bool:
            open_deliveries = await db.fetchval(
                "SELECT count(*) FROM taskd.webhook_deliveries"
                " WHERE status IN ('pending', 'sending')"
            )
            finished = await db.fetchval(
                "SELECT count(*) FROM taskd.runs WHERE task_id = 'crash.work'"
                " AND status = 'completed'"
            )
            return open_deliveries == 0 and finished == RUNS

        await wait_for(settled, timeout=90)
        never.set()  # the held request's handler ends (its client is long gone)
        assert await second.stop() == 0

    assert receiver.rejected == []
    rows = await db.fetch(
        "SELECT id::text, run_id::text, seq, event, status FROM taskd.webhook_deliveries"
        " ORDER BY run_id, seq"
    )
    assert {r["status"] for r in rows} == {"delivered"}
    expected: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        expected[row["run_id"]].append(row["id"])
    assert len(expected) == RUNS
    assert all(len(ids) >= 2 for ids in expected.values())  # started and completed at least
    # every delivery arrived, verified, and each run's in the order of its seq
    first_arrivals: dict[str, list[str]] = defaultdict(list)
    for webhook_id, delivery in receiver.unique().items():
        first_arrivals[delivery.run_id].append(webhook_id)
    assert first_arrivals == expected
    # the held delivery was sent again after the kill, with the same webhook-id
    (held_id,) = held
    assert held_id in receiver.unique()
    events_of_run = {r["id"]: r["event"] for r in rows}
    for ids in expected.values():
        assert events_of_run[ids[0]] == "run.started"
        assert events_of_run[ids[-1]] == "run.completed"

"""The cron and event examples (tasks/daily_report.py, tasks/user_registration.py), end to end.

As in test_dump_example.py nothing is patched: the tasks read their API URLs from the
environment at call time, so a real HTTP server on 127.0.0.1 (tests/support/fake_http.py)
stands in for the webhook, the email API and the mailing-list API, and in-process daemons run
the tasks with their production retry policies.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from taskd import Client, Run, RunStatus
from tasks.daily_report import daily_report
from tasks.user_registration import add_to_mailing_list, user_registration
from tests.support.fake_http import FakeHttp, Reply, Request, fake_http
from tests.support.in_process import StartDaemon
from tests.support.runs import each, insert_runs
from tests.support.waiting import wait_for, wait_for_run

FIRE_TIME = datetime(2025, 1, 2, 9, 0, tzinfo=UTC)
SCHEDULED_RUN = {
    "timestamp": FIRE_TIME.isoformat(),
    "last_timestamp": (FIRE_TIME - timedelta(days=1)).isoformat(),
    "schedule_id": "daily-report",
    "timezone": "UTC",
}
ADA = {"user_id": "u-1", "email": "ada@example.com", "name": "Ada"}


@dataclass
class FakeApis:
    """One server for the three APIs. Each path answers its scripted replies, then 200.

    Like a real email API, a 2xx answer is remembered by ``Idempotency-Key``: a request
    repeating a key gets the same answer and is not delivered again.
    """

    server: FakeHttp
    script: dict[str, list[Reply]] = field(default_factory=dict)
    delivered: list[Request] = field(default_factory=list)
    _answers: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def seen(self, path: str) -> list[Request]:
        return self.server.seen(path)

    def answer(self, request: Request) -> Reply | Any:
        pending = self.script.get(request.path)
        if pending:
            return pending.pop(0)
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._answers:
            return self._answers[key]
        self.delivered.append(request)
        answer = {"id": f"msg-{len(self.delivered)}"}
        if key is not None:
            self._answers[key] = answer
        return answer


@pytest.fixture
async def apis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeApis]:
    async with fake_http() as server:
        fake = FakeApis(server)
        server.route("POST", "/{tail:.*}", fake.answer)
        monkeypatch.setenv("REPORT_WEBHOOK_URL", server.url("/hooks/report"))
        monkeypatch.setenv("EMAIL_API_URL", server.url("/email/send"))
        monkeypatch.setenv("MAILING_LIST_API_URL", server.url("/lists/members"))
        for name in ("REPORT_WEBHOOK_TOKEN", "EMAIL_API_KEY", "MAILING_LIST_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        yield fake


# the daily report -------------------------------------------------------------------------------


async def add_history(db: asyncpg.Connection) -> None:
    """Finished runs around the reported day: only those in [fire time - 24 h, fire time)."""
    day = FIRE_TIME - timedelta(days=1)
    rows = [
        ("player-dump", "completed", day),  # the window's first instant counts
        ("player-dump", "completed", day + timedelta(hours=3)),
        ("player-dump", "failed", day + timedelta(hours=4)),
        ("team-dump", "failed", day + timedelta(hours=5)),
        ("team-dump", "failed", day + timedelta(hours=6)),
        ("team-dump", "canceled", FIRE_TIME - timedelta(microseconds=1)),
        ("player-dump", "failed", day - timedelta(seconds=1)),  # the day before: not counted
        ("player-dump", "completed", FIRE_TIME),  # the next day's: not counted
    ]
    await insert_runs(
        db,
        len(rows),
        task_id=each([task_id for task_id, _, _ in rows]),
        status=each([status for _, status, _ in rows]),
        created_at=each([at for _, _, at in rows]),
        finished_at=each([at for _, _, at in rows]),
    )


EXPECTED_REPORT = {
    "day": "2025-01-01",
    "window_start": "2025-01-01T09:00:00Z",
    "window_end": "2025-01-02T09:00:00Z",
    "total": 6,
    "by_status": {"canceled": 1, "completed": 2, "failed": 3},
    "failed_by_task": {"team-dump": 2, "player-dump": 1},
    "schedule_id": "daily-report",
}


async def test_daily_report_posts_the_days_counts(
    client: Client, db: asyncpg.Connection, start_daemon: StartDaemon, apis: FakeApis
) -> None:
    await add_history(db)
    async with start_daemon([daily_report], poll_interval=0.05):
        run_id = await client.trigger("daily-report", SCHEDULED_RUN)
        run = await wait_for_run(client, run_id, timeout=5)

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.attempt == 1
    assert run.output == EXPECTED_REPORT
    [post] = apis.seen("/hooks/report")
    assert post.body["report"] == EXPECTED_REPORT
    assert post.body["text"] == (
        "taskd daily report for 2025-01-01: 6 runs (1 canceled, 2 completed, 3 failed);"
        " failed: team-dump x2, player-dump x1"
    )
    assert post.headers["Idempotency-Key"] == f"{run_id}:post-report"
    assert "Authorization" not in post.headers


async def test_daily_report_retries_a_webhook_that_answers_503(
    client: Client,
    start_daemon: StartDaemon,
    apis: FakeApis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPORT_WEBHOOK_TOKEN", "hook-token")
    apis.script["/hooks/report"] = [Reply(503, {"error": "maintenance"})]
    async with start_daemon([daily_report], poll_interval=0.05):
        run_id = await client.trigger("daily-report", SCHEDULED_RUN)
        run = await wait_for_run(client, run_id, timeout=5)

    assert run.status is RunStatus.COMPLETED, run.error
    assert [a.outcome for a in run.attempts] == ["failed", "completed"]
    error = run.attempts[0].error
    assert error is not None and error["type"] == "WebhookError"
    assert "HTTP 503" in error["message"]
    first, second = apis.seen("/hooks/report")
    assert first.body == second.body and second.body["report"]["total"] == 0
    for post in (first, second):
        assert post.headers["Idempotency-Key"] == f"{run_id}:post-report"
        assert post.headers["Authorization"] == "Bearer hook-token"
    # the policy's first backoff (1 s) was waited
    assert (run.attempts[1].started_at - run.attempts[0].finished_at).total_seconds() >= 1.0


async def test_daily_report_refused_by_the_webhook_fails_without_retries(
    client: Client, start_daemon: StartDaemon, apis: FakeApis
) -> None:
    apis.script["/hooks/report"] = [Reply(400, {"error": "bad channel"})]
    async with start_daemon([daily_report], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger("daily-report", SCHEDULED_RUN))

    assert run.status is RunStatus.FAILED and len(run.attempts) == 1
    assert run.error is not None and run.error["type"] == "AbortRun"
    assert "HTTP 400" in run.error["message"] and "bad channel" in run.error["message"]


async def test_daily_report_without_a_webhook_is_only_returned(
    client: Client,
    start_daemon: StartDaemon,
    apis: FakeApis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("REPORT_WEBHOOK_URL")
    caplog.set_level(logging.INFO, logger="taskd.task")
    async with start_daemon([daily_report], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger("daily-report", SCHEDULED_RUN))

    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output["total"] == 0 and run.output["day"] == "2025-01-01"
    assert apis.requests == []
    assert any("REPORT_WEBHOOK_URL is not set" in r.getMessage() for r in caplog.records)


# user registration ------------------------------------------------------------------------------


async def waiting(client: Client, run_id: uuid.UUID) -> Run | None:
    run = await client.get_run(run_id)
    return run if run.status is RunStatus.WAITING else None


async def test_user_registered_emails_now_waits_a_day_then_subscribes(
    client: Client,
    db: asyncpg.Connection,
    start_daemon: StartDaemon,
    apis: FakeApis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_API_KEY", "email-key")
    async with start_daemon(
        [user_registration, add_to_mailing_list], poll_interval=0.05, concurrency=1
    ):
        event_id = await client.send_event("user.registered", ADA)
        [registration] = await client.list_runs(event="user.registered")
        assert registration.task_id == "user-registration"
        assert registration.event_id == event_id
        run = await wait_for(lambda: waiting(client, registration.id))

        # the email went; the run sleeps a day in the database, its slot free
        [email] = apis.seen("/email/send")
        assert email.body == {
            "to": "ada@example.com",
            "template": "welcome",
            "data": {"name": "Ada"},
        }
        assert email.headers["Idempotency-Key"] == f"{run.id}:send-welcome-email"
        assert email.headers["Authorization"] == "Bearer email-key"
        assert abs(run.run_at - datetime.now(UTC) - timedelta(hours=24)) < timedelta(seconds=5)
        assert run.worker_id is None
        assert apis.seen("/lists/members") == [], "not before its time"
        other = await client.trigger("add-to-mailing-list", {**ADA, "user_id": "u-9"})
        assert (await wait_for_run(client, other)).status is RunStatus.COMPLETED

        # A day passes (the database's times for this run are moved).
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", run.id)
        await db.execute(
            "UPDATE taskd.steps SET result = to_jsonb((now() - interval '1 second')::text)"
            " WHERE run_id = $1 AND name = 'wait:1'",
            run.id,
        )
        done = await wait_for_run(client, run.id, timeout=5)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == {"user_id": "u-1", "welcome_email_id": "msg-1", "subscribed": True}
    member = next(m for m in apis.seen("/lists/members") if m.body["user_id"] == "u-1")
    assert member.body == {"email": "ada@example.com", "name": "Ada", "user_id": "u-1"}
    assert member.headers["Idempotency-Key"] == f"{run.id}:add-to-mailing-list"
    assert "Authorization" not in member.headers
    assert len(apis.seen("/email/send")) == 1, "the welcome email went once"
    assert [s.name for s in done.steps] == ["welcome-email", "wait:1", "mailing-list"]


async def test_follow_up_triggered_directly_posts_to_the_mailing_list(
    client: Client, start_daemon: StartDaemon, apis: FakeApis
) -> None:
    async with start_daemon([add_to_mailing_list], poll_interval=0.05):
        run = await wait_for_run(client, await client.trigger("add-to-mailing-list", ADA))
    assert run.status is RunStatus.COMPLETED, run.error
    [member] = apis.seen("/lists/members")
    assert member.body["email"] == "ada@example.com"


async def test_email_api_outage_is_retried_with_the_same_idempotency_key(
    client: Client, start_daemon: StartDaemon, apis: FakeApis
) -> None:
    apis.script["/email/send"] = [Reply(503, {"error": "busy"}, {"Retry-After": "0"})]
    async with start_daemon([user_registration, add_to_mailing_list], poll_interval=0.05):
        await client.send_event("user.registered", ADA)
        [registration] = await client.list_runs(event="user.registered")
        run = await wait_for(lambda: waiting(client, registration.id), timeout=5)

    assert [a.outcome for a in run.attempts] == ["failed"]  # then the email went: waiting
    assert run.attempts[0].error is not None and run.attempts[0].error["type"] == "ApiError"
    keys = [r.headers["Idempotency-Key"] for r in apis.seen("/email/send")]
    assert keys == [f"{run.id}:send-welcome-email"] * 2
    [email_step] = [s for s in run.steps if s.name == "welcome-email"]
    assert email_step.status == "completed" and email_step.run_attempt == 2


async def test_a_registration_without_a_valid_email_fails_at_once(
    client: Client, start_daemon: StartDaemon, apis: FakeApis
) -> None:
    async with start_daemon([user_registration, add_to_mailing_list], poll_interval=0.05):
        await client.send_event("user.registered", {"user_id": "u-2", "email": "nope"})
        [registration] = await wait_for(lambda: client.list_runs(event="user.registered"))
        run = await wait_for_run(client, registration.id)

    assert run.status is RunStatus.FAILED and len(run.attempts) == 1
    assert run.error is not None and run.error["type"] == "ValidationError"
    assert apis.requests == []

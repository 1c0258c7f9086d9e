"""taskd.testing on the tasks/ examples, as a task author uses it: the ``taskd_tester`` fixture
(a database of the test's own, an in-process daemon, the virtual clock), ``tester.run``,
``tester.advance``. Seed 001's transient failure (attempts == 2) and seed 003's 24-hour
registration workflow run in well under a second: the backoff and the day are skipped.

Nothing is patched: the tasks read their API URLs from the environment, and a real local HTTP
server (tests/support/fake_http.py) answers for the webhook, the email and mailing-list APIs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from taskd import RunStatus
from taskd.testing import Tester
from tasks.daily_report import daily_report
from tasks.user_registration import add_to_mailing_list, user_registration
from tests.support.fake_http import FakeHttp, Reply, Request, fake_http

FIRE_TIME = datetime(2025, 1, 2, 9, 0, tzinfo=UTC)
SCHEDULED_RUN = {
    "timestamp": FIRE_TIME.isoformat(),
    "schedule_id": "daily-report",
    "timezone": "UTC",
}
ADA = {"user_id": "u-1", "email": "ada@example.com", "name": "Ada"}


@dataclass
class Apis:
    """The webhook, the email API and the mailing-list API on one server: each path answers
    its scripted replies first, then 200 with a message id."""

    server: FakeHttp
    script: dict[str, list[Reply]] = field(default_factory=dict)
    delivered: int = 0

    def answer(self, request: Request) -> Reply | dict[str, str]:
        pending = self.script.get(request.path)
        if pending:
            return pending.pop(0)
        self.delivered += 1
        return {"id": f"msg-{self.delivered}"}

    def seen(self, path: str) -> list[Request]:
        return self.server.seen(path)


@pytest.fixture
async def apis(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Apis]:
    async with fake_http() as server:
        apis = Apis(server)
        server.route("POST", "/{tail:.*}", apis.answer)
        monkeypatch.setenv("REPORT_WEBHOOK_URL", server.url("/hooks/report"))
        monkeypatch.setenv("EMAIL_API_URL", server.url("/email/send"))
        monkeypatch.setenv("MAILING_LIST_API_URL", server.url("/lists/members"))
        for name in ("REPORT_WEBHOOK_TOKEN", "EMAIL_API_KEY", "MAILING_LIST_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        yield apis


async def test_seed_001_a_transient_failure_is_retried_once(
    taskd_tester: Tester, apis: Apis
) -> None:
    apis.script["/hooks/report"] = [Reply(503, {"error": "maintenance"})]

    result = await taskd_tester.run(daily_report, SCHEDULED_RUN)

    assert result.status is RunStatus.COMPLETED, result.error
    assert len(result.attempts) == 2
    first, second = result.attempts
    assert first.error is not None and "HTTP 503" in first.error["message"]
    # the policy's backoff (1 s and more) was waited on the virtual clock, not in the test
    assert (second.started_at - first.finished_at) >= timedelta(seconds=1)
    assert result.output["day"] == "2025-01-01"
    assert len(apis.seen("/hooks/report")) == 2


async def test_seed_003_registration_emails_now_and_subscribes_a_day_later(
    taskd_tester: Tester, apis: Apis
) -> None:
    await taskd_tester.serve(user_registration, add_to_mailing_list)
    await taskd_tester.send_event("user.registered", ADA)
    await taskd_tester.drain()

    [run] = await taskd_tester.assert_triggered(user_registration, payload=ADA)
    run = await taskd_tester.client.get_run(run.id)
    assert run.status is RunStatus.WAITING
    assert len(apis.seen("/email/send")) == 1 and apis.seen("/lists/members") == []

    await taskd_tester.advance(hours=23, minutes=59)
    assert (await taskd_tester.client.get_run(run.id)).status is RunStatus.WAITING
    assert apis.seen("/lists/members") == []

    await taskd_tester.advance(minutes=1)
    result = await taskd_tester.result(run.id, skip_time=False)
    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == {"user_id": "u-1", "welcome_email_id": "msg-1", "subscribed": True}
    assert [step.name for step in result.steps] == ["welcome-email", "wait:1", "mailing-list"]
    assert len(apis.seen("/email/send")) == 1, "the welcome email went once"
    [member] = apis.seen("/lists/members")
    assert member.body["email"] == "ada@example.com"
    assert result.messages[0] == "welcoming u-1" and result.messages[-1] == "subscribed u-1"


async def test_seed_003_registration_run_to_its_end(taskd_tester: Tester, apis: Apis) -> None:
    started = taskd_tester.now()

    result = await taskd_tester.run(user_registration, ADA)

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output["subscribed"] is True
    assert taskd_tester.now() - started >= timedelta(hours=24)
    assert len(apis.seen("/lists/members")) == 1

"""[[webhooks]] tables and [webhook_delivery]: a bad value stops start-up with one line that
names the key; a secret is never echoed; parts of webhook delivery that need no server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from taskd.config import WebhookConfig, load_settings
from taskd.errors import ConfigError
from taskd.store.webhooks import Outgoing
from taskd.webhook_delivery import headers_for, parse_retry_after
from taskd.webhook_rules import check_secret, new_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GOOD = f"""
[[webhooks]]
name = "jobs"
url = "https://app.example.com/hook"
events = ["run.completed", "run.failed"]
tasks = ["letters"]
secret = "{SECRET}"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "taskd.toml"
    path.write_text(text)
    return load_settings(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_good_table(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        webhooks=[{"name": "a", "url": "http://x/h", "events": ["run.failed"], "secret": SECRET}],
    )
    (hook,) = settings.webhooks
    assert hook.tasks is None and hook.enabled and hook.resolved_secret() == SECRET
    loaded = load(tmp_path, GOOD)
    assert loaded.webhooks[0].tasks == ["letters"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('events = ["run.completed", "run.failed"]', 'events = ["run.done"]'),
            "webhooks.0.events",
        ),
        (('events = ["run.completed", "run.failed"]', "events = []"), "non-empty list"),
        (('url = "https://app.example.com/hook"', 'url = "ftp://x"'), "http:// or https://"),
        (('name = "jobs"', 'name = "no spaces"'), "webhooks.0.name"),
        ((f'secret = "{SECRET}"', 'secret = "plain"'), "must start with whsec_"),
        ((f'secret = "{SECRET}"', ""), "needs secret or secret_env"),
        ((f'secret = "{SECRET}"', f'secret = "{SECRET}"\nsecret_env = "X"'), "one of them"),
        (('tasks = ["letters"]', "tasks = []"), "webhooks.0.tasks"),
        (('tasks = ["letters"]', 'colour = "red"'), "unknown key"),
    ],
)
def test_bad_tables_name_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    message = error(tmp_path, GOOD.replace(*change))
    assert message.startswith("config error: webhooks.0") and expected in message
    assert "plain" not in message  # the secret is not echoed


def test_names_are_unique_and_delivery_settings_checked(tmp_path: Path) -> None:
    assert "given twice: jobs" in error(tmp_path, GOOD + GOOD)
    assert "webhook_delivery.timeout" in error(tmp_path, "[webhook_delivery]\ntimeout = 0")
    assert "retry_schedule" in error(tmp_path, '[webhook_delivery]\nretry_schedule = ["soon"]')


def test_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = WebhookConfig(name="a", url="http://x/h", events=["run.failed"], secret_env="HOOK_S")
    monkeypatch.delenv("HOOK_S", raising=False)
    with pytest.raises(ConfigError, match="secret_env HOOK_S is not set"):
        hook.resolved_secret()
    monkeypatch.setenv("HOOK_S", "whsec_short")
    with pytest.raises(ConfigError, match=r"\$HOOK_S"):
        hook.resolved_secret()
    monkeypatch.setenv("HOOK_S", SECRET)
    assert hook.resolved_secret() == SECRET


def test_made_secrets_are_valid_and_headers_verify() -> None:
    made = new_secret()
    assert check_secret(made) == made and made != new_secret()
    body = b'{"type": "run.completed", "data": {"id": "x"}}'
    outgoing = Outgoing(
        id=uuid.uuid4(),
        body=body,
        subscription="jobs",
        url="http://x/h",
        secrets=(SECRET, made),
        refused=None,
    )
    headers = headers_for(outgoing, datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, made):
        assert Webhook(secret).verify(body, headers) == {
            "type": "run.completed",
            "data": {"id": "x"},
        }
    assert headers["webhook-id"] == str(outgoing.id)


def test_retry_after_seconds_or_date() -> None:
    now = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Wed, 02 Dec 2026 08:10:00 GMT", now) == 600
    assert parse_retry_after("Wed, 02 Dec 2026 07:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("1e12", now) == timedelta(days=7).total_seconds()

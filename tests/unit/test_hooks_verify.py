"""The webhook listener's parts that start nothing: the ``[hooks]`` configuration and its
errors, the three signature schemes (Standard Webhooks checked against the reference package's
own signatures and verifier), the payload a request becomes, the refusals' rate-limited log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from taskd.config import HookSource, HooksSettings, load_settings
from taskd.errors import ConfigError
from taskd.hooks.intake import delivery_id, event_payload, idempotency_key, parse_body
from taskd.hooks.refusals import RefusalLog
from taskd.hooks.verify import Refused, verifier_for

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BODY = b'{"type":"invoice.paid","data":{"id":"in_1"}}'


def config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "taskd.toml"
    path.write_text(text)
    return load_settings(path)


def test_sources_in_either_toml_form_get_their_name_and_default_event(tmp_path: Path) -> None:
    settings = config(
        tmp_path,
        """
[hooks]
listen = "0.0.0.0:8788"
[hooks.sources.github]
verify = "hmac-sha256"
header = "X-Hub-Signature-256"
prefix = "sha256="
id_header = "X-GitHub-Delivery"
secret_env = "GH_SECRET"
headers = ["X-GitHub-Event"]
""",
    )
    github = settings.hooks.sources["github"]
    assert (github.name, github.event, github.headers) == (
        "github",
        "webhook.github",
        ["x-github-event"],
    )
    assert settings.hooks.max_body == 1_048_576
    assert github.tolerance == 300.0
    listed = config(
        tmp_path,
        """
[hooks]
listen = "127.0.0.1:8788"
[[hooks.sources]]
name = "billing"
event = "payments.stripe"
verify = "stripe"
secret_env = "STRIPE_SECRET"
tolerance = "10m"
""",
    )
    billing = listed.hooks.sources["billing"]
    assert (billing.event, billing.verify, billing.tolerance) == (
        "payments.stripe",
        "stripe",
        600.0,
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[hooks.sources.x]\nverify = "md5"\nsecret = "s"',
            "config error: hooks.sources.x.verify (TASKD_HOOKS__SOURCES__X__VERIFY): Input should "
            "be 'standard-webhooks', 'hmac-sha256' or 'stripe' (got 'md5')",
        ),
        (
            '[hooks.sources.x]\nverify = "stripe"',
            "config error: hooks.sources.x (TASKD_HOOKS__SOURCES__X): give exactly one of secret "
            "and secret_env",
        ),
        (
            '[hooks.sources.x]\nverify = "hmac-sha256"\nsecret_env = "S"',
            "config error: hooks.sources.x (TASKD_HOOKS__SOURCES__X): verify = hmac-sha256 needs "
            "header (the signature's header)",
        ),
        (
            '[hooks.sources.x]\nverify = "stripe"\nsecret_env = "S"\nprefix = "sha256="',
            "config error: hooks.sources.x (TASKD_HOOKS__SOURCES__X): prefix: only for verify = "
            "hmac-sha256",
        ),
        (
            '[hooks]\nlisten = "127.0.0.1:8788"',
            "config error: hooks (TASKD_HOOKS): hooks.listen is set but no "
            "[hooks.sources.NAME] is configured",
        ),
        (
            '[hooks.sources."a/b"]\nverify = "stripe"\nsecret_env = "S"',
            "config error: hooks (TASKD_HOOKS): source name 'a/b': letters, digits, '_', '.', "
            "'-' (at most 64)",
        ),
        (
            '[hooks]\nlisten = "8788"',
            "config error: hooks.listen (TASKD_HOOKS__LISTEN): expected host:port, e.g. "
            "127.0.0.1:8787 (got '8788')",
        ),
    ],
)
def test_bad_hooks_config_is_one_line_naming_the_key(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, toml)
    assert str(raised.value) == message


def test_a_secret_is_never_echoed_in_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, '[hooks.sources.x]\nverify = "stripe"\nsecret = 12345')
    assert "12345" not in str(raised.value)
    assert "hooks.sources.x.secret" in str(raised.value)


def test_secrets_are_read_when_the_listener_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    source = HooksSettings(
        sources={"std": HookSource(verify="standard-webhooks", secret_env="STD_SECRET")}
    ).sources["std"]
    monkeypatch.delenv("STD_SECRET", raising=False)
    with pytest.raises(ConfigError, match="STD_SECRET is not set"):
        verifier_for(source)
    monkeypatch.setenv("STD_SECRET", "not base64!")
    with pytest.raises(ConfigError, match="a Standard Webhooks secret is base64"):
        verifier_for(source)
    monkeypatch.setenv("STD_SECRET", SECRET)
    assert verifier_for(source).key == base64.b64decode(SECRET.removeprefix("whsec_"))


def standard(**changes: Any) -> Any:
    return verifier_for(
        HooksSettings(
            sources={"std": HookSource(verify="standard-webhooks", secret=SECRET, **changes)}
        ).sources["std"]
    )


def test_standard_webhooks_signatures_of_the_reference_package_verify() -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    signature = Webhook(SECRET).sign("msg_1", at, BODY.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": signature,
    }
    assert standard().verify(BODY, headers, NOW) == "msg_1"
    # a rotation: the sender signs with the old and the new secret, space-separated
    other = Webhook("whsec_" + base64.b64encode(b"old secret").decode()).sign(
        "msg_1", at, BODY.decode()
    )
    assert standard().verify(BODY, {**headers, "webhook-signature": f"{other} {signature}"}, NOW)
    # at the present moment, the reference verifier and this one agree on the same request
    now = time.time()
    current = {
        "webhook-id": "msg_3",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(SECRET).sign(
            "msg_3", datetime.fromtimestamp(now, UTC), BODY.decode()
        ),
    }
    assert Webhook(SECRET).verify(BODY, current) == {"type": "invoice.paid", "data": {"id": "in_1"}}
    assert standard().verify(BODY, current, now) == "msg_3"


@pytest.mark.parametrize(
    ("change", "result", "reason"),
    [
        ({"webhook-signature": "v1,AAAA"}, "unauthorized", "no webhook-signature matches"),
        ({"webhook-signature": "v2,whatever"}, "unauthorized", "no webhook-signature matches"),
        ({"webhook-id": "msg_2"}, "unauthorized", "no webhook-signature matches"),
        ({"webhook-timestamp": "soon"}, "unauthorized", "webhook-timestamp is missing or not Unix"),
        ({"webhook-id": ""}, "unauthorized", "missing webhook-id"),
    ],
)
def test_standard_webhooks_refusals(change: dict[str, str], result: str, reason: str) -> None:
    at = datetime.fromtimestamp(NOW, UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": Webhook(SECRET).sign("msg_1", at, BODY.decode()),
        **change,
    }
    with pytest.raises(Refused) as refused:
        standard().verify(BODY, headers, NOW)
    assert (refused.value.status, refused.value.result) == (401, result)
    assert reason in refused.value.reason


def test_a_genuine_signature_outside_the_tolerance_is_stale_either_way() -> None:
    for skew in (-301, 301):
        at = datetime.fromtimestamp(NOW + skew, UTC)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(NOW + skew)),
            "webhook-signature": Webhook(SECRET).sign("msg_1", at, BODY.decode()),
        }
        with pytest.raises(Refused) as refused:
            standard().verify(BODY, headers, NOW)
        assert refused.value.result == "stale"
        assert standard(tolerance=600).verify(BODY, headers, NOW) == "msg_1"


def hmac_source(**keys: Any) -> Any:
    return verifier_for(
        HooksSettings(
            sources={"s": HookSource(verify="hmac-sha256", secret="k", header="X-Sig", **keys)}
        ).sources["s"]
    )


def test_hmac_sha256_hex_base64_prefix_and_timestamp() -> None:
    digest = hmac.new(b"k", BODY, hashlib.sha256).digest()
    hmac_source(prefix="sha256=").verify(BODY, {"x-sig": "sha256=" + digest.hex()}, NOW)
    hmac_source(encoding="base64").verify(BODY, {"x-sig": base64.b64encode(digest).decode()}, NOW)
    stamped = hmac.new(b"k", f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    timed = hmac_source(timestamp_header="X-Time")
    timed.verify(BODY, {"x-sig": stamped, "x-time": str(int(NOW))}, NOW)
    with pytest.raises(Refused, match="replayed"):
        timed.verify(BODY, {"x-sig": stamped, "x-time": str(int(NOW))}, NOW + 3600)
    with pytest.raises(Refused, match="X-Sig does not match"):
        # the body's signature alone does not do when the timestamp is signed too
        timed.verify(BODY, {"x-sig": digest.hex(), "x-time": str(int(NOW))}, NOW)
    with pytest.raises(Refused, match="X-Sig is not hex"):
        hmac_source().verify(BODY, {"x-sig": "zz"}, NOW)
    with pytest.raises(Refused, match="missing X-Sig"):
        hmac_source().verify(BODY, {}, NOW)


def test_stripe_signature_with_several_v1_and_a_v0() -> None:
    source = verifier_for(
        HooksSettings(sources={"s": HookSource(verify="stripe", secret="whsec_abc")}).sources["s"]
    )
    good = hmac.new(b"whsec_abc", f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={int(NOW)},v1={'0' * 64},v1={good},v0=ignored"
    source.verify(BODY, {"stripe-signature": header}, NOW)
    with pytest.raises(Refused, match="has no v1"):
        source.verify(BODY, {"stripe-signature": f"t={int(NOW)},v0={good}"}, NOW)
    with pytest.raises(Refused, match="Stripe-Signature t is missing"):
        source.verify(BODY, {"stripe-signature": f"v1={good}"}, NOW)


def test_the_payload_and_the_key_a_request_becomes() -> None:
    source = HooksSettings(
        sources={"shop": HookSource(verify="stripe", secret="x", headers=["X-Kind"])}
    ).sources["shop"]
    body, encoding = parse_body(b'{"id": "evt_9", "n": 1}')
    assert (body, encoding) == ({"id": "evt_9", "n": 1}, "json")
    assert parse_body(b"a=1&b=2") == ("a=1&b=2", "text")
    assert parse_body(b"\xff\x00") == ("/wA=", "base64")
    # jsonb stores no NUL character: such a body is kept as text, or base64
    assert parse_body(b'{"a": "x\\u0000"}') == ('{"a": "x\\u0000"}', "text")
    assert parse_body(b"a\x00b") == ("YQBi", "base64")
    assert delivery_id(source, None, body, b"", {}) == "evt_9"
    assert (
        delivery_id(source, None, "text", b"abc", {})
        == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    )
    assert idempotency_key(source, "evt_9") == "hooks:shop:evt_9"
    assert len(idempotency_key(source, "x" * 1000)) < 100
    at = datetime(2026, 1, 1, tzinfo=UTC)
    payload = event_payload(source, "evt_9", body, "json", {"x-kind": "a", "cookie": "c"}, at)
    assert payload == {
        "source": "shop",
        "id": "evt_9",
        "body": {"id": "evt_9", "n": 1},
        "body_encoding": "json",
        "headers": {"x-kind": "a"},
        "received_at": "2026-01-01T00:00:00+00:00",
    }


def test_refusals_are_logged_once_per_interval_with_the_count_since(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    refusals = RefusalLog(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="taskd.hooks"):
        assert refusals.refused("gh", 401, "X does not match", "1.2.3.4")
        assert not refusals.refused("gh", 401, "X does not match", "1.2.3.4")
        assert not refusals.refused("gh", 401, "X does not match", "1.2.3.4")
        assert refusals.refused("gh", 413, "too large", None), "another reason: its own line"
        now[0] = 10.5
        assert refusals.refused("gh", 401, "X does not match", "1.2.3.4")
    assert [r.getMessage() for r in caplog.records] == [
        "webhook refused: gh: 401 X does not match",
        "webhook refused: gh: 413 too large",
        "webhook refused: gh: 401 X does not match (2 more like it not logged)",
    ]


def test_the_expiry_of_a_remembered_delivery_is_configurable() -> None:
    assert HooksSettings(redelivery_window="3d").redelivery_window == 3 * 86400.0
    assert HooksSettings().redelivery_window == timedelta(days=7).total_seconds()

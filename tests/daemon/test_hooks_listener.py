"""The inbound webhook listener (``[hooks]``): real signed requests over HTTP to a daemon's
listener; each verified delivery is one event and one run, redeliveries none, and everything
else is refused with its reason and recorded nowhere.

Standard Webhooks requests are signed with the ``standardwebhooks`` reference package; GitHub
and Stripe requests as their documentation describes (an HMAC-SHA256 of the body in
``X-Hub-Signature-256: sha256=<hex>``; ``Stripe-Signature: t=<unix>,v1=<hex>`` over
``t.body``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from standardwebhooks import Webhook

from taskd import Client, Context, RunStatus, task
from taskd.app import Daemon
from taskd.config import HookSource, HooksSettings, Settings
from tests.support.in_process import StartDaemon, admin_url
from tests.support.waiting import wait_for, wait_for_run

STANDARD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
GITHUB_SECRET = "it's a secret to everybody"
STRIPE_SECRET = "whsec_" + secrets.token_hex(16)
EVENTS = ["webhook.std", "webhook.github", "payments.stripe"]


@task(id="hooks.record", on_event=EVENTS)
async def record(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return payload


def hooks(listen: str = "127.0.0.1:0", **changes: Any) -> Callable[[Settings], None]:
    def configure(settings: Settings) -> None:
        settings.hooks = HooksSettings(
            listen=listen,
            sources={
                "std": HookSource(verify="standard-webhooks", secret=STANDARD_SECRET),
                "github": HookSource(
                    verify="hmac-sha256",
                    header="X-Hub-Signature-256",
                    prefix="sha256=",
                    id_header="X-GitHub-Delivery",
                    headers=["X-GitHub-Event"],
                    secret_env="GITHUB_HOOK_SECRET",
                ),
                "stripe": HookSource(
                    verify="stripe", secret=STRIPE_SECRET, event="payments.stripe"
                ),
            },
            **changes,
        )

    return configure


@pytest.fixture(autouse=True)
def github_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_HOOK_SECRET", GITHUB_SECRET)


def hooks_url(daemon: Daemon, source: str) -> str:
    assert daemon.hooks is not None and daemon.hooks.url is not None
    return f"{daemon.hooks.url}/hooks/{source}"


def standard_headers(msg_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(STANDARD_SECRET).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def github_headers(delivery: str, body: bytes, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": f"sha256={digest}",
        "User-Agent": "GitHub-Hookshot/abc",
        "content-type": "application/json",
    }


def stripe_headers(body: bytes, at: float | None = None) -> dict[str, str]:
    stamp = int(at if at is not None else time.time())
    signed = f"{stamp}.".encode() + body
    digest = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={digest}", "content-type": "application/json"}


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.json(content_type=None), dict(reply.headers)


async def runs_of(client: Client, event: str) -> list[Any]:
    return await client.list_runs(event=event)


async def test_each_scheme_verified_makes_one_event_and_one_run_and_redeliveries_none(
    client: Client, start_daemon: StartDaemon
) -> None:
    std_body = json.dumps({"type": "invoice.paid", "data": {"amount": 42}}).encode()
    gh_body = json.dumps({"ref": "refs/heads/main", "commits": []}).encode()
    stripe_body = json.dumps({"id": "evt_1", "type": "charge.succeeded"}).encode()
    async with start_daemon([record], hooks(), poll_interval=0.05) as daemon:
        async with aiohttp.ClientSession() as http:
            status, std, _ = await post(
                http, hooks_url(daemon, "std"), std_body, standard_headers("msg_1", std_body)
            )
            assert (status, std["duplicate"], std["event"]) == (202, False, "webhook.std")
            status, gh, _ = await post(
                http, hooks_url(daemon, "github"), gh_body, github_headers("d-1", gh_body)
            )
            assert (status, gh["event"]) == (202, "webhook.github")
            status, st, _ = await post(
                http, hooks_url(daemon, "stripe"), stripe_body, stripe_headers(stripe_body)
            )
            assert (status, st["event"]) == (202, "payments.stripe")

            # The event is committed when the answer comes: its run exists already.
            [run] = await runs_of(client, "webhook.std")
            assert str(run.event_id) == std["event_id"]
            done = await wait_for_run(client, run.id)
            assert done.status is RunStatus.COMPLETED
            assert done.output["source"] == "std"
            assert done.output["id"] == "msg_1"
            assert done.output["body"] == {"type": "invoice.paid", "data": {"amount": 42}}
            assert done.output["body_encoding"] == "json"
            assert done.output["headers"] == {}
            received = datetime.fromisoformat(done.output["received_at"])
            assert abs(received - datetime.now(UTC)) < timedelta(minutes=1)
            [github_run] = await runs_of(client, "webhook.github")
            assert github_run.payload["id"] == "d-1"
            assert github_run.payload["headers"] == {"x-github-event": "push"}, "kept as listed"
            [stripe_run] = await runs_of(client, "payments.stripe")
            assert stripe_run.payload["id"] == "evt_1", "Stripe's id is the body's"

            # Redeliveries: Standard Webhooks and Stripe re-sign each try with a new timestamp;
            # GitHub's redelivery repeats the same delivery id.
            later = datetime.now(UTC) + timedelta(seconds=30)
            status, again, _ = await post(
                http, hooks_url(daemon, "std"), std_body, standard_headers("msg_1", std_body, later)
            )
            assert (status, again) == (200, {**std, "duplicate": True})
            status, again, _ = await post(
                http, hooks_url(daemon, "github"), gh_body, github_headers("d-1", gh_body)
            )
            assert (status, again["event_id"]) == (200, gh["event_id"])
            status, again, _ = await post(
                http,
                hooks_url(daemon, "stripe"),
                stripe_body,
                stripe_headers(stripe_body, time.time() + 20),
            )
            assert (status, again["event_id"]) == (200, st["event_id"])

            # Two deliveries of one id at the same moment: one event.
            body = json.dumps({"type": "race"}).encode()
            answers = await asyncio.gather(
                *(
                    post(http, hooks_url(daemon, "std"), body, standard_headers("msg_2", body))
                    for _ in range(4)
                )
            )
            assert sorted(a[0] for a in answers) == [200, 200, 200, 202]
            assert len({a[1]["event_id"] for a in answers}) == 1

        events = {e.name: e for e in await client.list_events(limit=20)}
        assert sorted(e.name for e in await client.list_events(limit=20)) == sorted(
            ["webhook.std", "webhook.std", "webhook.github", "payments.stripe"]
        )
        assert events["webhook.github"].runs == 1
        assert len(await runs_of(client, "webhook.std")) == 2
        assert len(await runs_of(client, "webhook.github")) == 1
        assert len(await runs_of(client, "payments.stripe")) == 1


REQUESTS = re.compile(
    r'^taskd_hooks_requests_total\{result="(\w+)",source="([^"]+)"\} (\S+)$', re.M
)


async def test_forged_stale_oversized_and_misrouted_requests_are_refused_and_record_nothing(
    client: Client, start_daemon: StartDaemon
) -> None:
    body = json.dumps({"type": "invoice.paid"}).encode()
    stale = datetime.now(UTC) - timedelta(minutes=6)

    def configure(settings: Settings) -> None:
        hooks(max_body=2048)(settings)
        settings.tasks.max_payload_bytes = 1000  # an event's payload, body and all

    async with start_daemon([record], configure) as daemon:
        std, github, stripe = (hooks_url(daemon, s) for s in ("std", "github", "stripe"))
        async with aiohttp.ClientSession() as http:
            tampered = body.replace(b"paid", b"void")
            cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
                (std, tampered, standard_headers("m-1", body), 401, "no webhook-signature matches"),
                (std, body, {"content-type": "application/json"}, 401, "missing webhook-id"),
                (std, body, standard_headers("m-2", body, stale), 401, "replayed"),
                (
                    github,
                    body,
                    github_headers("d-9", body, secret="guessed"),
                    401,
                    "X-Hub-Signature-256 does not match",
                ),
                (
                    github,
                    body,
                    {**github_headers("d-9", body), "X-Hub-Signature-256": "sha1=00"},
                    401,
                    "does not start with 'sha256='",
                ),
                (
                    github,
                    body,
                    {k: v for k, v in github_headers("d-9", body).items() if "Delivery" not in k},
                    400,
                    "missing X-GitHub-Delivery",
                ),
                (stripe, body, stripe_headers(body, time.time() - 400), 401, "replayed"),
                (
                    stripe,
                    body,
                    {"Stripe-Signature": stripe_headers(body)["Stripe-Signature"] + "0"},
                    401,
                    "no Stripe-Signature v1 matches",
                ),
                (std, b"x" * 5000, standard_headers("m-3", b"x" * 5000), 413, "over 2048 bytes"),
                (hooks_url(daemon, "nobody"), body, {}, 404, "no such source"),
            ]
            for url, data, headers, want_status, want_reason in cases:
                status, answer, reply_headers = await post(http, url, data, headers)
                assert status == want_status, (url, headers, answer)
                assert want_reason in answer["error"], answer
                assert STANDARD_SECRET not in answer["error"]
                assert reply_headers["X-Content-Type-Options"] == "nosniff"

            # A body sent in chunks (no Content-Length) is read up to max_body, no further.
            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(3):
                    yield b"x" * 1024

            headers = standard_headers("m-4", b"x" * 3072)
            async with http.post(std, data=chunks(), headers=headers) as reply:
                assert reply.status == 413
                assert "over 2048 bytes" in (await reply.json())["error"]
            # A body within max_body whose event would be over tasks.max_payload_bytes.
            big = json.dumps({"text": "y" * 1500}).encode()
            status, answer, _ = await post(http, std, big, standard_headers("m-5", big))
            assert status == 413
            assert answer["error"] == "the event's payload is over tasks.max_payload_bytes"

            # Only POST /hooks/{source}: no admin route, no console, no other method.
            for method, path, want in [
                ("GET", "/hooks/std", 405),
                ("PUT", "/hooks/std", 405),
                ("GET", "/api/runs", 404),
                ("GET", "/", 404),
                ("POST", "/hooks", 404),
                ("GET", "/metrics", 404),
            ]:
                async with http.request(method, daemon.hooks.url + path) as reply:  # type: ignore[union-attr]
                    assert reply.status == want, (method, path)
                    assert "error" in await reply.json()

            async with http.get(f"{admin_url(daemon)}/metrics") as reply:
                counts = {
                    (source, result): float(value)
                    for result, source, value in REQUESTS.findall(await reply.text())
                }
    assert await client.list_events() == [], "nothing refused was recorded"
    assert counts == {
        ("std", "unauthorized"): 2.0,
        ("std", "stale"): 1.0,
        ("std", "too_large"): 3.0,
        ("github", "unauthorized"): 2.0,
        ("github", "bad_request"): 1.0,
        ("stripe", "stale"): 1.0,
        ("stripe", "unauthorized"): 1.0,
        ("(unknown)", "unknown_source"): 1.0,
    }


async def test_a_refused_request_is_logged_with_its_reason_once_per_interval(
    start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"forged": true}'
    async with start_daemon([record], hooks()) as daemon:
        async with aiohttp.ClientSession() as http:
            for n in range(5):
                headers = github_headers(f"d-{n}", body, secret="guessed")
                status, _, _ = await post(http, hooks_url(daemon, "github"), body, headers)
                assert status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "taskd.hooks"]
    refused = [line for line in lines if line.startswith("webhook refused")]
    assert refused == ["webhook refused: github: 401 X-Hub-Signature-256 does not match"]
    assert all(GITHUB_SECRET not in line for line in lines)


async def test_database_unavailable_answers_503_and_the_retry_is_accepted(
    client: Client, start_daemon: StartDaemon, database: str
) -> None:
    def configure(settings: Settings) -> None:
        hooks()(settings)
        settings.database.lock_timeout = 0.2  # the listener's transaction gives up at once

    body = json.dumps({"type": "invoice.paid"}).encode()
    async with start_daemon([record], configure) as daemon:
        blocker = await asyncpg.connect(database)
        try:
            async with blocker.transaction(), aiohttp.ClientSession() as http:
                # the database cannot take the delivery's key: as good as down for the sender
                await blocker.execute("LOCK TABLE taskd.idempotency_keys IN ACCESS EXCLUSIVE MODE")
                status, answer, headers = await post(
                    http, hooks_url(daemon, "std"), body, standard_headers("m-503", body)
                )
                assert status == 503, answer
                assert headers["Retry-After"] == "5"
                assert "retry" in answer["error"]
        finally:
            await blocker.close()
        assert await client.list_events() == []
        async with aiohttp.ClientSession() as http:
            status, answer, _ = await post(
                http, hooks_url(daemon, "std"), body, standard_headers("m-503", body)
            )
        assert status == 202, answer
        [run] = await wait_for(lambda: runs_of(client, "webhook.std"))
        assert run.payload["id"] == "m-503"


async def test_a_missing_secret_variable_stops_the_start_with_one_line(
    start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskd.errors import ConfigError

    monkeypatch.delenv("GITHUB_HOOK_SECRET")
    with pytest.raises(BaseException) as raised:
        async with start_daemon([record], hooks()):
            pass
    error: BaseException = raised.value
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "config error: hooks.sources.github.secret_env: the environment variable "
        "GITHUB_HOOK_SECRET is not set (or empty)"
    )


async def test_a_taken_port_stops_the_start_with_one_line(start_daemon: StartDaemon) -> None:
    from taskd.hooks.server import HooksListenFailed

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BaseException) as raised:
            async with start_daemon([record], hooks(listen=f"127.0.0.1:{port}")):
                pass
    error: BaseException = raised.value
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, HooksListenFailed)
    assert str(error) == (
        f"cannot open the webhook listener on 127.0.0.1:{port} (hooks.listen): "
        "[Errno 98] address already in use"
    )


async def test_bodies_jsonb_cannot_hold_are_kept_as_text_or_base64(
    client: Client, start_daemon: StartDaemon
) -> None:
    bodies = {
        "d-json-nul": (b'{"name": "a\\u0000b"}', "text"),
        "d-raw-nul": (b"a=1\x00&b=2", "base64"),
        "d-form": (b"a=1&b=%20", "text"),
    }
    async with start_daemon([record], hooks()) as daemon:
        async with aiohttp.ClientSession() as http:
            for delivery, (body, _) in bodies.items():
                headers = github_headers(delivery, body)
                status, answer, _ = await post(http, hooks_url(daemon, "github"), body, headers)
                assert status == 202, answer
    runs = {r.payload["id"]: r.payload for r in await runs_of(client, "webhook.github")}
    for delivery, (body, encoding) in bodies.items():
        assert runs[delivery]["body_encoding"] == encoding
        kept = runs[delivery]["body"]
        assert (base64.b64decode(kept) if encoding == "base64" else kept.encode()) == body

"""The console's sessions on the admin endpoint: login by cookie, the read-only role, CSRF
rules for cookie-authenticated changes, and the security headers on every answer. Raw HTTP,
as a browser sends it (tests/daemon/test_admin_safety.py's rules without a token still hold)."""

from __future__ import annotations

import asyncio
import json
from http.cookies import SimpleCookie
from typing import Any

from taskd import Client, Context, task
from taskd.admin.session import COOKIE
from taskd.config import Settings
from tests.support.console_files import CSP
from tests.support.in_process import admin_url, running_daemon

TOKEN = "full-token"
READ_TOKEN = "look-token"


@task(id="session.sleeps")
async def sleeps(payload: Any, ctx: Context) -> None:
    await asyncio.Event().wait()


def _tokens(settings: Settings) -> None:
    settings.admin.token = TOKEN
    settings.admin.read_token = READ_TOKEN


async def send(
    url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """One request written byte for byte: (status, headers with lower-case names, JSON)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [
        f"{name}: {value}" for name, value in {"Host": f"{host}:{port}", **(headers or {})}.items()
    ]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    answer: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer.setdefault(name.strip().lower(), value.strip())
    data = (
        json.loads(payload)
        if payload and answer.get("content-type", "").startswith("application/json")
        else None
    )
    return int(status_line.split()[1]), answer, data


async def login(url: str, token: str) -> str:
    status, headers, data = await send(
        url,
        "POST",
        "/api/session",
        {"Content-Type": "application/json", "Origin": url},
        json.dumps({"token": token}).encode(),
    )
    assert status == 200, data
    cookie = SimpleCookie(headers["set-cookie"])[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    return f"{COOKIE}={cookie.value}"


async def test_a_cookie_session_acts_only_same_origin_and_as_json(
    database: str, client: Client
) -> None:
    async with running_daemon(database, [sleeps], _tokens) as daemon:
        url = admin_url(daemon)
        run_id = await client.trigger("session.sleeps", {})
        cookie = await login(url, TOKEN)
        cancel = f"/api/runs/{run_id}/cancel"
        json_type = {"Content-Type": "application/json"}
        seen = {
            "read by cookie": await send(url, "GET", "/api/runs", {"Cookie": cookie}),
            "no Origin": await send(url, "POST", cancel, {"Cookie": cookie, **json_type}),
            "other Origin": await send(
                url,
                "POST",
                cancel,
                {"Cookie": cookie, "Origin": "http://evil.example", **json_type},
            ),
            "cross-site fetch": await send(
                url,
                "POST",
                cancel,
                {"Cookie": cookie, "Origin": url, "Sec-Fetch-Site": "cross-site", **json_type},
            ),
            "form body": await send(
                url,
                "POST",
                cancel,
                {"Cookie": cookie, "Origin": url, "Content-Type": "text/plain"},
            ),
        }
        assert {name: answer[0] for name, answer in seen.items()} == {
            "read by cookie": 200,
            "no Origin": 403,
            "other Origin": 403,
            "cross-site fetch": 403,
            "form body": 415,
        }
        assert "CSRF" in seen["other Origin"][2]["error"]
        assert (await client.get_run(run_id)).status != "canceled"
        status, _, data = await send(
            url, "POST", cancel, {"Cookie": cookie, "Origin": url, **json_type}
        )
        assert (status, data["id"]) == (200, str(run_id))


async def test_the_read_only_token_looks_but_does_not_act(database: str, client: Client) -> None:
    async with running_daemon(database, [sleeps], _tokens) as daemon:
        url = admin_url(daemon)
        run_id = await client.trigger("session.sleeps", {})
        bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
        cookie = await login(url, READ_TOKEN)
        as_json = {"Content-Type": "application/json", "Origin": url}
        cancel = f"/api/runs/{run_id}/cancel"
        answers = [
            await send(url, "GET", f"/api/runs/{run_id}", bearer),
            await send(url, "GET", "/api/session", bearer),
            await send(url, "POST", cancel, {**bearer, **as_json}),
            await send(url, "POST", cancel, {"Cookie": cookie, **as_json}),
            await send(url, "DELETE", "/api/schedules/x", {"Cookie": cookie, **as_json}),
        ]
        assert [status for status, _, _ in answers] == [200, 200, 403, 403, 403]
        assert answers[1][2] == {"role": "read", "auth_required": True}
        assert answers[2][2]["error"] == (
            f"the read-only token can look but not act: POST {cancel} needs the admin token"
        )
        assert (await client.get_run(run_id)).status != "canceled"
        await client.cancel(run_id)


async def test_login_logout_and_the_headers_of_every_answer(database: str) -> None:
    async with running_daemon(database, [sleeps], _tokens) as daemon:
        url = admin_url(daemon)
        as_json = {"Content-Type": "application/json", "Origin": url}
        wrong = await send(url, "POST", "/api/session", as_json, b'{"token": "guess"}')
        cross = await send(
            url,
            "POST",
            "/api/session",
            {"Content-Type": "application/json", "Origin": "http://evil.example"},
            json.dumps({"token": TOKEN}).encode(),
        )
        anonymous = await send(url, "GET", "/api/session")
        shell = await send(url, "GET", "/")
        assert (wrong[0], wrong[2]["error"]) == (401, "wrong token")
        assert "set-cookie" not in wrong[1]
        assert cross[0] == 403
        assert anonymous[2] == {"role": None, "auth_required": True}
        assert (shell[0], shell[1]["location"]) == (302, "/login")

        cookie = await login(url, TOKEN)
        assert TOKEN not in cookie
        me = await send(url, "GET", "/api/session", {"Cookie": cookie})
        assert me[2] == {"role": "admin", "auth_required": True}
        assert (await send(url, "GET", "/", {"Cookie": cookie}))[0] == 200
        out = await send(url, "DELETE", "/api/session", {"Cookie": cookie, **as_json})
        assert out[0] == 200 and out[2] == {"role": None, "auth_required": True}
        cleared = SimpleCookie(out[1]["set-cookie"])[COOKIE]
        assert cleared.value == "" and cleared["max-age"] == "0"

        for path in ("/healthz", "/login", "/console/js/lib.js", "/api/runs", "/nowhere"):
            _, headers, _ = await send(url, "GET", path)
            assert headers["content-security-policy"] == CSP, path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path
        assert (await send(url, "GET", "/console/../server.py"))[0] == 404
        assert (await send(url, "GET", "/console/js/nothing.js"))[0] == 404


async def test_without_a_token_the_console_needs_no_login(database: str) -> None:
    async with running_daemon(database, []) as daemon:
        url = admin_url(daemon)
        host = url.removeprefix("http://")
        session = await send(url, "GET", "/api/session")
        shell = await send(url, "GET", "/")
        rebound = await send(url, "GET", "/", {"Host": "evil.example"})
        assert session[2] == {"role": "admin", "auth_required": False}
        assert shell[0] == 200 and shell[1]["content-type"].startswith("text/html")
        assert rebound[0] == 403, host

"""The admin endpoint is safe with its defaults (review M5): raw HTTP, as a browser sends it.

On loopback without a token, a web page in the operator's browser must not be able to read
the API through DNS rebinding (its requests carry ``Host: evil.example``) nor change anything
by CSRF (a form post, or a ``no-cors`` fetch with a ``text/plain`` body, from another origin).
The requests are written byte for byte on a socket, so no client library adds or fixes a
header behind the test's back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from taskd import Client, Context, task
from taskd.config import Settings
from tests.support.in_process import admin_url, running_daemon


@task(id="safety.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


async def raw(url: str, request: str, body: bytes = b"") -> tuple[int, Any]:
    """Send one HTTP/1.1 request as written (``{port}`` filled in); (status, JSON body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        lines = [line.strip() for line in request.format(port=port).strip().splitlines()]
        head = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload) if payload else None


async def paused(client: Client, name: str) -> bool:
    return any(q.queue == name and q.paused for q in await client.list_queues())


async def test_rebinding_and_csrf_are_refused_without_a_token(
    database: str, client: Client
) -> None:
    async with running_daemon(database, [echo]) as daemon:
        url = admin_url(daemon)
        refused = {
            "rebinding read": await raw(url, "GET /api/runs HTTP/1.1\nHost: evil.example:{port}"),
            "rebinding, no port": await raw(url, "GET /api/tasks HTTP/1.1\nHost: evil.example"),
            "cross-origin text/plain": await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: 127.0.0.1:{port}
                Origin: http://evil.example
                Content-Type: text/plain;charset=UTF-8""",
                b"{}",
            ),
            "cross-origin form": await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: 127.0.0.1:{port}
                Origin: null
                Content-Type: application/x-www-form-urlencoded""",
                b"a=1",
            ),
            "form without Origin (an old browser)": await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: localhost:{port}
                Content-Type: application/x-www-form-urlencoded""",
                b"a=1",
            ),
            "no-cors fetch, no body": await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: 127.0.0.1:{port}
                Origin: https://evil.example""",
            ),
            "JSON from another origin": await raw(
                url,
                """POST /api/tasks/safety.echo/trigger HTTP/1.1
                Host: 127.0.0.1:{port}
                Origin: http://127.0.0.1.evil.example
                Content-Type: application/json""",
                b'{"payload": 1}',
            ),
        }
        statuses = {name: status for name, (status, _) in refused.items()}
        assert statuses == {
            "rebinding read": 403,
            "rebinding, no port": 403,
            "cross-origin text/plain": 403,
            "cross-origin form": 403,
            "form without Origin (an old browser)": 415,
            "no-cors fetch, no body": 403,
            "JSON from another origin": 403,
        }
        assert all(body["error"] for _, body in refused.values()), refused
        assert not await paused(client, "default"), "no refused request paused the queue"
        assert await client.list_runs() == [], "no refused request triggered a run"

        # the operator's own requests: curl, the CLI's way of naming the host, the endpoint's
        # own origin (a page served by it)
        allowed = [
            await raw(url, "GET /api/runs HTTP/1.1\nHost: 127.0.0.1:{port}"),
            await raw(url, "GET /api/runs HTTP/1.1\nHost: localhost:{port}"),
            await raw(url, "GET /api/runs HTTP/1.1\nHost: LOCALHOST"),
            await raw(url, "GET /api/runs HTTP/1.1\nHost: [::1]:{port}"),
            await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: 127.0.0.1:{port}
                Content-Type: application/json""",
            ),
            await raw(
                url,
                """POST /api/queues/default/resume HTTP/1.1
                Host: localhost:{port}
                Origin: http://localhost:{port}
                Content-Type: application/json; charset=utf-8""",
                b"{}",
            ),
            await raw(
                url,
                """POST /api/queues/default/pause HTTP/1.1
                Host: 127.0.0.1:{port}
                Origin: http://127.0.0.1:{port}
                Content-Type: application/json""",
            ),
        ]
        assert [status for status, _ in allowed] == [200] * len(allowed), allowed
        assert await paused(client, "default")


async def test_with_a_token_the_token_is_the_guard(database: str, client: Client) -> None:
    """A bearer token is never sent by a browser on its own, so CSRF cannot use it, and a
    rebinding page does not know it: with a token set, any Host and any body type pass once
    the token does (names a proxy or load balancer uses keep working)."""

    def configure(settings: Settings) -> None:
        settings.admin.token = "s3cret"

    async with running_daemon(database, [echo], configure) as daemon:
        url = admin_url(daemon)
        anonymous, _ = await raw(url, "GET /api/runs HTTP/1.1\nHost: evil.example")
        with_token, _ = await raw(
            url,
            """POST /api/queues/default/pause HTTP/1.1
            Host: taskd.internal:{port}
            Authorization: Bearer s3cret""",
        )
    assert (anonymous, with_token) == (401, 200)
    assert await paused(client, "default")

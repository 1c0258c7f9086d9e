"""The console's static files cannot reach a file outside admin/console/, however the path is
spelled: dot segments (plain or percent-encoded), an absolute path after the prefix. The target
here is a real file with a served suffix (.txt), so only the containment check stops it (a
.py file would be refused by its suffix alone)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from taskd.admin.console_files import ROOT
from taskd.config import Settings
from tests.support.in_process import admin_url, running_daemon


async def get(url: str, raw_path: str) -> tuple[int, bytes]:
    """GET ``raw_path`` exactly as written (no client normalises its dot segments)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET {raw_path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _token(settings: Settings) -> None:
    settings.admin.token = "traversal-token"


async def test_no_path_reaches_a_file_outside_the_console_folder(
    database: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the console")
    up = "../" * len(ROOT.resolve().parts)  # from the console folder up to /
    relative = up + str(secret.resolve()).lstrip("/")
    assert (ROOT / relative).resolve() == secret.resolve()
    encoded = relative.replace("..", "%2e%2e").replace("/", "%2f")
    async with running_daemon(database, [], _token) as daemon:
        url = admin_url(daemon)
        assert (await get(url, "/console/console.css"))[0] == 200
        for path in (
            "/console/" + relative,
            "/console/" + encoded,
            "/console/" + str(secret.resolve()),  # /console//tmp/...: an absolute path
        ):
            status, body = await get(url, path)
            assert status == 404, (path, status)
            assert b"not for the console" not in body

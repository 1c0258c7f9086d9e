"""A connection whose opening stalls is tried again; a refused one fails at once.

A shared machine under load can leave a new backend unanswered past ``connect_timeout`` (CI
saw a daemon fail to start on it once); the server answers the next try. The stall is made
real: a Unix-socket proxy that accepts the first connection and never answers it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from taskd.config import DatabaseSettings
from taskd.store.database import CONNECT_TRIES, connect, create_pool


@asynccontextmanager
async def stalling_proxy(dsn: str, stalls: int) -> AsyncIterator[str]:
    """A DSN reaching the test server through a proxy whose first ``stalls`` connections are
    accepted and never answered."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    if "host" not in query:
        pytest.skip("the test server is not reached over a Unix socket (TASKD_TEST_DSN)")
    port = parts.port or 5432
    target = str(Path(query["host"][0]) / f".s.PGSQL.{port}")
    directory = tempfile.mkdtemp(prefix="taskd-proxy-")
    held: list[asyncio.StreamWriter] = []
    seen = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        if seen <= stalls:
            held.append(writer)  # open, never answered
            return
        server_reader, server_writer = await asyncio.open_unix_connection(target)
        await asyncio.gather(pipe(reader, server_writer), pipe(server_reader, writer))

    server = await asyncio.start_unix_server(handle, path=f"{directory}/.s.PGSQL.{port}")
    try:
        new_query = parts.query.replace(f"host={query['host'][0]}", f"host={directory}")
        yield urlunsplit(parts._replace(query=new_query))
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_stalled_connect_is_tried_again(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = DatabaseSettings(connect_timeout=2.0)  # the try after the stall: a loaded machine
    async with stalling_proxy(database, stalls=1) as dsn:
        with caplog.at_level(logging.WARNING, logger="taskd.database"):
            connection = await connect(dsn, settings)
        try:
            assert await connection.fetchval("SELECT count(*) FROM taskd.runs") == 0
        finally:
            await connection.close()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "taskd.database"]
    assert "trying again (2 of 3)" in warning


async def test_a_pool_whose_first_connection_stalls_opens_on_the_next_try(database: str) -> None:
    settings = DatabaseSettings(connect_timeout=2.0)  # the try after the stall: a loaded machine
    async with stalling_proxy(database, stalls=1) as dsn:
        pool = await create_pool(dsn, settings, size=2)
        try:
            assert await pool.fetchval("SELECT 1") == 1
        finally:
            await pool.close()


async def test_stalls_past_every_try_end_in_the_timeout(database: str) -> None:
    settings = DatabaseSettings(connect_timeout=0.3)
    async with stalling_proxy(database, stalls=CONNECT_TRIES) as dsn:
        with pytest.raises(TimeoutError):
            await connect(dsn, settings)


async def test_a_refused_connection_is_not_tried_again(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = DatabaseSettings(connect_timeout=5)
    directory = tempfile.mkdtemp(prefix="taskd-nothing-")  # no server listens here
    parts = urlsplit(database)
    host = parse_qs(parts.query).get("host")
    if not host:
        pytest.skip("the test server is not reached over a Unix socket (TASKD_TEST_DSN)")
    dsn = urlunsplit(
        parts._replace(query=parts.query.replace(f"host={host[0]}", f"host={directory}"))
    )
    with caplog.at_level(logging.WARNING, logger="taskd.database"), pytest.raises(OSError):
        await connect(dsn, settings)
    assert not [r for r in caplog.records if r.name == "taskd.database"]

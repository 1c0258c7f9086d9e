"""The admin endpoint's address, bound and listening before the daemon claims anything, served
later.

A port already in use must stop the daemon before it has started any run, but the endpoint's
code (aiohttp, the API's models) costs about as much CPU as the rest of the start-up: the
daemon binds the address here and listens on it, with the standard library only, claims, then
loads the API and starts serving on the sockets bound here (taskd.admin.server), before READY.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

from taskd.config import admin_address
from taskd.errors import TaskdError

BACKLOG = 100  # asyncio's own default for create_server


class AdminListenFailed(TaskdError):
    """``[admin] listen`` cannot be bound (the port is taken, the address is not local)."""


class AdminListener:
    """``[admin] listen``'s sockets, bound and listening but not yet accepting: a connection
    made before ``serve`` waits in the backlog and is answered once the endpoint serves."""

    def __init__(self, listen: str, server: asyncio.AbstractServer, url: str) -> None:
        self.listen = listen
        self.url = url
        self._server = server
        self._factory: Callable[[], asyncio.Protocol] | None = None

    @classmethod
    async def bind(cls, listen: str) -> AdminListener:
        """Bind ``listen`` (host:port, port 0: any free port) and listen on it;
        AdminListenFailed if it cannot."""
        host, port = admin_address(listen)
        listener: AdminListener | None = None

        def protocol() -> asyncio.Protocol:
            # connections are accepted only once serve() has set the endpoint's factory
            assert listener is not None and listener._factory is not None
            return listener._factory()

        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                protocol, host, port, reuse_address=True, start_serving=False
            )
        except OSError as exc:
            raise _failed(listen, exc) from None
        sockets: list[Any] = list(server.sockets or [])
        try:
            # Listening now, not at serve(): on Linux SO_REUSEADDR lets any number of sockets
            # bind one address while none of them listens, so only listen() tells that
            # another daemon holds the port, and it must before this one claims.
            for bound in sockets:
                with socket.fromfd(bound.fileno(), bound.family, bound.type) as duplicate:
                    duplicate.listen(BACKLOG)
        except OSError as exc:
            server.close()
            raise _failed(listen, exc) from None
        bound_port = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        listener = cls(listen, server, f"http://{shown}:{bound_port}")
        return listener

    async def serve(self, factory: Callable[[], Any]) -> None:
        """Accept connections from now on, each handled by ``factory()``'s protocol."""
        self._factory = factory
        try:
            await self._server.start_serving()
        except OSError as exc:
            raise _failed(self.listen, exc) from None

    async def close(self) -> None:
        """Stop accepting. Not ``wait_closed()``: on Python 3.12.1+ it waits for every client
        to go, and idle keep-alive clients (a metrics scraper) go only when aiohttp's runner
        cleans up, after this (what aiohttp's own ``BaseSite.stop`` does too)."""
        self._server.close()


def _failed(listen: str, exc: OSError) -> AdminListenFailed:
    # Not a database problem, whatever errno says: name the key and the address.
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    errno = f"[Errno {exc.errno}] " if exc.errno else ""
    return AdminListenFailed(
        f"cannot open the admin endpoint on {listen} (admin.listen): {errno}{reason}"
    )

"""The client that typed handles (``my_task.trigger(...)``) use when none is passed.

``Client.connect(...)`` sets it for the code inside its ``async with``; the daemon sets its own
for the tasks it runs, so a task can trigger another without wiring a client through.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from taskd.errors import NoClient

if TYPE_CHECKING:
    from taskd.client import Client

_current: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "taskd_client", default=None
)


def current_client() -> Client:
    client = _current.get()
    if client is None:
        raise NoClient(
            "no taskd client: pass client=..., or call inside `async with Client.connect(dsn)`"
        )
    return client


def set_current_client(client: Client | None) -> contextvars.Token[Client | None]:
    return _current.set(client)


def reset_current_client(token: contextvars.Token[Client | None]) -> None:
    _current.reset(token)

"""What the code running now works with: the current client and, inside a task, its context.

``Client.connect(...)`` sets the client for the code inside its ``async with``; the daemon sets
its own for the tasks it runs, so a task can trigger another without wiring a client through.
The executor sets the context for the attempt it runs, which ``wait`` and a task's
``trigger_and_wait`` use. Both variables live here, at the bottom of the SDK, so that the modules
reading them import neither the client nor the context (which import them).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from taskd.errors import NoClient

if TYPE_CHECKING:
    from taskd.client import Client
    from taskd.sdk.context import Context

_current: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "taskd_client", default=None
)
_current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "taskd_context", default=None
)


def current_client() -> Client:
    """The client of the code running now: the one ``async with Client.connect(...)`` opened
    around it or, inside a task, the daemon's: a task triggers other tasks and sends events
    through it (``await current_client().send_event("order.paid", {...})``). Raises
    TaskdError (NoClient) when there is none."""
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


def current_context() -> Context:
    ctx = _current_context.get()
    if ctx is None:
        raise RuntimeError("wait.for_ / wait.until are for code running inside a taskd task")
    return ctx


def set_current_context(ctx: Context | None) -> contextvars.Token[Context | None]:
    return _current_context.set(ctx)


def reset_current_context(token: contextvars.Token[Context | None]) -> None:
    _current_context.reset(token)

"""``/api/stream``: server-sent events of run changes, one subscription per client.

Each client reads from a bounded subscription of the change hub. A client that stops reading
first fills its socket (aiohttp's write waits once the transport's buffer is full), then its
subscription; at ``[admin] stream_buffer`` changes behind it is dropped: its subscription is
freed and its connection closed. Browsers' EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from taskd.admin.schemas import StreamQuery
from taskd.admin.state import AdminState
from taskd.changes import RunChange

log = logging.getLogger("taskd.admin")

KEEPALIVE_SECONDS = 15.0
# How often an idle stream looks whether its client is still connected.
CHECK_SECONDS = 0.5


def format_event(change: RunChange) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        change.seq,
        change.kind.value.encode(),
        change.to_json(),
    )


async def serve_stream(
    state: AdminState, request: web.Request, query: StreamQuery
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    transport = request.transport

    def close_connection() -> None:
        # The client fell behind: a write may be stuck on its full socket. Closing the
        # transport ends that write (and the handler) at once.
        if transport is not None:
            transport.abort()

    subscription = state.changes.subscribe(
        buffer=state.settings.stream_buffer,
        run_id=query.run,
        task_id=query.task,
        on_drop=close_connection,
    )
    state.metrics.stream_clients.inc()
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        if query.run is not None:
            # The run as it is now, sent after subscribing: no change falls in between.
            run = await state.store.runs.get(query.run, with_attempts=False)
            if run is not None:
                await response.write(
                    b"event: snapshot\ndata: %s\n\n" % run.model_dump_json().encode()
                )
        idle = 0.0
        while True:
            try:
                change = await asyncio.wait_for(subscription.get(), CHECK_SECONDS)
            except TimeoutError:
                # A client that went away while nothing was written is noticed only here:
                # nothing else ends its subscription until the next change for it.
                if request.transport is None or request.transport.is_closing():
                    break
                idle += CHECK_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    await response.write(b": keepalive\n\n")
                continue
            if change is None:  # dropped: too slow, or the daemon stops
                break
            idle = 0.0
            await response.write(format_event(change))
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away (or was dropped): nothing left to send to
    finally:
        subscription.close()
        state.metrics.stream_clients.dec()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response

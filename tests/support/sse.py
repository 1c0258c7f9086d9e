"""An /api/stream client for tests: reads the server-sent events as they come, in order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus

from tests.support.waiting import wait_for


@dataclass
class Event:
    kind: str
    id: int | None
    data: Any


@dataclass
class SseReader:
    """One /api/stream client: parses the events as they come and keeps them in order."""

    url: str
    keep_data: bool = True
    events: list[Event] = field(default_factory=list)
    ended: bool = False

    async def run(
        self,
        http: aiohttp.ClientSession,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with http.get(self.url) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            task_status.started()  # the headers are sent after the daemon subscribed us
            kind, event_id, data = "message", None, []
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        text = "\n".join(data)
                        parsed = orjson.loads(text) if self.keep_data else None
                        self.events.append(Event(kind, event_id, parsed))
                    kind, event_id, data = "message", None, []
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = int(value)
                elif name == "data":
                    data.append(value)
        self.ended = True

    def of_run(self, run_id: uuid.UUID) -> list[Event]:
        key = {"snapshot": "id"}
        return [e for e in self.events if e.data[key.get(e.kind, "run_id")] == str(run_id)]

    async def wait_for_kind(self, run_id: uuid.UUID, kind: str) -> list[Event]:
        async def check() -> list[Event] | None:
            events = self.of_run(run_id)
            return events if any(e.kind == kind for e in events) else None

        result: list[Event] = await wait_for(check)
        return result


async def open_reader(
    group: TaskGroup, http: aiohttp.ClientSession, url: str, *, keep_data: bool = True
) -> SseReader:
    reader = SseReader(url, keep_data)
    await group.start(reader.run, http)
    return reader

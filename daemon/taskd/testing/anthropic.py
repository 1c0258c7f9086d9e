"""A fake Anthropic API: a real local aiohttp server the official SDK reaches through ``base_url``.

It speaks the wire format the SDK expects: ``POST /v1/messages`` as JSON or as an SSE stream
(``message_start``, ``content_block_start``/``delta``/``stop``, ``message_delta`` with usage,
``message_stop``), ``POST /v1/messages/count_tokens``, and the Message Batches endpoints with JSONL
results. Failures are queued per test with :meth:`FakeAnthropic.fail_next`; every request is
recorded in :attr:`FakeAnthropic.requests`::

    async with FakeAnthropic() as fake:
        fake.reply("Hello!", model="claude-sonnet-4-5")
        fake.fail_next(status=429, retry_after=2)
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.url, max_retries=0)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

__all__ = ["Failure", "FakeAnthropic", "RecordedRequest", "Reply"]

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
BatchOutcome = Literal["succeeded", "errored", "expired", "canceled"]
BATCH_OUTCOMES = ("succeeded", "errored", "expired", "canceled")
BatchResultsOrder = Literal["request", "reversed"]


@dataclass(frozen=True)
class Reply:
    """One answer: its text and usage. Token counts left ``None`` are estimated (4 chars/token).

    ``content``: the answer's content blocks as the API writes them (``{"type": "text",
    "text": ...}``, ``{"type": "tool_use", "id": ..., "name": ..., "input": {...}}``) instead of
    one text block of ``text`` (see :meth:`tool_use`). ``chunk_delay``: seconds between two
    deltas of a stream, so that a reader sees the answer arrive in pieces.
    """

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    stop_reason: str = "end_turn"
    chunks: tuple[str, ...] | None = None  # the stream's text deltas; default: word by word
    chunk_delay: float = 0.0
    content: tuple[dict[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        if self.chunk_delay < 0:
            raise ValueError(f"chunk_delay must be >= 0, got {self.chunk_delay}")
        for block in self.content or ():
            if block.get("type") not in ("text", "tool_use"):
                raise ValueError(f"a Reply's content blocks are text or tool_use, not {block!r}")

    @classmethod
    def tool_use(
        cls,
        name: str,
        input: dict[str, Any],
        *,
        text: str = "",
        id: str | None = None,
        **usage: Any,
    ) -> Reply:
        """An answer asking to use the tool ``name`` with ``input`` (``stop_reason``
        ``tool_use``), after an optional text block."""
        seed = name + json.dumps(input, sort_keys=True)
        block = {
            "type": "tool_use",
            "id": id or "toolu_fake_" + hashlib.sha1(seed.encode()).hexdigest()[:16],
            "name": name,
            "input": input,
        }
        blocks = ({"type": "text", "text": text},) if text else ()
        return cls(text, stop_reason="tool_use", content=(*blocks, block), **usage)

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The content blocks of the answer."""
        if self.content is not None:
            return [dict(block) for block in self.content]
        return [{"type": "text", "text": self.text}]


ReplyFn = Callable[[dict[str, Any]], "Reply | str"]


@dataclass(frozen=True)
class Failure:
    """A scripted failure for the next request (see :meth:`FakeAnthropic.fail_next`)."""

    status: int | None
    retry_after: float | None = None
    message: str | None = None
    error_type: str | None = None
    in_stream: bool = False
    disconnect: bool = False
    match: Callable[[Any], bool] | None = None
    """Only a request whose parsed body this returns True for meets this failure."""


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it."""

    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: Any  # the parsed JSON body, or None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when it arrived


@dataclass
class _Batch:
    id: str
    requests: list[dict[str, Any]]
    created_at: datetime
    ends_after_polls: int | None
    polls: int = 0
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    outcomes: dict[str, BatchOutcome] = field(default_factory=dict)


def estimate_tokens(value: Any) -> int:
    """A stable token estimate: the characters of every string in ``value``, 4 per token."""
    if isinstance(value, str):
        return max(1, len(value) // 4)
    if isinstance(value, dict):
        return sum(estimate_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(estimate_tokens(v) for v in value)
    return 0


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class FakeAnthropic:
    """The fake API server; an async context manager (or call :meth:`start` and :meth:`close`).

    ``latency`` delays every answer (seconds); ``batch_polls_to_end`` ends each batch on that
    many retrievals (``None``: a batch ends only when :meth:`end_batch` says so);
    ``batch_results_order`` is the order of a batch's JSONL results: ``"request"``, or
    ``"reversed"`` (the real API promises no order: a client must match them by custom_id);
    ``batch_error_message`` is the message of a batch request that ends ``errored``.
    """

    def __init__(
        self,
        *,
        default_text: str = "Hello from the fake Anthropic API.",
        latency: float = 0.0,
        batch_polls_to_end: int | None = None,
        batch_results_order: BatchResultsOrder = "request",
        batch_error_message: str = "fake batch error",
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if batch_results_order not in ("request", "reversed"):
            raise ValueError(
                f"batch_results_order must be 'request' or 'reversed', got {batch_results_order!r}"
            )
        self.latency = latency
        self.batch_polls_to_end = batch_polls_to_end
        self.batch_results_order = batch_results_order
        self.batch_error_message = batch_error_message
        self.requests: list[RecordedRequest] = []
        self._replies: dict[str | None, Reply | ReplyFn] = {None: Reply(default_text)}
        self._failures: deque[Failure] = deque()
        self._batches: dict[str, _Batch] = {}
        self._batch_outcomes: dict[str, BatchOutcome] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_post("/v1/messages/batches", self._create_batch)
        app.router.add_get("/v1/messages/batches/{id}", self._retrieve_batch)
        app.router.add_get("/v1/messages/batches/{id}/results", self._batch_results)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self._cancel_batch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The ``base_url`` to give the SDK."""
        if self._port is None:
            raise RuntimeError("FakeAnthropic is not started: use `async with FakeAnthropic()`")
        return f"http://127.0.0.1:{self._port}"

    # -- scripting ---------------------------------------------------------------------------

    def reply(
        self,
        answer: str | Reply | ReplyFn,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        stop_reason: str = "end_turn",
    ) -> None:
        """Answer requests for ``model`` (every model if ``None``) with ``answer``.

        ``answer`` is a text, a :class:`Reply`, or a function of the request body returning
        either. A model's own answer wins over the default one.
        """
        if isinstance(answer, str):
            answer = Reply(
                answer,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_creation_input_tokens=cache_creation_input_tokens,
                cache_read_input_tokens=cache_read_input_tokens,
                stop_reason=stop_reason,
            )
        self._replies[model] = answer

    def fail_next(
        self,
        status: int | None = None,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
        in_stream: bool = False,
        disconnect: bool = False,
        times: int = 1,
        match: Callable[[Any], bool] | None = None,
    ) -> None:
        """Queue a failure for the next ``times`` requests (in order, after those queued).

        ``status``: an HTTP error with Anthropic's error JSON (429 carries ``retry-after`` and the
        ``anthropic-ratelimit-*-reset`` headers). ``in_stream``: a 200 stream that sends an
        ``error`` event (``overloaded_error`` unless ``error_type`` says otherwise; a request that
        does not stream gets a 529 instead). ``disconnect``: the connection drops unanswered.
        ``match``: a function of the request's parsed body; the failure waits for the first
        request it returns True for (``match=lambda body: "a-07" in str(body)``), letting
        requests that do not match through.
        """
        if sum((status is not None, in_stream, disconnect)) != 1:
            raise ValueError(
                "fail_next needs exactly one of status=, in_stream=True, disconnect=True"
            )
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"fail_next status must be an HTTP error (400-599), got {status}")
        if times < 1:
            raise ValueError(f"fail_next times must be >= 1, got {times}")
        failure = Failure(status, retry_after, message, error_type, in_stream, disconnect, match)
        self._failures.extend([failure] * times)

    def batch_outcome(self, custom_id: str, outcome: BatchOutcome) -> None:
        """What the batch request ``custom_id`` ends as (default ``succeeded``)."""
        if outcome not in BATCH_OUTCOMES:
            raise ValueError(f"batch outcome must be one of {BATCH_OUTCOMES}, got {outcome!r}")
        self._batch_outcomes[custom_id] = outcome

    def end_batch(self, batch_id: str | None = None) -> None:
        """End the batch ``batch_id`` (the only one if ``None``): its results become readable."""
        self._end(self._batch(batch_id))

    @property
    def batch_ids(self) -> list[str]:
        """The ids of the batches created, oldest first."""
        return list(self._batches)

    def batch_requests(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """The requests (``{custom_id, params}``) of the batch ``batch_id`` (the only one if
        ``None``), as submitted."""
        return list(self._batch(batch_id).requests)

    def batch_retrievals(self, batch_id: str | None = None) -> list[RecordedRequest]:
        """The recorded ``GET /v1/messages/batches/{id}`` requests (polls) of the batch
        ``batch_id`` (the only one if ``None``)."""
        path = f"/v1/messages/batches/{self._batch(batch_id).id}"
        return [r for r in self.requests if r.method == "GET" and r.path == path]

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST /v1/messages`` requests."""
        return [r for r in self.requests if r.path == "/v1/messages"]

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, body: dict[str, Any]) -> Reply:
        model = body.get("model")
        chosen = self._replies.get(model if isinstance(model, str) else None, self._replies[None])
        result = chosen(body) if callable(chosen) else chosen
        return Reply(result) if isinstance(result, str) else result

    def _message(self, body: dict[str, Any], reply: Reply, request_id: str) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{request_id[-6:]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": reply.blocks,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": self._usage(body, reply),
        }

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, int]:
        prompt = {k: body.get(k) for k in ("system", "messages", "tools")}
        return {
            "input_tokens": (
                reply.input_tokens if reply.input_tokens is not None else estimate_tokens(prompt)
            ),
            "output_tokens": (
                reply.output_tokens
                if reply.output_tokens is not None
                else estimate_tokens(reply.text if reply.content is None else list(reply.content))
            ),
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
        }

    def _request_id(self) -> str:
        return f"req_fake_{next(self._ids):06d}"

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        return body

    def _error(
        self,
        status: int,
        request_id: str,
        *,
        message: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        kind = error_type or ERROR_TYPES.get(status, "api_error")
        payload = {
            "type": "error",
            "error": {"type": kind, "message": message or f"fake {kind} ({status})"},
            "request_id": request_id,
        }
        return web.json_response(
            payload, status=status, headers={"request-id": request_id, **(headers or {})}
        )

    async def _begin(self, request: web.Request) -> tuple[Any, str, Failure | None]:
        body = await self._record(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        return body, self._request_id(), self._failure_for(body)

    def _failure_for(self, body: Any) -> Failure | None:
        """The first queued failure this request meets (taken out of the queue), if any."""
        for failure in self._failures:
            if failure.match is None or failure.match(body):
                self._failures.remove(failure)
                return failure
        return None

    def _failed(self, request: web.Request, failure: Failure, request_id: str) -> web.Response:
        if failure.disconnect:
            transport = request.transport
            if transport is not None:
                transport.close()
            raise asyncio.CancelledError
        status = failure.status if failure.status is not None else 529
        headers: dict[str, str] = {}
        if failure.retry_after is not None:
            reset = _iso(_now() + timedelta(seconds=failure.retry_after)) or ""
            headers = {
                "retry-after": f"{failure.retry_after:g}",
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-tokens-reset": reset,
                "anthropic-ratelimit-input-tokens-reset": reset,
                "anthropic-ratelimit-output-tokens-reset": reset,
            }
        return self._error(
            status,
            request_id,
            message=failure.message,
            error_type=failure.error_type,
            headers=headers,
        )

    # -- handlers ----------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, request_id, failure = await self._begin(request)
        if failure is not None and not (failure.in_stream and _streams(body)):
            return self._failed(request, failure, request_id)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, request_id, message="messages: a list is required")
        reply = self._answer(body)
        message = self._message(body, reply, request_id)
        if not _streams(body):
            return web.json_response(message, headers={"request-id": request_id})
        return await self._stream(request, message, reply, request_id, failure)

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        reply: Reply,
        request_id: str,
        failure: Failure | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "request-id": request_id,
            }
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {**usage, "output_tokens": 1}
        await send("message_start", {"type": "message_start", "message": start})
        if failure is not None:
            kind = failure.error_type or "overloaded_error"
            await send(
                "error",
                {
                    "type": "error",
                    "error": {"type": kind, "message": failure.message or "Overloaded"},
                    "request_id": request_id,
                },
            )
            await response.write_eof()
            return response
        first = True
        for index, block in enumerate(reply.blocks):
            if block["type"] == "tool_use":
                start_block = {**block, "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
            else:
                start_block = {"type": "text", "text": ""}
                chunks = _chunks(reply) if reply.content is None else _words(block["text"])
                deltas = [{"type": "text_delta", "text": chunk} for chunk in chunks]
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start_block},
            )
            if index == 0:
                await send("ping", {"type": "ping"})
            for delta in deltas:
                if reply.chunk_delay and not first:
                    await asyncio.sleep(reply.chunk_delay)
                first = False
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        body, request_id, failure = await self._begin(request)
        if failure is not None:
            return self._failed(request, failure, request_id)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, request_id, message="messages: a list is required")
        prompt = {k: body.get(k) for k in ("system", "messages", "tools")}
        return web.json_response(
            {"input_tokens": estimate_tokens(prompt)}, headers={"request-id": request_id}
        )

    # -- batches -----------------------------------------------------------------------------

    def _batch(self, batch_id: str | None) -> _Batch:
        if batch_id is None:
            if len(self._batches) != 1:
                raise ValueError(f"a batch id is needed: {len(self._batches)} batches exist")
            return next(iter(self._batches.values()))
        if batch_id not in self._batches:
            raise KeyError(f"no batch {batch_id!r}")
        return self._batches[batch_id]

    def _end(self, batch: _Batch, *, canceled: bool = False) -> None:
        if batch.ended_at is not None:
            return
        batch.ended_at = _now()
        for item in batch.requests:
            custom_id = item["custom_id"]
            batch.outcomes[custom_id] = (
                "canceled" if canceled else self._batch_outcomes.get(custom_id, "succeeded")
            )

    def _batch_json(self, batch: _Batch) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
            status = "in_progress" if batch.cancel_initiated_at is None else "canceling"
        else:
            status = "ended"
            for outcome in batch.outcomes.values():
                counts[outcome] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "ended_at": _iso(batch.ended_at),
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": (
                None
                if batch.ended_at is None
                else f"{self.url}/v1/messages/batches/{batch.id}/results"
            ),
        }

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        body, request_id, failure = await self._begin(request)
        if failure is not None:
            return self._failed(request, failure, request_id)
        items = body.get("requests") if isinstance(body, dict) else None
        if (
            not isinstance(items, list)
            or not items
            or not all(
                isinstance(i, dict)
                and isinstance(i.get("custom_id"), str)
                and isinstance(i.get("params"), dict)
                for i in items
            )
        ):
            return self._error(
                400, request_id, message="requests: a non-empty list of {custom_id, params}"
            )
        batch_id = f"msgbatch_fake_{next(self._ids):06d}"
        batch = _Batch(batch_id, items, _now(), self.batch_polls_to_end)
        self._batches[batch_id] = batch
        return web.json_response(self._batch_json(batch), headers={"request-id": request_id})

    def _found(self, request: web.Request, request_id: str) -> _Batch | web.Response:
        batch = self._batches.get(request.match_info["id"])
        if batch is None:
            return self._error(404, request_id, message=f"no batch {request.match_info['id']}")
        return batch

    async def _retrieve_batch(self, request: web.Request) -> web.StreamResponse:
        _, request_id, failure = await self._begin(request)
        if failure is not None:
            return self._failed(request, failure, request_id)
        batch = self._found(request, request_id)
        if isinstance(batch, web.Response):
            return batch
        batch.polls += 1
        if batch.ends_after_polls is not None and batch.polls >= batch.ends_after_polls:
            self._end(batch)
        return web.json_response(self._batch_json(batch), headers={"request-id": request_id})

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        _, request_id, failure = await self._begin(request)
        if failure is not None:
            return self._failed(request, failure, request_id)
        batch = self._found(request, request_id)
        if isinstance(batch, web.Response):
            return batch
        if batch.ended_at is None and batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = _now()
            answer = self._batch_json(batch)
            self._end(batch, canceled=True)  # the next retrieval finds it ended
            return web.json_response(answer, headers={"request-id": request_id})
        return web.json_response(self._batch_json(batch), headers={"request-id": request_id})

    async def _batch_results(self, request: web.Request) -> web.StreamResponse:
        _, request_id, failure = await self._begin(request)
        if failure is not None:
            return self._failed(request, failure, request_id)
        batch = self._found(request, request_id)
        if isinstance(batch, web.Response):
            return batch
        if batch.ended_at is None:
            return self._error(400, request_id, message=f"batch {batch.id} has not ended")
        lines = []
        for number, item in enumerate(batch.requests):
            custom_id = item["custom_id"]
            outcome = batch.outcomes[custom_id]
            result: dict[str, Any] = {"type": outcome}
            if outcome == "succeeded":
                params = item["params"]
                reply = self._answer(params)
                result["message"] = self._message(params, reply, f"{batch.id}_{number:06d}")
            elif outcome == "errored":
                result["error"] = {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": self.batch_error_message,
                    },
                }
            lines.append(json.dumps({"custom_id": custom_id, "result": result}))
        if self.batch_results_order == "reversed":
            lines.reverse()
        return web.Response(
            body=("\n".join(lines) + "\n").encode(),
            content_type="application/binary",
            headers={"request-id": request_id},
        )


def _streams(body: Any) -> bool:
    return isinstance(body, dict) and body.get("stream") is True


def _chunks(reply: Reply) -> list[str]:
    if reply.chunks is not None:
        return list(reply.chunks)
    return _words(reply.text)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words) if w or i == 0]

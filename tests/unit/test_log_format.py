"""The JSON log format keeps every line, whatever text it carries."""

from __future__ import annotations

import json
import logging
import os

from taskd.logs import JsonFormatter


def test_a_json_log_line_with_a_lone_surrogate_is_written_escaped() -> None:
    # An exception message quoting undecodable bytes (os.fsdecode) holds a lone surrogate,
    # which is not UTF-8: the line must still be written, not replaced by a logging error.
    message = "no such file: " + os.fsdecode(b"\xff")
    record = logging.LogRecord("taskd.test", logging.ERROR, __file__, 1, message, None, None)
    record.taskd_fields = {"path": os.fsdecode(b"/tmp/\xfe")}
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["msg"] == message and parsed["path"] == os.fsdecode(b"/tmp/\xfe")
    assert "\\udcff" in line  # escaped, so the line is valid UTF-8
    line.encode("utf-8")

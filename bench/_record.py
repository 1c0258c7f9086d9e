"""Shared helper for the latency phase: a job body calls `record_start(payload)` first thing.

It appends one line ``tag trigger_time start_time`` to the file named by the environment
variable BENCH_LATENCY_FILE (set by bench/throughput.py on the worker process). Payloads of the
drain phase carry no ``t`` key, so the no-op bodies skip the write and stay no-ops.
"""

from __future__ import annotations

import os
import time
from typing import Any

_PATH = os.environ.get("BENCH_LATENCY_FILE")
_FD: int | None = None


def record_start(payload: Any) -> None:
    started = time.time()
    global _FD
    if not _PATH or not isinstance(payload, dict) or "t" not in payload:
        return
    if _FD is None:
        _FD = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_FD, f"{payload.get('tag', 'm')} {payload['t']!r} {started!r}\n".encode())


def record_resume(wake_at: float) -> None:
    """Resume phase: one line ``wake_time restart_time`` to BENCH_RESUME_FILE."""
    started = time.time()
    path = os.environ.get("BENCH_RESUME_FILE")
    if path:
        with open(path, "a") as out:
            out.write(f"{wake_at!r} {started!r}\n")

"""Procrastinate side of bench/throughput.py: the app for the `procrastinate` CLI.

    BENCH_DSN=postgresql://... procrastinate --app=bench.peer_procrastinate.app worker -c 20

BENCH_PROC_POOL sets the psycopg pool size of the worker (psycopg_pool's default is 4).
"""

from __future__ import annotations

import os

import procrastinate

from bench._record import record_start

_POOL = int(os.environ.get("BENCH_PROC_POOL", "4"))

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_DSN", ""), min_size=_POOL, max_size=_POOL
    ),
)


@app.task(name="noop")
async def noop(**payload: object) -> None:
    record_start(payload)

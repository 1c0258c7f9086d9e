"""The admin endpoint after the first claim (issue 18): the address is bound AND listening
before any claim, and a failure once the claims began drains instead of cancelling runs.

Real `taskd run` processes. The admin endpoint's code loads in a thread after the first claim;
the tests hold or break that load at a chosen moment with a stand-in ``prometheus_client``
package put first on the daemon's path: it waits for a file the test (or the run) creates, then
imports the real package, or raises ImportError as a broken install does. No part of taskd is
replaced.

- Two daemons on one ``admin.listen``: the second one starts while the first holds the address
  but has not loaded its endpoint yet (the window in which a bind without listen() let both
  bind). It must stop with the one-line ``admin.listen`` error before claiming anything.
- The admin load fails while a run executes: the daemon drains as on SIGTERM (the run goes
  back to the queue without spending an attempt), sends no READY, and exits non-zero with one
  line naming admin.listen.
- A SIGTERM while the endpoint loads: the daemon drains and exits 0, and never says it is
  ready (no "taskd ready", so no READY=1 either: both come from the same branch).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import asyncpg
import pytest

from taskd import Client, RunStatus
from tests.support.cli import Result, one_line_failure, taskd
from tests.support.daemon_process import daemons
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)

TASKS = """
import os

import anyio

from taskd import Context, task


@task(id="probe.hold")
async def hold(payload: dict, ctx: Context) -> None:
    with open(os.environ["RUN_STARTED"], "a") as started:
        started.write(f"{ctx.run_id} {ctx.attempt}\\n")
    await anyio.sleep_forever()  # until the drain cancels it
"""

# The stand-in: the admin load (in its thread) waits here for ADMIN_GATE, then goes on with
# the real package, or fails as a broken install when ADMIN_BREAK is set.
STAND_IN = """
import os
import sys
import time

_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_deadline = time.monotonic() + 60
while not os.path.exists(os.environ["ADMIN_GATE"]) and time.monotonic() < _deadline:
    time.sleep(0.01)
if os.environ.get("ADMIN_BREAK"):
    raise ImportError("prometheus_client is broken (the test's stand-in)")
del sys.modules[__name__]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import prometheus_client as _real

sys.modules[__name__] = _real
"""


def setup(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "probe_tasks.py").write_text(TASKS)
    stand_in = tmp_path / "stand_in" / "prometheus_client"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(STAND_IN)
    return {
        "TASKD_TASKS__MODULES": json.dumps(["probe_tasks"]),
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path / "stand_in"), str(tmp_path), os.environ.get("PYTHONPATH", "")]
        ),
        "RUN_STARTED": str(tmp_path / "started"),
        **extra,
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def run_started(tmp_path: Path) -> list[str]:
    started = tmp_path / "started"
    return started.read_text().splitlines() if started.exists() else []


async def test_a_second_daemon_on_the_same_admin_listen_stops_before_claiming(
    database: str, client: Client, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    gate = tmp_path / "admin-gate"
    env = setup(tmp_path, ADMIN_GATE=str(gate), TASKD_ADMIN__LISTEN=listen)
    held = await client.trigger("probe.hold", {})
    db = await asyncpg.connect(database)
    try:
        async with daemons() as group:
            first = await group.start(database, cwd=tmp_path, concurrency=1, **env)
            # the first daemon claimed; its endpoint is bound and not loaded (the gate)
            await wait_for(lambda: run_started(tmp_path), timeout=30)
            assert first.find(lambda r: r["msg"].startswith("taskd ready")) == []
            waiting = await client.trigger("probe.hold", {})  # what a second daemon would take
            second: Result = await taskd(database, "run", cwd=tmp_path, timeout=30, **env)
            problem = one_line_failure(second, "admin.listen", listen, "address already in use")
            assert problem is None, problem
            assert "database" not in second.err, second
            gate.touch()  # the first daemon's endpoint loads and serves
            await first.ready()
            row = await db.fetchrow(
                "SELECT status, attempt, worker_id FROM taskd.runs WHERE id = $1", waiting
            )
            assert (row["status"], row["attempt"], row["worker_id"]) == ("queued", 0, None), row
            # the second daemon never registered, nor started a run
            workers = await db.fetchval("SELECT count(*) FROM taskd.workers")
            assert workers == 1, f"{workers} workers registered"
            assert len(await run_started(tmp_path)) == 1
            assert await first.stop() == 0, first.output()
    finally:
        await db.close()
    assert (await client.get_run(held)).status is RunStatus.QUEUED  # handed back by the drain


async def test_an_admin_endpoint_failing_after_the_first_claim_drains_and_exits_with_one_line(
    database: str, client: Client, tmp_path: Path
) -> None:
    # the admin load fails the moment the run has started
    env = setup(tmp_path, ADMIN_GATE=str(tmp_path / "started"), ADMIN_BREAK="1")
    run_id = await client.trigger("probe.hold", {})
    async with daemons() as group:
        daemon = await group.start(
            database, cwd=tmp_path, concurrency=1, shutdown_grace="0.5s", **env
        )
        code = await daemon.stop(signum=None, timeout=60)
    assert await run_started(tmp_path) == [f"{run_id} 1"], daemon.output()
    assert code != 0, daemon.output()
    # stdout is the log (the traceback of the failed load is there, for the operator); the
    # exit's message is stderr's one line
    result = Result(("run",), code, "", "\n".join(daemon.stderr))
    problem = one_line_failure(result, "admin.listen", "ImportError", "prometheus_client")
    assert problem is None, problem
    assert daemon.find(lambda r: r["msg"].startswith("taskd ready")) == [], daemon.output()
    assert daemon.find(lambda r: r["msg"].startswith("taskd stopped")), daemon.output()
    run = await client.get_run(run_id)
    # handed back by the drain: queued again, its attempt not spent
    assert (run.status, run.attempt, run.worker_id) == (RunStatus.QUEUED, 0, None), run


async def test_a_sigterm_while_the_admin_endpoint_loads_drains_without_ready(
    database: str, client: Client, tmp_path: Path
) -> None:
    gate = tmp_path / "admin-gate"
    env = setup(tmp_path, ADMIN_GATE=str(gate))
    run_id = await client.trigger("probe.hold", {})
    async with daemons() as group:
        daemon = await group.start(
            database, cwd=tmp_path, concurrency=1, shutdown_grace="0.5s", **env
        )
        await wait_for(lambda: run_started(tmp_path), timeout=30)
        daemon.process.send_signal(signal.SIGTERM)  # the endpoint is still loading (the gate)
        await daemon.wait_for_record(lambda r: r["msg"].startswith("stopping"), timeout=30)
        gate.touch()  # the load ends while the daemon drains
        code = await daemon.stop(signum=None, timeout=60)
    assert code == 0, daemon.output()
    assert daemon.find(lambda r: r["msg"].startswith("taskd ready")) == [], daemon.output()
    run = await client.get_run(run_id)
    assert (run.status, run.attempt, run.worker_id) == (RunStatus.QUEUED, 0, None), run

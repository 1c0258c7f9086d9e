"""What `taskd run` has imported when it makes its first claim (issue 18: start-up CPU).

The admin endpoint's code (aiohttp's server, the API's models, the metrics' exporter), the
Anthropic SDK, the inbound webhook listener, the status webhooks' HTTP client and the cron math
cost as much CPU as the rest of the start-up and no claim needs them: they load after the first
claim, or when first used. A real `taskd run` (the CLI's path, shipped defaults, the admin
endpoint on) records ``sys.modules`` at the moment its claimer makes its first claim, then
exits; the test reads the record. An import added back on that path fails here, whatever the
machine's speed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from tests.support.cli import cli_env

# Started by `python PROBE`: the CLI's own entry point, with the claimer's first claim replaced
# by a record of what is imported then.
PROBE = """
import json, os, sys

from taskd.worker.claimer import Claimer


async def first_claim(self):
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
    os._exit(0)


Claimer.run_once = first_claim

from taskd.cli import main

main(["run"])
"""

TASKS = """
from taskd import Context, schedules, task, ScheduledRun


@task(id="probe.work")
async def work(payload: dict, ctx: Context) -> None:
    return None
"""

# Modules no claim needs, each of which a start-up used to load (or would, on an easy slip).
LATE = (
    "aiohttp",  # the admin endpoint's server and the status webhooks' client
    "aiohttp.web",
    "taskd.admin.server",
    "taskd.admin.api",
    "taskd.admin.schemas",
    "taskd.admin.openapi",
    "taskd.admin.metrics",  # the /metrics exporter: built with the endpoint
    "prometheus_client",
    "apscheduler",  # cron math: loaded by the first cron computed (no schedule here)
    "taskd.hooks.server",
    "anthropic",
    "httpx",
)


async def test_the_first_claim_comes_before_the_admin_endpoint_and_the_sdks_load(
    database: str, tmp_path: Path
) -> None:
    (tmp_path / "probe_tasks.py").write_text(TASKS)
    (tmp_path / "probe.py").write_text(PROBE)
    record = tmp_path / "modules.json"
    env = cli_env(
        database,
        TASKD_TASKS__MODULES=json.dumps(["probe_tasks"]),
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        PROBE_OUT=str(record),
    )
    assert env["TASKD_ADMIN__LISTEN"]  # the endpoint is on: bound, not yet loaded
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, str(tmp_path / "probe.py")], env=env, cwd=tmp_path, check=False
        )
    assert done.returncode == 0 and record.exists(), done.stderr.decode()[-3000:]
    modules = set(json.loads(record.read_text()))
    assert "taskd.app" in modules and "taskd.worker.claimer" in modules  # the probe was real
    assert "taskd.admin.listen" in modules  # the admin address is bound before the claim
    loaded = [name for name in LATE if name in modules]
    assert loaded == [], f"imported before the first claim: {loaded}"

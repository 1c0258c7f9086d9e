"""taskd.testing as a task author's project meets it: pytest, in a project of its own with no
conftest, gets the ``taskd_tester`` fixture from taskd's ``pytest11`` entry point, and a
test there runs a task through a retry backoff it skips (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_TEST = """
from datetime import timedelta

from taskd import Context, Retry, RunStatus, task
from taskd.testing import Tester


@task(id="sync-invoices", retry=Retry(max_attempts=3, min_delay=30, max_delay=30, jitter=False))
async def sync_invoices(payload: dict, ctx: Context) -> dict:
    if ctx.attempt == 1:
        raise ConnectionError("the billing API timed out")
    return {"synced": payload["account"]}


async def test_a_transient_failure_is_retried(taskd_tester: Tester) -> None:
    result = await taskd_tester.run(sync_invoices, {"account": "acme"})
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"synced": "acme"}
    assert len(result.attempts) == 2
    first, second = result.attempts
    assert second.started_at - first.finished_at >= timedelta(seconds=30)


async def test_a_day_goes_by(taskd_tester: Tester) -> None:
    before = taskd_tester.now()
    await taskd_tester.advance(hours=24)
    assert taskd_tester.now() - before >= timedelta(hours=24)
"""


def test_a_project_gets_the_fixtures_from_the_entry_point(tmp_path: Path, server_dsn: str) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_invoices.py").write_text(PROJECT_TEST)
    env = {**os.environ, "TASKD_TEST_DSN": server_dsn}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_invoices.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout

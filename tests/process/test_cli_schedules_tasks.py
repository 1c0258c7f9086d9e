"""`taskd schedules trigger ID` (seed 001 tests its daily report by firing it) and
`taskd tasks list [--json]`, run as a user runs them: in subprocesses."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import orjson

from taskd import Client, Context, RunStatus, ScheduledRun, schedules
from tests.support.cli import one_line_failure, taskd, taskd_all
from tests.support.paths import ROOT
from tests.support.waiting import wait_for_run


@schedules.task(id="cli.daily-report", cron="0 9 * * *", timezone="Europe/Paris")
async def daily_report(payload: ScheduledRun, ctx: Context) -> dict[str, object]:
    return {"manual": payload.manual, "day": payload.timestamp.date().isoformat()}


async def test_schedules_trigger_fires_now_and_prints_the_run_id(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([daily_report]):
        before = await client.get_schedule("cli.daily-report")
        results = await taskd_all(
            database,
            {
                "fired": ("schedules", "trigger", "cli.daily-report"),
                "missing": ("schedules", "trigger", "no-such-schedule"),
            },
            cwd=ROOT,
            timeout=60,
        )
        fired = results["fired"]
        assert fired.code == 0 and fired.err == "", str(fired)
        run_id = uuid.UUID(fired.out.strip())
        run = await wait_for_run(client, run_id)
        after = await client.get_schedule("cli.daily-report")
    assert run.status is RunStatus.COMPLETED, run.error
    assert isinstance(run.output, dict) and run.output["manual"] is True
    assert run.schedule_id == "cli.daily-report" and run.scheduled_for is None
    assert (after.next_fire_at, after.last_fired_at) == (before.next_fire_at, before.last_fired_at)
    problem = one_line_failure(results["missing"], "no schedule with id 'no-such-schedule'", code=1)
    assert problem is None, problem


async def test_schedules_create_update_delete(database: str, client: Client, start_daemon) -> None:
    async with start_daemon([daily_report]):
        results = await taskd_all(
            database,
            {
                "created": (
                    *("schedules", "create", "cli.daily-report", "0 8 * * 1"),
                    *("--timezone", "America/New_York", "--payload", '{"plan": "pro"}'),
                    *("--external-id", "user-42", "--dedup-key", "k-42", "--catch-up", "all"),
                ),
                "never": ("schedules", "create", "cli.daily-report", "0 0 30 2 *"),
                "unknown": ("schedules", "create", "nobody", "@daily"),
                "bad_json": ("schedules", "create", "cli.daily-report", "@daily", "--payload", "{"),
            },
            cwd=ROOT,
            timeout=60,
        )
        created = results["created"]
        assert created.code == 0 and created.err == "", str(created)
        schedule_id = created.out.strip()
        stored = await client.get_schedule(schedule_id)
        assert (stored.task_id, stored.cron, stored.timezone, stored.catch_up) == (
            "cli.daily-report",
            "0 8 * * 1",
            "America/New_York",
            "all",
        )
        assert (stored.payload, stored.external_id, stored.dedup_key) == (
            {"plan": "pro"},
            "user-42",
            "k-42",
        )
        for name, needle, code in (
            ("never", "never fires", 1),
            ("unknown", "unknown task 'nobody'", 1),
            ("bad_json", "--payload is not valid JSON", 2),
        ):
            problem = one_line_failure(results[name], needle, code=code)
            assert problem is None, problem

        updated = await taskd(
            database,
            *("schedules", "update", schedule_id, "--cron", "30 7 * * 1-5"),
            *("--external-id", "", "--payload", "null"),
            cwd=ROOT,
            timeout=60,
        )
        assert updated.code == 0, str(updated)
        assert updated.out.strip() == f"{schedule_id} updated: 30 7 * * 1-5 America/New_York"
        changed = await client.get_schedule(schedule_id)
        assert (changed.cron, changed.external_id, changed.payload) == ("30 7 * * 1-5", None, None)

        results = await taskd_all(
            database,
            {
                "bad_zone": ("schedules", "update", schedule_id, "--timezone", "Mars/Base"),
                "missing": ("schedules", "update", "nope", "--cron", "@daily"),
            },
            cwd=ROOT,
            timeout=60,
        )
        for name, needle in (
            ("bad_zone", "unknown timezone 'Mars/Base'"),
            ("missing", "no schedule with id 'nope'"),
        ):
            problem = one_line_failure(results[name], needle, code=1)
            assert problem is None, problem

        deleted = await taskd(database, "schedules", "delete", schedule_id, cwd=ROOT, timeout=60)
        again = await taskd(database, "schedules", "delete", schedule_id, cwd=ROOT, timeout=60)
    assert deleted.code == 0 and deleted.out.strip() == f"{schedule_id} deleted", str(deleted)
    problem = one_line_failure(again, f"no schedule with id '{schedule_id}'", code=1)
    assert problem is None, problem
    assert [s.id for s in await client.list_schedules()] == ["cli.daily-report"]


PROJECT_MODULE = """
from taskd import Queue, Retry, schedules, task

reports = Queue("reports", concurrency=2)


@task(id="send-email", retry=Retry(max_attempts=7, min_delay=2, max_delay=30, factor=3),
      max_duration=45)
async def send_email(payload, ctx):
    return None


@task(id="welcome", on_event="user.signup", queue=reports)
async def welcome(payload, ctx):
    return None


@schedules.task(id="nightly", cron="0 2 * * *", timezone="Europe/Paris", catch_up="none")
async def nightly(payload, ctx):
    return None
"""


def project(tmp_path: Path, modules: list[str]) -> Path:
    """A project of its own: its package, and a config naming its modules (no database)."""
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(textwrap.dedent(PROJECT_MODULE))
    config = tmp_path / "taskd-test.toml"
    config.write_text(f"[tasks]\nmodules = {orjson.dumps(modules).decode()}\n")
    return config


async def test_tasks_list_reads_the_configured_modules_without_a_database(
    tmp_path: Path,
) -> None:
    config = project(tmp_path, ["myapp.jobs"])
    as_json = await taskd(None, "tasks", "list", "--json", "--config", str(config), cwd=tmp_path)
    table = await taskd(None, "tasks", "list", "--config", str(config), cwd=tmp_path)
    assert as_json.code == 0 and as_json.err == "", str(as_json)
    listed = {t["id"]: t for t in orjson.loads(as_json.out)}
    assert list(listed) == ["nightly", "send-email", "welcome"]
    assert listed["send-email"] == {
        "id": "send-email",
        "module": "myapp.jobs",
        "queue": "default",
        "retry": {"max_attempts": 7, "min_delay": 2, "max_delay": 30, "factor": 3, "jitter": True},
        "max_duration": 45,
        "schedule": None,
        "events": [],
    }
    assert listed["welcome"]["queue"] == "reports"
    assert listed["welcome"]["events"] == ["user.signup"]
    assert listed["nightly"]["schedule"] == {
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "catch_up": "none",
    }
    assert table.code == 0, str(table)
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "QUEUE", "RETRY", "MAX", "DURATION", "SCHEDULE", "EVENTS"]
    assert [row.split()[0] for row in rows] == ["nightly", "send-email", "welcome"]
    assert "7 attempts, 2s-30s x3" in rows[1] and "45s" in rows[1]
    assert "0 2 * * * Europe/Paris" in rows[0]
    assert "user.signup" in rows[2]


async def test_tasks_list_with_a_module_that_cannot_be_imported(tmp_path: Path) -> None:
    config = project(tmp_path, ["myapp.jobs", "myapp.missing"])
    result = await taskd(None, "tasks", "list", "--config", str(config), cwd=tmp_path)
    problem = one_line_failure(result, "cannot import 'myapp.missing'", code=2)
    assert problem is None, problem


async def test_tasks_list_shows_the_project_defaults_where_a_task_sets_none(
    tmp_path: Path,
) -> None:
    config = project(tmp_path, ["myapp.jobs"])
    result = await taskd(
        None,
        "tasks",
        "list",
        "--json",
        "--config",
        str(config),
        cwd=tmp_path,
        TASKD_TASKS__RETRY__MAX_ATTEMPTS="9",
        TASKD_TASKS__MAX_DURATION="2m",
    )
    assert result.code == 0, str(result)
    listed = {t["id"]: t for t in orjson.loads(result.out)}
    # as a daemon with this config runs them: the defaults where the task set nothing
    assert listed["welcome"]["retry"]["max_attempts"] == 9
    assert listed["welcome"]["max_duration"] == 120
    # a task's own policy is kept whole
    assert listed["send-email"]["retry"]["max_attempts"] == 7
    assert listed["send-email"]["max_duration"] == 45

"""`taskd` as a user runs it: trigger, runs list/show, and one-line errors (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import asyncpg
import orjson

from taskd import Client, Context, Retry, RunStatus, task
from tests.support.cli import Result, one_line_failure, taskd, taskd_all
from tests.support.paths import ROOT
from tests.support.waiting import wait_for_run

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"


@task(id="cli.echo")
async def echo(payload: dict, ctx: Context) -> dict:
    return {"echo": payload}


@task(id="cli.boom", retry=Retry(max_attempts=2, min_delay=0, max_delay=0, jitter=False))
async def boom(payload: dict, ctx: Context) -> None:
    raise ValueError("boom went the task")


def printed_run_id(result: Result) -> uuid.UUID:
    assert result.code == 0, str(result)
    assert result.err == "", str(result)
    lines = result.out.splitlines()
    assert len(lines) == 1, str(result)
    return uuid.UUID(lines[0])


async def test_trigger_prints_the_run_id_and_the_daemon_runs_it(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([echo]):
        results = await taskd_all(
            database,
            {
                "delayed": (
                    *("trigger", "cli.echo", "--payload", '{"n": 1, "s": "é"}'),
                    *("--delay", "10s", "--priority", "3", "--tag", "a", "--tag", "b"),
                ),
                "now": ("trigger", "cli.echo", "--payload", '{"n": 2}'),
            },
        )
        delayed_id = printed_run_id(results["delayed"])
        now_id = printed_run_id(results["now"])

        done = await wait_for_run(client, now_id)
        assert done.status is RunStatus.COMPLETED
        assert done.output == {"echo": {"n": 2}}
        assert [a.outcome for a in done.attempts] == ["completed"]

        delayed = await client.get_run(delayed_id)
    assert delayed.task_id == "cli.echo"
    assert delayed.payload == {"n": 1, "s": "é"}
    assert delayed.priority == 3
    assert delayed.tags == ["a", "b"]
    assert delayed.status is RunStatus.QUEUED, "a run delayed 10s does not start at once"
    assert abs((delayed.run_at - delayed.created_at).total_seconds() - 10) < 0.5
    assert done.priority == 0 and done.tags == []


async def test_runs_list_and_show(database: str, client: Client, start_daemon) -> None:
    async with start_daemon([echo, boom]):
        ok = await client.trigger("cli.echo", {"n": 1})
        bad = await client.trigger("cli.boom", {"n": 2})
        assert (await wait_for_run(client, ok)).status is RunStatus.COMPLETED
        assert (await wait_for_run(client, bad)).status is RunStatus.FAILED
    later = await client.trigger("cli.echo", {"n": 3}, delay="1h", tags=["later"])
    newest_first = [later, bad, ok]

    results = await taskd_all(
        database,
        {
            "table": ("runs", "list"),
            "json": ("runs", "list", "--json"),
            "failed": ("runs", "list", "--json", "--status", "failed"),
            "two statuses": (
                "runs",
                "list",
                "--json",
                "--status",
                "completed",
                "--status",
                "queued",
            ),
            "by task": ("runs", "list", "--json", "--task", "cli.echo"),
            "no match": ("runs", "list", "--json", "--task", "cli.nothing"),
            "show bad": ("runs", "show", str(bad)),
            "show ok": ("runs", "show", str(ok)),
            "show later": ("runs", "show", str(later)),
            "show bad json": ("runs", "show", str(bad), "--json"),
        },
    )
    for result in results.values():
        assert result.code == 0 and result.err == "", str(result)

    # the table: a header and one row per run, newest first
    lines = results["table"].out.splitlines()
    assert lines[0].split() == ["ID", "TASK", "STATUS", "ATTEMPT", "CREATED", "FINISHED"]
    rows = [line.split() for line in lines[1:]]
    assert [uuid.UUID(row[0]) for row in rows] == newest_first
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("cli.echo", "QUEUED", "0"),
        ("cli.boom", "FAILED", "2"),
        ("cli.echo", "COMPLETED", "1"),
    ]
    assert rows[0][-1] == "-", "a queued run has not finished"

    listed = orjson.loads(results["json"].out)
    assert [uuid.UUID(r["id"]) for r in listed] == newest_first
    assert [(r["status"], r["payload"]) for r in listed] == [
        ("queued", {"n": 3}),
        ("failed", {"n": 2}),
        ("completed", {"n": 1}),
    ]
    assert listed[0]["tags"] == ["later"]
    assert listed[1]["error"]["message"] == "boom went the task"
    assert listed[2]["output"] == {"echo": {"n": 1}}

    def ids(name: str) -> list[uuid.UUID]:
        return [uuid.UUID(r["id"]) for r in orjson.loads(results[name].out)]

    assert ids("failed") == [bad]
    assert ids("two statuses") == [later, ok]
    assert ids("by task") == [later, ok]
    assert ids("no match") == []

    shown = results["show bad"].out
    assert f"run       {bad}" in shown
    assert "cli.boom" in shown
    assert "FAILED" in shown and "attempt 2 " in shown
    assert '{"n":2}' in shown
    assert "ValueError: boom went the task" in shown
    attempts = shown.split("\nattempts\n", 1)[1].splitlines()
    assert attempts[0].split()[:2] == ["#", "OUTCOME"]
    assert [row.split()[:2] for row in attempts[1:]] == [["1", "failed"], ["2", "failed"]]
    assert all("ValueError: boom went the task" in row for row in attempts[1:])

    shown = results["show ok"].out
    assert "COMPLETED" in shown
    assert 'output    {"echo":{"n":1}}' in shown
    attempts = shown.split("\nattempts\n", 1)[1].splitlines()
    assert [row.split()[:2] for row in attempts[1:]] == [["1", "completed"]]

    shown = results["show later"].out
    assert "QUEUED" in shown and "later" in shown
    assert "\nattempts\n" not in shown

    detail = orjson.loads(results["show bad json"].out)
    assert uuid.UUID(detail["id"]) == bad
    assert detail["status"] == "failed"
    assert detail["attempt"] == 2
    assert [(a["attempt"], a["outcome"]) for a in detail["attempts"]] == [
        (1, "failed"),
        (2, "failed"),
    ]
    assert detail["attempts"][0]["error"]["message"] == "boom went the task"


async def test_errors_are_one_line_without_a_traceback(
    database: str, client: Client, start_daemon
) -> None:
    async with start_daemon([echo]):
        pass  # registers cli.echo in taskd.tasks
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "UPDATE taskd.settings SET value = '100' WHERE key = 'max_payload_bytes'"
        )
    finally:
        await connection.close()
    unknown_id = str(uuid.uuid4())
    big = orjson.dumps({"text": "x" * 200}).decode()
    cases: dict[str, tuple[Sequence[str], Sequence[str]]] = {
        "bad run id": (("runs", "show", "not-a-uuid"), ("not-a-uuid",)),
        "unknown run id": (("runs", "show", unknown_id), (unknown_id,)),
        "unknown task": (("trigger", "no.such.task"), ("no.such.task",)),
        "bad payload JSON": (
            ("trigger", "cli.echo", "--payload", "{not json"),
            ("--payload", "JSON"),
        ),
        "payload over the limit": (
            ("trigger", "cli.echo", "--payload", big),
            ("limit", "100 bytes"),
        ),
        "bad delay": (("trigger", "cli.echo", "--delay", "soon"), ("soon",)),
    }
    unreachable = {
        "list, database unreachable": ("runs", "list"),
        "show, database unreachable": ("runs", "show", unknown_id),
        "trigger, database unreachable": ("trigger", "cli.echo"),
        "migrate, database unreachable": ("migrate",),
    }
    results = await taskd_all(database, {name: args for name, (args, _) in cases.items()})
    results |= await taskd_all(UNREACHABLE, unreachable)
    problems = [one_line_failure(results[name], *needles) for name, (_, needles) in cases.items()]
    problems += [one_line_failure(results[name], "database") for name in unreachable]
    assert [p for p in problems if p] == []
    assert all(r.out == "" for r in results.values())
    assert await client.list_runs() == [], "no failed trigger left a run behind"


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(source)


DUPLICATE = """
from taskd import task


@task(id="same.id")
async def {name}(payload, ctx):
    return None
"""


async def test_duplicate_task_ids_stop_startup_with_exit_2(database: str, tmp_path: Path) -> None:
    write_module(tmp_path, "first_tasks", DUPLICATE.format(name="first"))
    write_module(tmp_path, "second_tasks", DUPLICATE.format(name="second"))
    result = await taskd(
        database,
        "run",
        cwd=tmp_path,
        timeout=20,
        TASKD_TASKS__MODULES='["first_tasks", "second_tasks"]',
    )
    problem = one_line_failure(result, "same.id", "first_tasks", "second_tasks", code=2)
    assert problem is None, problem


async def test_a_task_module_that_cannot_be_imported_stops_startup(
    database: str, tmp_path: Path
) -> None:
    write_module(tmp_path, "needs_missing", "import no_such_dependency_for_taskd\n")
    write_module(tmp_path, "raises_on_import", "raise RuntimeError('no config for me')\n")
    modules = {
        "missing dependency": "needs_missing",
        "module raises": "raises_on_import",
        "no such module": "not_a_module_here",
    }
    results = await taskd_all(
        database,
        {name: ("run",) for name in modules},
        cwd=tmp_path,
        timeout=20,
        env={name: {"TASKD_TASKS__MODULES": f'["{module}"]'} for name, module in modules.items()},
    )
    problems = [
        one_line_failure(results["missing dependency"], "needs_missing", "no_such_dependency"),
        one_line_failure(results["module raises"], "raises_on_import", "no config for me"),
        one_line_failure(results["no such module"], "not_a_module_here"),
    ]
    assert [p for p in problems if p] == []
    assert all(r.code == 2 for r in results.values()), [str(r) for r in results.values()]


async def test_a_closed_pipe_is_not_a_traceback(database: str, start_daemon) -> None:
    async with start_daemon([]):
        shell = f"TASKD_DATABASE__URL='{database}' {sys.executable} -m taskd status | head -1"
        result = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                ["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
        )
    assert result.stdout.startswith("workers: 1 live")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr

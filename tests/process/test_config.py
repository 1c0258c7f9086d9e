"""Configuration: config.toml, TASKD_* overrides, durations, and one-line errors naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from taskd.config import load_settings
from taskd.errors import ConfigError
from tests.support.cli import one_line_failure, taskd, taskd_all
from tests.support.paths import ROOT


@pytest.fixture(autouse=True)
def _no_taskd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own TASKD_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("TASKD_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_config_loads_with_its_documented_values() -> None:
    settings = load_settings(ROOT / "config.toml")
    assert settings.database.url == ""
    assert settings.worker.concurrency == 100
    assert settings.worker.queues == []
    assert settings.worker.poll_interval == 1.0
    assert settings.worker.shutdown_grace == 30.0
    assert settings.worker.lease == 60.0
    assert settings.worker.heartbeat == 10.0
    assert settings.tasks.modules == [
        "tasks.dump",
        "tasks.daily_report",
        "tasks.user_registration",
        "tasks.data_import",
        "tasks.run_history",
        "tasks.analyst_workflow",
    ]
    assert settings.tasks.max_payload_bytes == 1_048_576
    assert settings.log.level == "INFO"
    assert settings.log.format == "auto"


def test_environment_variables_override_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = "postgresql://app:secret@db.example:5432/app"
    monkeypatch.setenv("TASKD_WORKER__CONCURRENCY", "7")
    monkeypatch.setenv("TASKD_TASKS__MODULES", '["a.b"]')
    monkeypatch.setenv("TASKD_DATABASE__URL", dsn)
    monkeypatch.setenv("TASKD_WORKER__POLL_INTERVAL", "500ms")
    monkeypatch.setenv("TASKD_LOG__FORMAT", "text")
    settings = load_settings(ROOT / "config.toml")
    assert settings.worker.concurrency == 7
    assert settings.tasks.modules == ["a.b"]
    assert settings.database.url == dsn
    assert settings.worker.poll_interval == 0.5
    assert settings.log.format == "text"
    # keys not overridden keep the file's values
    assert settings.worker.claim_batch == 1000
    assert settings.tasks.max_payload_bytes == 1_048_576


def test_environment_overrides_a_value_set_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[worker]\nconcurrency = 3\n[tasks]\nmodules = ['from.file']\n")
    assert load_settings(path).worker.concurrency == 3
    monkeypatch.setenv("TASKD_WORKER__CONCURRENCY", "9")
    monkeypatch.setenv("taskd_tasks__modules", '["from.env"]')  # names are case-insensitive
    settings = load_settings(path)
    assert settings.worker.concurrency == 9
    assert settings.tasks.modules == ["from.env"]


def test_durations_accept_units_and_plain_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [database]
        connect_timeout = 2
        [worker]
        poll_interval = 0.25
        shutdown_grace = "5m"
        lease = "1h30m"
        heartbeat = "30s"
        """,
    )
    settings = load_settings(path)
    assert settings.database.connect_timeout == 2.0
    assert settings.worker.poll_interval == 0.25
    assert settings.worker.shutdown_grace == 300.0
    assert settings.worker.lease == 5400.0
    assert settings.worker.heartbeat == 30.0


BAD_FILES = {
    "bad value": ('[worker]\nconcurrency = "lots"\n', ["worker.concurrency", "lots"]),
    "out of range": ("[worker]\nconcurrency = 0\n", ["worker.concurrency"]),
    "bad choice": ('[log]\nlevel = "LOUD"\n', ["log.level", "LOUD"]),
    "unknown key": ("[worker]\nconcurency = 3\n", ["worker.concurency", "unknown key"]),
    "unknown section": ("[wrker]\nconcurrency = 3\n", ["wrker", "unknown key"]),
    "bad duration": ('[worker]\npoll_interval = "soon"\n', ["worker.poll_interval", "soon"]),
    "negative duration": ('[worker]\nshutdown_grace = "-5s"\n', ["worker.shutdown_grace"]),
    "lease under 3 heartbeats": (
        '[worker]\nlease = "20s"\nheartbeat = "10s"\n',
        ["lease", "heartbeat"],
    ),
    "invalid TOML": ("[worker\nconcurrency = 3\n", [".toml: not valid TOML", "line 1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, case: str) -> None:
    text, needles = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    message = str(raised.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_settings(missing)


def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKD_WORKER__CONCURRENCY", "zero")
    with pytest.raises(ConfigError) as raised:
        load_settings(ROOT / "config.toml")
    assert "TASKD_WORKER__CONCURRENCY" in str(raised.value)
    assert "zero" in str(raised.value)
    monkeypatch.setenv("TASKD_WORKER__CONCURRENCY", "4")
    monkeypatch.setenv("TASKD_WORKER__BOGUS", "1")
    with pytest.raises(ConfigError, match=r"worker\.bogus .*unknown key"):
        load_settings(ROOT / "config.toml")


def test_list_variables_take_json_or_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKD_TASKS__MODULES", "a.b, c.d")
    monkeypatch.setenv("TASKD_WORKER__QUEUES", '["emails", "reports"]')
    settings = load_settings(ROOT / "config.toml")
    assert settings.tasks.modules == ["a.b", "c.d"]
    assert settings.worker.queues == ["emails", "reports"]


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("TASKD_TASKS__MODULES", '["a.b"', "tasks.modules"),
        ("TASKD_WORKER__QUEUES", "[emails]", "worker.queues"),
    ],
)
def test_a_list_variable_with_broken_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    """Not pydantic-settings' ``error parsing value for field "tasks" from source ...``."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(ROOT / "config.toml")
    message = str(raised.value)
    assert "\n" not in message
    assert key in message and variable in message, message


# through the CLI -------------------------------------------------------------------------------


# Never the embedded server: if startup got past the config, it fails fast instead.
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/unreachable"


async def test_cli_bad_config_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    cases: dict[str, tuple[list[str], dict[str, str], list[str]]] = {}
    # the in-process tests above cover every kind of problem; here, one of each path to exit 2
    for case in ("bad value", "unknown section", "lease under 3 heartbeats", "invalid TOML"):
        text, needles = BAD_FILES[case]
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        path = write(folder, text, "bad.toml")
        cases[f"--config with {case}"] = (["run", "--config", str(path)], {}, needles)
    cases["--config missing"] = (
        ["run", "--config", str(tmp_path / "missing.toml")],
        {},
        ["missing.toml"],
    )
    named = write(tmp_path, "[log]\nformat = 'xml'\n", "named.toml")
    cases["TASKD_CONFIG naming a bad file"] = (
        ["run"],
        {"TASKD_CONFIG": str(named)},
        ["log.format", "xml"],
    )
    cases["bad env value"] = (
        ["run"],
        {"TASKD_WORKER__CONCURRENCY": "zero"},
        ["TASKD_WORKER__CONCURRENCY", "zero"],
    )
    cases["broken JSON list in env"] = (
        ["run"],
        {"TASKD_TASKS__MODULES": '["a.b"'},
        ["TASKD_TASKS__MODULES"],
    )
    cases["unknown env key"] = (["run"], {"TASKD_WORKER__BOGUS": "1"}, ["worker.bogus"])
    cases["config error on migrate"] = (
        ["migrate"],
        {"TASKD_WORKER__CONCURRENCY": "zero"},
        ["TASKD_WORKER__CONCURRENCY"],
    )
    results = await taskd_all(
        UNREACHABLE,
        {name: args for name, (args, _, _) in cases.items()},
        cwd=tmp_path,
        env={name: env for name, (_, env, _) in cases.items()},
    )
    failures = {
        name: problem
        for name, (_, _, needles) in cases.items()
        if (problem := one_line_failure(results[name], *needles, code=2))
    }
    assert not failures, "\n".join(f"{name}: {problem}" for name, problem in failures.items())


async def test_cli_reads_the_file_given_or_config_toml_in_the_working_directory(
    database: str, tmp_path: Path
) -> None:
    """The database url comes from the file alone (no TASKD_DATABASE__URL)."""
    text = f'[database]\nurl = "{database}"\n'
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    given = write(elsewhere, text, "taskd.toml")
    here = tmp_path / "here"
    here.mkdir()
    write(here, text)  # ./config.toml
    results = {}

    async def list_runs(name: str, args: list[str], cwd: Path) -> None:
        done = await taskd(None, "runs", "list", "--json", *args, cwd=cwd)
        results[name] = (done.code, done.out, done.err)

    async with anyio.create_task_group() as group:
        group.start_soon(list_runs, "--config", ["--config", str(given)], tmp_path)
        group.start_soon(list_runs, "./config.toml", [], here)
    assert results == {"--config": (0, "[]\n", ""), "./config.toml": (0, "[]\n", "")}


def test_a_misspelled_section_in_an_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKD_WROKER__CONCURRENCY", "7")
    with pytest.raises(ConfigError, match=r"TASKD_WROKER__CONCURRENCY: unknown section 'wroker'"):
        load_settings(None)

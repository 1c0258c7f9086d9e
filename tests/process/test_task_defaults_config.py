"""[tasks] retry and [tasks] max_duration: the project's defaults, from the file or the
environment, and one line naming the key (exit 2 from the CLI) when one is bad."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from taskd import Retry
from taskd.config import RetrySettings, load_settings
from taskd.errors import ConfigError
from tests.support.cli import one_line_failure, taskd


@pytest.fixture(autouse=True)
def _no_taskd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TASKD_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_defaults_are_the_built_in_retry_and_no_limit() -> None:
    settings = load_settings(None)
    assert Retry(**settings.tasks.retry.model_dump()) == Retry()
    assert RetrySettings().model_dump() == dataclasses.asdict(Retry())
    assert settings.tasks.max_duration == 0


def test_a_table_in_the_file_and_variables_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        '[tasks]\nmax_duration = "15m"\n'
        '[tasks.retry]\nmax_attempts = 5\nmin_delay = "2s"\nmax_delay = "5m"\njitter = false\n',
    )
    settings = load_settings(path)
    assert settings.tasks.retry == RetrySettings(
        max_attempts=5, min_delay=2, max_delay=300, factor=2, jitter=False
    )
    assert settings.tasks.max_duration == 900
    inline = write(tmp_path, "[tasks]\nretry = { max_attempts = 7, factor = 3 }\n", "inline.toml")
    assert load_settings(inline).tasks.retry.max_attempts == 7
    monkeypatch.setenv("TASKD_TASKS__RETRY__FACTOR", "1.5")
    monkeypatch.setenv("TASKD_TASKS__MAX_DURATION", "30s")
    settings = load_settings(path)
    # one field from the environment, the others from the file
    assert settings.tasks.retry.factor == 1.5 and settings.tasks.retry.max_attempts == 5
    assert settings.tasks.retry.min_delay == 2
    assert settings.tasks.max_duration == 30


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tasks.retry]\nmax_attempts = 0\n",
         "tasks.retry.max_attempts (TASKD_TASKS__RETRY__MAX_ATTEMPTS): Input should be greater"),
        ('[tasks.retry]\nmin_delay = "soon"\n',
         "tasks.retry.min_delay (TASKD_TASKS__RETRY__MIN_DELAY): not a duration: 'soon'"),
        ("[tasks.retry]\nmin_delay = 120\n",
         "tasks.retry (TASKD_TASKS__RETRY): min_delay (120s) must not exceed max_delay (60s)"),
        ("[tasks.retry]\nfactor = 0.5\n",
         "tasks.retry.factor (TASKD_TASKS__RETRY__FACTOR): Input should be greater than"),
        ("[tasks.retry]\nbackoff = 2\n",
         "tasks.retry.backoff (TASKD_TASKS__RETRY__BACKOFF): unknown key"),
        ('[tasks]\nretry = "fast"\n', "tasks.retry (TASKD_TASKS__RETRY):"),
        ('[tasks]\nmax_duration = "-5m"\n', "tasks.max_duration (TASKD_TASKS__MAX_DURATION):"),
    ],
)  # fmt: skip
def test_a_bad_default_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert str(caught.value).startswith("config error: ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


async def test_the_cli_exits_2_on_a_bad_default(tmp_path: Path) -> None:
    path = write(tmp_path, "[tasks.retry]\nmin_delay = 120\n")
    result = await taskd(None, "run", "--config", str(path))
    assert not one_line_failure(result, "tasks.retry", "must not exceed max_delay", code=2)
    result = await taskd(None, "run", TASKD_TASKS__RETRY__MAX_ATTEMPTS="many")
    assert not one_line_failure(result, "TASKD_TASKS__RETRY__MAX_ATTEMPTS", "many", code=2)

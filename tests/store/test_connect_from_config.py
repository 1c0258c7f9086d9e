"""`Client.connect()` without a DSN: the database of the project's configuration, found as the
`taskd` commands find it (a taskd.toml from the working directory up), the environment first."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from taskd import Client


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("TASKD_")]:
        monkeypatch.delenv(name)


def name_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def current_database(client: Client) -> str:
    name: str = await client.pool.fetchval("SELECT current_database()")
    return name


@pytest.mark.usefixtures("clean_environment")
async def test_connect_with_no_argument_uses_the_projects_taskd_toml(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "taskd.toml").write_text(
        f'[database]\nurl = "{database}"\npool_min_size = 1\npool_max_size = 3\n'
    )
    below = tmp_path / "src" / "shop"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    async with Client.connect() as client:
        assert await current_database(client) == name_of(database)
        assert client.pool.get_max_size() == 3  # the file's [database] pool settings
        assert await client.list_runs() == []


@pytest.mark.usefixtures("clean_environment")
async def test_the_environment_overrides_the_file_as_for_the_daemon(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "taskd.toml").write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:1/x"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKD_DATABASE__URL", database)
    async with Client.connect() as client:
        assert await current_database(client) == name_of(database)

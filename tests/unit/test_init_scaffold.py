"""`taskd init`'s files and the config discovery they rely on: which package the sample task goes
in, what is refused, that what it writes loads (the config validates, the module registers a task
with a retry that logs), and which taskd.toml a command started in a folder reads."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from taskd import Retry
from taskd.config import find_config, load_settings
from taskd.scaffold import InitError, next_steps, plan_init, write_init
from taskd.sdk.registry import Registry


@pytest.fixture(autouse=True)
def no_taskd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("TASKD_")]:
        monkeypatch.delenv(name)


def project(root: Path, *packages: str, name: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    project_table = f'[project]\nname = "{name}"\n' if name else ""
    (root / "pyproject.toml").write_text(project_table)
    for package in packages:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    return root


def init(root: Path, package: str | None = None, force: bool = False) -> list[str]:
    return [p.as_posix() for p in write_init(plan_init(root, package), force=force)]


@pytest.mark.parametrize(
    ("packages", "name", "given", "module", "sample"),
    [
        (["src/shop"], None, None, "shop.tasks", "src/shop/tasks.py"),
        (["shop"], None, None, "shop.tasks", "shop/tasks.py"),
        (["tests", "docs", "shop"], None, None, "shop.tasks", "shop/tasks.py"),
        (["src/api", "src/my_shop"], "my-shop", None, "my_shop.tasks", "src/my_shop/tasks.py"),
        (["src/api", "src/web"], None, "web", "web.tasks", "src/web/tasks.py"),
        (["shop", "shop/jobs"], None, "shop.jobs", "shop.jobs.tasks", "shop/jobs/tasks.py"),
        (["src/shop", "src/shop/tasks"], None, "shop.tasks", "shop.tasks.example", None),
        ([], None, None, "tasks.example", "tasks/example.py"),
    ],
)
def test_the_sample_module_goes_in_the_projects_package(
    tmp_path: Path,
    packages: list[str],
    name: str | None,
    given: str | None,
    module: str,
    sample: str | None,
) -> None:
    root = project(tmp_path / "p", *packages, name=name)
    plan = plan_init(root, given)
    assert plan.module == module
    written = init(root, given)
    assert "taskd.toml" in written
    if sample:
        assert sample in written
    assert load_settings(root / "taskd.toml").tasks.modules == [module]


@pytest.mark.parametrize(
    ("packages", "given", "message"),
    [
        (["src/api", "src/web"], None, "several packages here (src/api, src/web): say which"),
        (["shop"], "nope", "--package nope: no such package here"),
        (["shop"], "my-shop", "--package: 'my-shop' is not a Python package name"),
    ],
)
def test_an_unclear_package_is_a_usage_error(
    tmp_path: Path, packages: list[str], given: str | None, message: str
) -> None:
    root = project(tmp_path / "p", *packages)
    with pytest.raises(InitError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        plan_init(root, given)
    assert caught.value.usage
    assert not (root / "taskd.toml").exists()


def test_init_writes_only_in_a_projects_root(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="does not look like a project's root"):
        plan_init(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_refused_and_nothing_is_written_unless_forced(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "src/shop")
    (root / "src" / "shop" / "tasks.py").write_text("# mine\n")
    with pytest.raises(InitError, match=r"^src/shop/tasks.py exists; not overwriting it") as caught:
        init(root)
    assert not caught.value.usage
    assert not (root / "taskd.toml").exists()
    assert (root / "src" / "shop" / "tasks.py").read_text() == "# mine\n"

    assert init(root, force=True) == ["taskd.toml", "src/shop/tasks.py"]
    assert "@task(" in (root / "src" / "shop" / "tasks.py").read_text()


def test_the_data_directory_is_added_to_an_existing_gitignore_once(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "shop")
    (root / ".gitignore").write_text("__pycache__/")  # no final newline
    plan = plan_init(root)
    written = write_init(plan)
    assert (root / ".gitignore").read_text().splitlines() == [
        "__pycache__/",
        "# taskd dev's embedded PostgreSQL",
        ".taskd/",
    ]
    assert "added .taskd/ to .gitignore" in next_steps(plan, written)
    assert not plan_init(root).gitignore  # already ignored: left alone

    bare = project(tmp_path / "bare", "shop")
    init(bare)
    assert not (bare / ".gitignore").exists()


def test_what_init_writes_loads_and_the_sample_task_retries_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path / "p", "src/initsample", name="initsample")
    init(root)
    settings = load_settings(root / "taskd.toml")
    assert settings.database.url == ""
    assert settings.database.data_dir == root / ".taskd" / "pgdata"
    assert settings.tasks.pythonpath == [root / "src"]

    monkeypatch.chdir(tmp_path)  # not the root: [tasks] pythonpath makes the package importable
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        registry = Registry.from_modules(settings.tasks.modules, settings.tasks.pythonpath)
        (hello,) = registry
        assert hello.id == "hello"
        assert hello.retry == Retry(max_attempts=3, min_delay=1, max_delay=30)

        lines: list[tuple[str, dict[str, Any]]] = []

        class Log:
            def info(self, message: str, **fields: Any) -> None:
                lines.append((message, fields))

        class Ctx:
            log = Log()

        payload = hello.parse_payload({"name": "Ada"})
        output = asyncio.run(hello(payload, Ctx()))  # type: ignore[arg-type]
        assert output == {"greeting": "Hello, Ada!"}
        assert lines == [("saying hello", {"name": "Ada"})]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "initsample"]:
            del sys.modules[name]


def test_taskd_toml_is_found_from_the_working_directory_up_to_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "outer" / "repo"
    deep = repo / "src" / "shop" / "jobs"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()
    (tmp_path / "outer" / "taskd.toml").write_text("")  # above the repository: never read
    assert find_config(deep) is None

    (repo / "taskd.toml").write_text("")
    assert find_config(deep) == (repo / "taskd.toml").absolute()
    assert find_config(repo) == (repo / "taskd.toml").absolute()

    (deep / "config.toml").write_text("")  # the old name, read only where the command runs
    assert find_config(deep) == (repo / "taskd.toml").absolute()
    (repo / "taskd.toml").unlink()
    assert find_config(deep) == deep / "config.toml"
    assert find_config(deep.parent) is None

    monkeypatch.setenv("TASKD_CONFIG", "/etc/taskd/config.toml")
    assert find_config(deep) == Path("/etc/taskd/config.toml")

    monkeypatch.delenv("TASKD_CONFIG")
    monkeypatch.chdir(deep)
    assert find_config() == deep / "config.toml"


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "taskd.toml"
    path.write_text(
        '[database]\ndata_dir = "state/pg"\n[tasks]\nmodules = []\npythonpath = ["src", "/opt/x"]\n'
    )
    settings = load_settings(path)
    assert settings.database.data_dir == tmp_path / "conf" / "state" / "pg"
    assert settings.tasks.pythonpath == [tmp_path / "conf" / "src", Path("/opt/x")]
    assert load_settings(None).database.data_dir == Path(".taskd/pgdata")  # no file: the cwd's

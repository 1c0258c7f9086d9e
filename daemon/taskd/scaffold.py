"""`taskd init`: what it writes into an existing project (its ``taskd.toml`` and a sample
task module in the project's own package), and how it finds that package."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from taskd.config import PROJECT_CONFIG

SAMPLE_TASK_ID = "hello"
DATA_DIR = ".taskd"
"""Where `taskd dev`'s embedded PostgreSQL keeps its files, inside the project."""

# Files or folders that say "this is a project's root"; init refuses to write anywhere else.
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", ".git")
# Folders with an __init__.py that are not the application's package.
NOT_THE_PACKAGE = frozenset(
    {"tests", "test", "testing", "docs", "doc", "examples", "scripts", "bench", "benchmarks"}
)
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IGNORES_DATA_DIR = {DATA_DIR, f"{DATA_DIR}/", f"/{DATA_DIR}", f"/{DATA_DIR}/"}


class InitError(Exception):
    """Why init wrote nothing; ``usage``: the command line (or the project) must say more."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Package:
    name: str
    """Its import name, dotted."""
    base: Path
    """The directory it is imported from: the project root, or its ``src/``."""


@dataclass
class Plan:
    """What init writes: file contents by path (relative to the root), and the .gitignore."""

    root: Path
    module: str
    """The sample task module's import name, registered in ``[tasks] modules``."""
    files: dict[Path, str] = field(default_factory=dict)
    created_if_missing: dict[Path, str] = field(default_factory=dict)
    """Written only when absent, never a conflict (the ``__init__.py`` of a new ``tasks/``)."""
    gitignore: bool = False
    """True: ``.gitignore`` exists and does not ignore the data directory yet."""


def find_package(root: Path, given: str | None = None) -> Package | None:
    """The project's package: ``given`` (``--package``), else the one named like the project
    (``[project] name`` in pyproject.toml), else the only one under ``src/`` or the root;
    None when there is none. Several, none named like the project: InitError."""
    bases = [root / "src", root]
    if given is not None:
        if not _DOTTED.fullmatch(given):
            raise InitError(f"--package: {given!r} is not a Python package name", usage=True)
        relative = Path(*given.split("."))
        for base in bases:
            if (base / relative / "__init__.py").is_file():
                return Package(given, base)
        raise InitError(
            f"--package {given}: no such package here (no src/{relative.as_posix()}/__init__.py "
            f"nor {relative.as_posix()}/__init__.py)",
            usage=True,
        )
    found = [
        Package(child.name, base)
        for base in bases
        if base.is_dir()
        for child in sorted(base.iterdir())
        if child.is_dir()
        and child.name.isidentifier()
        and not child.name.startswith("_")
        and child.name not in NOT_THE_PACKAGE
        and (child / "__init__.py").is_file()
    ]
    wanted = _project_name(root)
    for package in found:
        if package.name == wanted:
            return package
    if len(found) > 1:
        names = ", ".join(_shown(package, root) for package in found)
        raise InitError(f"several packages here ({names}): say which with --package", usage=True)
    return found[0] if found else None


def plan_init(root: Path, given: str | None = None) -> Plan:
    """What ``taskd init`` writes in ``root`` (nothing is written yet)."""
    if not any((root / marker).exists() for marker in PROJECT_MARKERS):
        raise InitError(
            f"{root} does not look like a project's root (no {', '.join(PROJECT_MARKERS[:-1])} "
            "or .git): run taskd init in your project's root",
            usage=True,
        )
    package = find_package(root, given)
    if package is None:
        folder = root / "tasks"
        plan = Plan(root, "tasks.example")
        plan.created_if_missing[folder / "__init__.py"] = '"""The tasks of this project."""\n'
        sample = folder / "example.py"
        pythonpath = "."
        owner = "this project"
    else:
        directory = package.base.joinpath(*package.name.split("."))
        leaf = "example" if package.name.rpartition(".")[2] == "tasks" else "tasks"
        plan = Plan(root, f"{package.name}.{leaf}")
        sample = directory / f"{leaf}.py"
        pythonpath = package.base.relative_to(root).as_posix()
        owner = package.name
    plan.files[root / PROJECT_CONFIG] = config_text(plan.module, pythonpath)
    plan.files[sample] = sample_module_text(owner)
    gitignore = root / ".gitignore"
    plan.gitignore = gitignore.is_file() and not _ignores_data_dir(gitignore.read_text())
    return plan


def write_init(plan: Plan, *, force: bool = False) -> list[Path]:
    """Write the plan; without ``force`` refuse (writing nothing) if one of its files exists.
    Returns the files written, relative to the root (the .gitignore is not among them)."""
    if not force:
        for path in plan.files:
            if path.exists():
                relative = path.relative_to(plan.root).as_posix()
                raise InitError(f"{relative} exists; not overwriting it (--force replaces it)")
    written = []
    for path, text in plan.created_if_missing.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    if plan.gitignore:
        gitignore = plan.root / ".gitignore"
        current = gitignore.read_text()
        separator = "" if not current or current.endswith("\n") else "\n"
        gitignore.write_text(
            f"{current}{separator}# taskd dev's embedded PostgreSQL\n{DATA_DIR}/\n"
        )
    return [path.relative_to(plan.root) for path in written]


def config_text(module: str, pythonpath: str) -> str:
    return f"""\
# taskd's configuration for this project (written by `taskd init`). Every `taskd` command and
# taskd.Client.connect() started in this directory, or in one below it, read this file.
# Any key can be overridden by an environment variable TASKD_<SECTION>__<KEY>, e.g.
# TASKD_DATABASE__URL or TASKD_WORKER__CONCURRENCY; every key is in the README, "Configuration".

[database]
# Empty: the embedded PostgreSQL under data_dir, started on demand (`taskd dev` always uses
# it). In production set TASKD_DATABASE__URL=postgresql://user:password@host/db in the
# environment, not here: the URL carries the password.
url = ""
data_dir = "{DATA_DIR}/pgdata"   # relative to this file

[tasks]
modules = ["{module}"]   # the modules whose @task functions the daemon runs
pythonpath = ["{pythonpath}"]   # put on sys.path before they are imported (relative to this file)

[worker]
concurrency = 100   # most runs executing at once in one daemon

[admin]
listen = "127.0.0.1:8787"   # the admin HTTP endpoint and its API; "" turns it off
"""


def sample_module_text(owner: str) -> str:
    return f'''\
"""Background tasks of {owner}, run by `taskd dev` (or `taskd run`) from the project's root.

Written by `taskd init` as a start: this module is listed in taskd.toml ([tasks] modules);
add tasks here, or in modules of their own listed there. Trigger this one with
`taskd trigger {SAMPLE_TASK_ID} --payload '{{"name": "Ada"}}'`, or from your application:

    async with taskd.Client.connect() as client:   # the database taskd.toml configures
        run_id = await client.trigger("{SAMPLE_TASK_ID}", {{"name": "Ada"}})
"""

from pydantic import BaseModel
from taskd import Context, Retry, task


class HelloIn(BaseModel):
    """The payload: validated before the task runs (a payload that does not fit fails the run
    at once, without retries)."""

    name: str = "world"


@task(
    id="{SAMPLE_TASK_ID}",
    # a failed attempt (an exception) is tried again: 3 attempts in all, 1 s then about 2 s
    # apart (exponential backoff, at most 30 s, with jitter)
    retry=Retry(max_attempts=3, min_delay=1, max_delay=30),
    max_duration="1m",  # an attempt running longer is cancelled, and counts as failed
)
async def hello(payload: HelloIn, ctx: Context) -> dict[str, str]:
    # ctx.log lines go to the daemon's output and are stored with the run (`taskd logs`);
    # they carry the run's id, the task and the attempt
    ctx.log.info("saying hello", name=payload.name)
    return {{"greeting": f"Hello, {{payload.name}}!"}}  # the run's output, stored as JSON
'''


def next_steps(plan: Plan, written: list[Path]) -> str:
    """What init prints: what it wrote, then the commands to run next."""
    changed = ", ".join(path.as_posix() for path in written)
    if plan.gitignore:
        changed += f"; added {DATA_DIR}/ to .gitignore"
    return f"""\
taskd init: wrote {changed}

Next, from this directory:
  taskd tasks list        the tasks of {plan.module}: {SAMPLE_TASK_ID}
  taskd dev               the daemon, on an embedded PostgreSQL under {DATA_DIR}/ (Ctrl-C stops it)
then, in another terminal:
  taskd trigger {SAMPLE_TASK_ID} --payload '{{"name": "Ada"}}'
  taskd runs list
  taskd logs

From your application (the same database, found through {PROJECT_CONFIG}):
  async with taskd.Client.connect() as client:
      await client.trigger("{SAMPLE_TASK_ID}", {{"name": "Ada"}})
"""


def _project_name(root: Path) -> str | None:
    """``[project] name`` of pyproject.toml as an import name (``my-app`` -> ``my_app``)."""
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    project = data.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    return re.sub(r"[-.]+", "_", name).lower() if isinstance(name, str) else None


def _shown(package: Package, root: Path) -> str:
    return (package.base / package.name).relative_to(root).as_posix()


def _ignores_data_dir(text: str) -> bool:
    return any(line.strip() in _IGNORES_DATA_DIR for line in text.splitlines())

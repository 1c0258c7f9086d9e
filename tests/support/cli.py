"""`taskd` as a user runs it, in a subprocess: one command, several at once, and the check
that a failure is one line on stderr with no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

TASKD = Path(sys.executable).parent / "taskd"


@dataclass
class Result:
    args: Sequence[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        command = " ".join(self.args)
        return f"taskd {command} -> exit {self.code}\nstdout: {self.out!r}\nstderr: {self.err!r}"


def cli_env(dsn: str | None, **extra: str) -> dict[str, str]:
    """The test's environment without its TASKD_ variables; ``dsn`` None: no database URL, so
    the command reads it from its configuration file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKD_")}
    if dsn is not None:
        env["TASKD_DATABASE__URL"] = dsn
    env["TASKD_ADMIN__LISTEN"] = "127.0.0.1:0"
    env.update(extra)
    return env


async def taskd(
    dsn: str | None, *args: str, cwd: Path | None = None, timeout: float = 30, **env: str
) -> Result:
    with anyio.fail_after(timeout):
        done = await anyio.run_process(
            [str(TASKD), *args], cwd=cwd, env=cli_env(dsn, **env), check=False
        )
    return Result(args, done.returncode, done.stdout.decode(), done.stderr.decode())


async def taskd_all(
    dsn: str | None,
    commands: dict[str, Sequence[str]],
    *,
    cwd: Path | None = None,
    timeout: float = 30,
    env: dict[str, dict[str, str]] | None = None,
) -> dict[str, Result]:
    """Run several `taskd` commands at once (each is a whole process start); results by name.

    ``env`` gives some commands extra environment variables, by name.
    """
    results: dict[str, Result] = {}

    async def one(name: str, args: Sequence[str]) -> None:
        extra = (env or {}).get(name, {})
        results[name] = await taskd(dsn, *args, cwd=cwd, timeout=timeout, **extra)

    async with anyio.create_task_group() as group:
        for name, args in commands.items():
            group.start_soon(one, name, args)
    return results


def one_line_failure(result: Result, *needles: str, code: int | None = None) -> str | None:
    """None when ``result`` failed as the CLI promises; otherwise what is wrong."""
    problems = []
    if result.code == 0 or (code is not None and result.code != code):
        problems.append(f"exit code {result.code}, expected {code or 'non-zero'}")
    if "Traceback" in result.err or "Traceback" in result.out:
        problems.append("a traceback was printed")
    if len(result.err.splitlines()) != 1:
        problems.append(f"{len(result.err.splitlines())} lines on stderr, expected 1")
    problems += [f"{needle!r} not in the message" for needle in needles if needle not in result.err]
    return f"{'; '.join(problems)}\n{result}" if problems else None

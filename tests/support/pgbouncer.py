"""PgBouncer (Debian's ``pgbouncer`` package) started in front of the test server.

``running_pgbouncer(server_dsn)`` starts one in transaction mode (or ``pool_mode``) on a free
local port, with Debian's defaults otherwise: no ``ignore_startup_parameters``, no
``max_prepared_statements`` (1.18 has none). Every database of the server is reachable through
it under its own name (``* =``); ``bouncer.through(dsn)`` is ``dsn`` with the bouncer's address.
Tests skip (with the reason) when the binary is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
START_TIMEOUT = 10.0


def pgbouncer_missing() -> str | None:
    """Why PgBouncer tests cannot run here, or None."""
    if not os.access(PGBOUNCER, os.X_OK):
        return "pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does)"
    return None


@dataclass
class Bouncer:
    host: str
    port: int
    log: Path

    def through(self, dsn: str) -> str:
        """``dsn`` (a database of the test server) reached through this PgBouncer."""
        parts = urlsplit(dsn)
        user = parts.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@{self.host}:{self.port}", parts.path, "", ""))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _server_address(server_dsn: str) -> tuple[str, int]:
    """Host (or socket directory) and port of the server PgBouncer connects to."""
    parts = urlsplit(server_dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "/tmp"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return host, port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_pgbouncer(
    server_dsn: str, *, pool_mode: str = "transaction", pool_size: int = 4
) -> Iterator[Bouncer]:
    host, server_port = _server_address(server_dsn)
    user = urlsplit(server_dsn).username or "postgres"
    folder = Path(tempfile.mkdtemp(prefix="taskd-pgbouncer-"))
    folder.chmod(0o755)  # read by the user PgBouncer runs as (below)
    port = _free_port()
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={server_port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        "max_client_conn = 200\n"
        f"default_pool_size = {pool_size}\n"
    )
    for name in ("users.txt", "pgbouncer.ini"):
        (folder / name).chmod(0o644)
    command = [PGBOUNCER]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: as the user that owns the server's socket
        # directory (the embedded server's unprivileged user), which may connect to it
        owner = Path(host).stat().st_uid if host.startswith("/") else 65534
        command += ["-u", _user_name(owner)]
    command.append(str(folder / "pgbouncer.ini"))
    log = folder / "pgbouncer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    bouncer = Bouncer("127.0.0.1", port, log)
    try:
        _wait_listening(process, bouncer)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _user_name(uid: int) -> str:
    import pwd

    return pwd.getpwuid(uid).pw_name


def _wait_listening(process: subprocess.Popen[bytes], bouncer: Bouncer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {bouncer.log_text()}")
        try:
            with socket.create_connection((bouncer.host, bouncer.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen within {START_TIMEOUT} s: {bouncer.log_text()}")

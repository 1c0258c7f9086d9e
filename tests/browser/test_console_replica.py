"""The console's footer with [admin] read_url: the replica's lag, then the fallback when the
replica stops (a real primary and streaming replica: tests/support/replica.py)."""

from __future__ import annotations

import re

import anyio
import asyncpg
from playwright.async_api import Browser, expect

from taskd.config import Settings
from taskd.store.migrations import apply_migrations
from tests.support.browser import (
    TOKEN,
    PageProblems,
    axe_check,
    login,
    new_page,
    screenshot,
    serve_console,
)
from tests.support.replica import replica_pair, wait_replayed


async def test_the_footer_shows_the_replica_lag_and_the_fallback_to_the_primary(
    browser: Browser,
) -> None:
    async with replica_pair("taskd-console-replica-") as pair:
        connection = await asyncpg.connect(pair.primary.dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        await wait_replayed(pair)

        def read_replica(settings: Settings) -> None:
            settings.admin.read_url = pair.replica.dsn

        async with serve_console(pair.primary.dsn, read_replica) as console:
            context, page = await new_page(browser, console)
            problems = PageProblems()
            problems.watch(page)
            try:
                await login(page, TOKEN)
                footer = page.locator("#replica-status")
                # the daemon writes all the time (heartbeats): the lag is small, not nil
                await expect(footer).to_have_text(
                    re.compile(r"^Reading from the replica: lag \d+\.\d\d s, [\d,]+ bytes of WAL$")
                )
                await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
                await screenshot(page, "replica-footer")

                await anyio.to_thread.run_sync(pair.stop, pair.replica)
                await page.reload()
                await expect(footer).to_have_text("Replica unreachable: reading from the primary")
                await expect(footer).to_have_class("statusbar warn")
                # the runs page still answers, from the primary
                await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
                await axe_check(page)
            finally:
                await context.close()
            assert problems.errors == [], problems.errors

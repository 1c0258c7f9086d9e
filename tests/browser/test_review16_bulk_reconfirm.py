"""Bulk replay from the Runs page when the preview's estimate was far too low: the daemon
refuses with the exact count and the page asks again with that number."""

from __future__ import annotations

import asyncpg
from playwright.async_api import Page, expect

from tests.support.browser import Console
from tests.support.runs import each, insert_runs


async def test_the_page_asks_again_with_the_exact_count(
    page: Page, console: Console, db: asyncpg.Connection
) -> None:
    # 400 runs of customer acme, then 12,100 newer ones of which 5 are acme's: the preview of a
    # value search reads the newest 12,000 runs and extrapolates from those 5
    await insert_runs(db, 400, task_id="review16.order", status="failed", payload='{"c": "acme"}')
    await insert_runs(
        db,
        12_100,
        task_id="review16.order",
        status="failed",
        payload=each(['{"c": "other"}'] * 12_095 + ['{"c": "acme"}'] * 5),
    )
    await page.goto("/#/runs?search=acme")
    await expect(page.locator("tbody tr[data-run]")).to_have_count(5)

    await page.get_by_role("button", name="Replay all matching…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Replay about")
    await dialog.get_by_role("button", name="Replay about").click()
    await expect(dialog).to_contain_text("405 runs match the current filters, not about")
    await dialog.get_by_role("button", name="Replay 405").click()
    await expect(
        page.get_by_role("status").filter(has_text="Replayed 405 of 405 runs")
    ).to_be_visible()
    assert await db.fetchval("SELECT count(*) FROM taskd.runs WHERE status = 'queued'") == 405

"""A search continued past its first page keeps what it found when new runs arrive."""

from __future__ import annotations

import asyncpg
from playwright.async_api import Page, expect

from tests.support.browser import Console
from tests.support.runs import each, insert_runs


async def test_new_matches_go_on_top_of_a_continued_search(
    page: Page, console: Console, db: asyncpg.Connection
) -> None:
    # 3 old runs of acme below 12,497 newer ones: the first page of a value search (12,000
    # rows read) finds none of them, "continue" does
    old = await insert_runs(
        db, 3, task_id="review16.order", status="failed", payload='{"c": "acme"}'
    )
    await insert_runs(
        db, 12_497, task_id="review16.order", status="failed", payload=each(['{"c": "x"}'] * 12_497)
    )
    await page.goto("/#/runs?search=acme")
    await expect(page.get_by_role("status").filter(has_text="No match yet")).to_be_visible()
    await page.get_by_role("button", name="continue").click()
    rows = page.locator("tbody tr[data-run]")
    await expect(rows).to_have_count(3)

    new = await console.trigger("console.echo", {"c": "acme"})
    await expect(rows.first).to_have_attribute("data-run", str(new))
    await expect(rows).to_have_count(4)
    shown = await rows.evaluate_all("rows => rows.map((row) => row.dataset.run)")
    assert shown == [str(new), *sorted((str(i) for i in old), reverse=True)]

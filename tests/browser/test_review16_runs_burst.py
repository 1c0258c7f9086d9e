"""The Runs list when more runs arrive at once than one page holds: none goes missing."""

from __future__ import annotations

import uuid

from playwright.async_api import Page, expect

from tests.support.browser import Console


async def show_all(page: Page, total: int) -> list[str]:
    """Press "Older runs" until the list holds ``total`` runs; their ids, top to bottom."""
    rows = page.locator("tbody tr[data-run]")
    older = page.get_by_role("button", name="Older runs")
    for shown in range(50, total, 50):
        await expect(rows).to_have_count(shown)
        await older.click()
    await expect(rows).to_have_count(total)
    await expect(older).to_be_hidden()
    ids: list[str] = await rows.evaluate_all("rows => rows.map((row) => row.dataset.run)")
    return ids


async def test_a_burst_larger_than_a_page_leaves_no_gap_in_the_live_list(
    page: Page, console: Console
) -> None:
    await expect(page.get_by_role("status").filter(has_text="No runs match.")).to_be_visible()

    # an empty list, then 60 runs at once: 50 shown and the rest one press away
    first = await console.client.batch_trigger("console.echo", [{"n": n} for n in range(60)])
    rows = page.locator("tbody tr[data-run]")
    await expect(rows.first).to_have_attribute("data-run", str(max(first)))
    assert set(await show_all(page, 60)) == {str(i) for i in first}

    # 60 runs shown, then 120 more at once: the newest on top, and none of the 120 missing
    # between the newest page and the runs shown before
    second = await console.client.batch_trigger("console.echo", [{"n": n} for n in range(120)])
    await expect(rows.first).to_have_attribute("data-run", str(max(second)))
    ids = await show_all(page, 180)
    assert ids == sorted(ids, reverse=True)
    assert set(ids) == {str(i) for i in [*first, *second]}
    assert all(isinstance(uuid.UUID(i), uuid.UUID) for i in ids)

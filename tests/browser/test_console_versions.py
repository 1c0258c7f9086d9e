"""The console shows a run's version (README: "Versions: runs pinned to their code"): a column
of the Runs list, a row of the run's page, and the Version filter under "More filters"."""

from __future__ import annotations

from urllib.parse import quote

from playwright.async_api import Page, expect

from tests.support.browser import Console
from tests.support.waiting import wait_for_run


async def test_the_runs_list_shows_and_filters_by_version(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.echo", {"hello": "versions"})
    run = await wait_for_run(console.client, run_id)
    version = run.version
    assert version == console.daemon.version, (version, console.daemon.version)

    row = page.locator(f'tr[data-run="{run_id}"]')
    await expect(row).to_contain_text(version)

    await page.get_by_text("More filters").click()
    await page.get_by_label("Version").fill("no-such-version")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(f"{console.url}/#/runs?version=no-such-version")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)

    # the default version has a "+" (0.1.0+g<commit>): the filter's link must keep it
    await page.get_by_label("Version").fill(version)
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(f"{console.url}/#/runs?version={quote(version, safe='')}")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    await page.reload()  # a shared link gives the same list
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    await page.locator(f'tr[data-run="{run_id}"] a').first.click()
    await expect(page.locator("dl.facts")).to_contain_text(version)

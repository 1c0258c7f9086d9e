"""The console's pages on the routes of branch console-runs (search, counts, bulk actions by
filter, replay with an edited payload, error groups) and console-fleet (completing a wait
token): these pass once those branches are merged."""

from __future__ import annotations

import uuid

from playwright.async_api import Page, expect

from taskd import RunStatus
from tests.support.browser import Console, axe_check, screenshot
from tests.support.waiting import wait_for, wait_for_run


async def test_search_in_payloads_finds_a_run(page: Page, console: Console) -> None:
    acme = await console.trigger("console.echo", {"customer": "acme", "n": 1})
    globex = await console.trigger("console.echo", {"customer": "globex", "n": 2})
    await wait_for_run(console.client, globex, [RunStatus.COMPLETED])
    await page.get_by_label("Search (run id or JSON)").fill('{"customer":"acme"}')
    await page.get_by_role("button", name="Apply").click()
    rows = page.locator("tbody tr[data-run]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-run", str(acme))

    await page.get_by_label("Search (run id or JSON)").fill(str(globex))
    await page.get_by_role("button", name="Apply").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-run", str(globex))
    await screenshot(page, "runs-search")
    await axe_check(page)


async def test_counts_per_status(page: Page, console: Console) -> None:
    done = [await console.trigger("console.echo", {"n": n}) for n in range(3)]
    for run_id in done:
        await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])
    await page.goto("/#/runs?task=console.echo")
    counts = page.get_by_role("list", name="Runs per status")
    await expect(counts.get_by_role("link", name="completed")).to_contain_text("3")
    await counts.get_by_role("link", name="completed").click()
    await expect(page).to_have_url(f"{console.url}/#/runs?task=console.echo&status=completed")


async def test_bulk_cancel_and_replay_by_filter(page: Page, console: Console) -> None:
    sleepers = [await console.trigger("console.sleeps", {}) for _ in range(3)]
    echoed = [await console.trigger("console.echo", {"n": n}) for n in range(2)]
    for run_id in echoed:
        await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])

    await page.goto("/#/runs?task=console.sleeps")
    await page.get_by_role("button", name="Cancel all matching…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Cancel 3 unfinished runs matching the current filters?")
    await axe_check(page)
    await dialog.get_by_role("button", name="Cancel 3").click()
    await expect(page.get_by_role("status").filter(has_text="Canceled ")).to_be_visible()
    for run_id in sleepers:
        await wait_for_run(console.client, run_id, [RunStatus.CANCELED])

    await page.goto("/#/runs?task=console.echo")
    await page.get_by_role("button", name="Replay all matching…").click()
    await expect(dialog).to_contain_text("Replay 2 runs matching the current filters?")
    await dialog.get_by_role("button", name="Replay 2").click()
    rows = page.locator("tbody tr[data-run]")
    await expect(rows).to_have_count(4)

    async def replays() -> list[object]:
        runs = await console.client.list_runs(task="console.echo")
        return [run for run in runs if run.replayed_from in echoed]

    assert len(await wait_for(replays)) == 2


async def test_replay_with_an_edited_payload(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.echo", {"a": 1})
    await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])
    await page.goto(f"/#/runs/{run_id}")
    await page.get_by_text("Replay with an edited payload").click()
    await page.get_by_label("Payload (JSON)").fill('{"a": 2, "edited": true}')
    await page.get_by_role("button", name="Replay with this payload").click()
    await expect(page).not_to_have_url(f"{console.url}/#/runs/{run_id}")
    new_id = uuid.UUID(page.url.rsplit("/", 1)[1])
    replayed = await wait_for_run(console.client, new_id, [RunStatus.COMPLETED])
    assert replayed.payload == {"a": 2, "edited": True}
    assert replayed.replayed_from == run_id
    await expect(page.get_by_role("region", name="Output")).to_contain_text('"edited"')


async def test_a_failure_lands_in_its_error_group(page: Page, console: Console) -> None:
    failed = [await console.trigger("console.fails", {"order": n}) for n in (7, 8)]
    for run_id in failed:
        await wait_for_run(console.client, run_id, [RunStatus.FAILED])
    await page.goto("/#/errors")
    group = page.locator("tr[data-fingerprint]").filter(has_text="ValueError")
    await expect(group).to_have_count(1)  # two messages, one normalised group
    await expect(group).to_contain_text("could not be charged")
    await expect(group).to_contain_text("console.fails")
    await expect(group.locator("td.num").first).to_have_text("2")
    await screenshot(page, "errors")
    await axe_check(page)

    await group.get_by_role("link", name="Runs of this error").click()
    rows = page.locator("tbody tr[data-run]")
    await expect(rows).to_have_count(2)
    assert {await row.get_attribute("data-run") for row in await rows.all()} == {
        str(run_id) for run_id in failed
    }


async def test_complete_a_wait_token_from_the_run_page(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.token", {})
    await wait_for_run(console.client, run_id, [RunStatus.WAITING])
    await page.goto(f"/#/runs/{run_id}")
    await page.get_by_label("Output for token:1").fill('{"approved": true}')
    await page.get_by_role("button", name="Complete token:1").click()
    done = await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])
    assert done.output == {"token_output": {"approved": True}}
    await expect(page.get_by_role("heading", level=1)).to_contain_text("completed")

"""The Runs list and a run's page in real Chromium, on the admin API as it is: runs appear,
progress and finish live; a failure shows its traceback; cancel from the page; user data
renders as text; screenshots and axe-core on each page."""

from __future__ import annotations

import uuid

from playwright.async_api import Browser, Dialog, Page, expect

from taskd import RunStatus
from taskd.testing.anthropic import FakeAnthropic
from tests.support.browser import (
    TOKEN,
    Console,
    PageProblems,
    axe_check,
    login,
    new_page,
    screenshot,
    serve_console,
)
from tests.support.console_tasks import gate
from tests.support.llm import llm_config
from tests.support.waiting import wait_for_run


async def test_a_run_appears_progresses_and_completes_without_reload(
    page: Page, console: Console
) -> None:
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    name = uuid.uuid4().hex
    run_id = await console.trigger("console.progress", {"steps": 2, "gate": name})
    row = page.locator(f'tr[data-run="{run_id}"]')
    await expect(row).to_be_visible()
    await expect(row).to_have_attribute("data-status", "executing")

    gate(f"{name}:1").set()
    await expect(row.get_by_role("progressbar")).to_have_attribute("value", "0.5")
    await screenshot(page, "runs")
    await axe_check(page)

    gate(f"{name}:2").set()
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(row.get_by_role("progressbar")).to_have_attribute("value", "1")
    await expect(row.locator(".badge")).to_have_text("completed")


async def test_the_run_page_tells_the_story_live(page: Page, console: Console) -> None:
    name = uuid.uuid4().hex
    run_id = await console.trigger("console.progress", {"steps": 2, "gate": name, "echo": "hi"})
    await page.goto(f"/#/runs/{run_id}")
    heading = page.get_by_role("heading", level=1)
    await expect(heading).to_contain_text("console.progress")
    await expect(heading).to_contain_text("executing")
    timeline = page.get_by_role("list", name="Timeline")
    await expect(timeline.get_by_text("attempt 1 · running")).to_be_visible()

    gate(f"{name}:1").set()
    await expect(page.get_by_label("Progress")).to_have_attribute("value", "0.5")
    logs = page.get_by_role("table", name="Log lines, oldest first")
    await expect(logs).to_contain_text("step 1 of 2 done")

    gate(f"{name}:2").set()
    await expect(heading).to_contain_text("completed")
    await expect(timeline.get_by_text("attempt 1 · completed")).to_be_visible()
    await expect(logs).to_contain_text("step 2 of 2 done")
    output = page.get_by_role("region", name="Output")
    await expect(output).to_contain_text('"done"')
    await expect(output).to_contain_text('"hi"')
    await expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)

    await page.get_by_label("Level").select_option("warning")
    await expect(logs.get_by_text("step 1 of 2 done")).to_be_hidden()
    await page.get_by_label("Level").select_option("debug")
    await screenshot(page, "run")
    await axe_check(page)


async def test_a_failed_run_shows_its_traceback(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.fails", {"order": 42})
    await wait_for_run(console.client, run_id, [RunStatus.FAILED])
    await page.goto(f"/#/runs/{run_id}")
    errors = page.get_by_role("region", name="Error of attempt 1")
    await expect(errors).to_contain_text("ValueError")
    await expect(errors).to_contain_text("order 42 could not be charged")
    traceback = errors.locator("pre.traceback")
    await expect(traceback).to_contain_text("Traceback (most recent call last)")
    await expect(traceback).to_contain_text("console_tasks.py")
    await expect(page.get_by_role("list", name="Timeline")).to_contain_text("attempt 1 · failed")
    await screenshot(page, "run-failed")
    await axe_check(page)


async def test_cancel_from_the_run_page(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.sleeps", {})
    await page.goto(f"/#/runs/{run_id}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("executing")
    # by keyboard: the dialog opens focused on its safe answer; Escape keeps the run
    await page.get_by_role("button", name="Cancel run").focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    assert (await console.client.get_run(run_id)).status == RunStatus.EXECUTING

    await page.get_by_role("button", name="Cancel run").click()
    await expect(dialog).to_contain_text("Cancel this run of console.sleeps?")
    await axe_check(page)
    await dialog.get_by_role("button", name="Cancel run").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("canceled")
    assert (await console.client.get_run(run_id)).status == RunStatus.CANCELED


async def test_markup_in_a_payload_is_shown_as_text(page: Page, console: Console) -> None:
    dialogs: list[str] = []

    async def record(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    script = "<script>alert(1)</script>"
    image = "<img src=x onerror=alert(2)>"
    run_id = await console.trigger("console.echo", {"note": script, "pic": image, script: image})
    await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])
    await page.goto(f"/#/runs/{run_id}")
    payload = page.get_by_role("region", name="Payload")
    await expect(payload.get_by_text(f'"{script}"').first).to_be_visible()
    await expect(payload.get_by_text(f'"{image}"').first).to_be_visible()
    await expect(
        page.get_by_role("region", name="Output").get_by_text(f'"{image}"').first
    ).to_be_visible()
    assert await page.locator("main img").count() == 0
    assert await page.locator("main script").count() == 0
    await page.get_by_text("Replay with an edited payload").click()
    assert script in await page.get_by_label("Payload (JSON)").input_value()
    assert dialogs == []


async def test_a_payload_that_is_not_json_is_not_sent(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.echo", {"a": 1})
    await page.goto(f"/#/runs/{run_id}")
    await page.get_by_text("Replay with an edited payload").click()
    sent: list[str] = []
    page.on(
        "request", lambda request: sent.append(request.url) if "/replay" in request.url else None
    )
    await page.get_by_label("Payload (JSON)").fill('{"a": 1,')
    await page.get_by_role("button", name="Replay with this payload").click()
    await expect(page.get_by_role("alert")).to_contain_text("Not JSON")
    assert sent == []


async def test_the_read_only_session_gets_no_action_buttons(
    read_page: Page, console: Console
) -> None:
    run_id = await console.trigger("console.sleeps", {})
    await read_page.goto(f"/#/runs/{run_id}")
    await expect(read_page.get_by_role("heading", level=1)).to_contain_text("console.sleeps")
    await expect(
        read_page.get_by_text("Read-only session: the actions are hidden.")
    ).to_be_visible()
    await expect(read_page.get_by_role("button", name="Cancel run")).to_have_count(0)
    await expect(read_page.get_by_role("button", name="Replay")).to_have_count(0)
    await read_page.goto("/#/runs")
    await expect(read_page.get_by_role("button", name="Cancel all matching…")).to_have_count(0)
    await console.call("POST", f"/api/runs/{run_id}/cancel")


async def test_filters_and_older_pages(page: Page, console: Console) -> None:
    ids = [await console.trigger("console.echo", {"n": n}) for n in range(52)]
    failed = await console.trigger("console.fails", {"order": 1})
    await wait_for_run(console.client, failed, [RunStatus.FAILED])
    await page.goto("/#/runs?task=console.echo")
    rows = page.locator("tbody tr[data-run]")
    await expect(rows).to_have_count(50)
    await page.get_by_role("button", name="Older runs").click()
    await expect(rows).to_have_count(52)
    assert await page.locator(f'tr[data-run="{failed}"]').count() == 0
    assert await page.locator(f'tr[data-run="{ids[0]}"]').count() == 1

    await page.get_by_label("Task").fill("")
    await page.get_by_label("Status", exact=True).select_option("failed")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(f"{console.url}/#/runs?status=failed")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-run", str(failed))


async def test_a_waiting_run_shows_its_wait_and_its_token(page: Page, console: Console) -> None:
    run_id = await console.trigger("console.token", {})
    await wait_for_run(console.client, run_id, [RunStatus.WAITING])
    await page.goto(f"/#/runs/{run_id}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("waiting")
    timeline = page.get_by_role("list", name="Timeline")
    await expect(timeline).to_contain_text("token:1")
    await expect(timeline).to_contain_text("waiting (wakes")
    await expect(page.get_by_role("button", name="Complete token:1")).to_be_visible()
    await screenshot(page, "run-waiting")
    await axe_check(page)
    await console.call("POST", f"/api/runs/{run_id}/cancel")


async def test_children_llm_calls_tokens_and_cost(
    browser: Browser,
    database: str,
    fake_anthropic: FakeAnthropic,
    problems: PageProblems,
) -> None:
    fake_anthropic.reply("Queues wait so you do not.", input_tokens=1200, output_tokens=34)
    async with serve_console(database, llm_config(fake_anthropic)) as console:
        run_id = await console.trigger("console.parent", {"llm": True})
        await wait_for_run(console.client, run_id, [RunStatus.COMPLETED])
        context, page = await new_page(browser, console)
        problems.watch(page)
        try:
            await login(page, TOKEN)
            await page.goto(f"/#/runs/{run_id}")
            family = page.get_by_role("list", name="Children")
            await expect(family.get_by_role("link")).to_have_count(2)
            timeline = page.get_by_role("list", name="Timeline")
            await expect(timeline).to_contain_text("children:1")
            await expect(timeline.get_by_text("child console.echo · completed")).to_have_count(2)
            await expect(timeline).to_contain_text("LLM claude-haiku-4-5 · message")
            calls = page.get_by_role("table", name="LLM calls")
            await expect(calls).to_contain_text("claude-haiku-4-5")
            await expect(calls).to_contain_text("1200")
            costs = page.get_by_role("region", name="LLM calls, tokens and cost")
            await expect(costs).to_contain_text(
                "1 call · 1,200 input and 34 output tokens · $0.00137"
            )
            await screenshot(page, "run-children-llm")
            await axe_check(page)

            child = family.get_by_role("link").first
            await child.click()
            await expect(page.get_by_role("heading", level=1)).to_contain_text("console.echo")
            await expect(page.get_by_text("Parent:")).to_contain_text(str(run_id))
        finally:
            await context.close()
        assert problems.errors == [], problems.errors

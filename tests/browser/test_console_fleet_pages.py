"""The fleet pages in real Chromium: queues (pause and resume from the page), schedules (fire
now, pause and resume), workers (this daemon, its heartbeat ticking), and what the read-only
token sees on them: no working action."""

from __future__ import annotations

import os
import socket
from typing import Any

from playwright.async_api import Page, expect

from tests.support.browser import Console, axe_check, screenshot


async def _queue(console: Console, name: str) -> dict[str, Any]:
    queues = (await console.call("GET", "/api/queues"))["queues"]
    found: dict[str, Any] = next(q for q in queues if q["queue"] == name)
    return found


async def test_a_queue_is_paused_and_resumed_from_the_page(page: Page, console: Console) -> None:
    await console.call("POST", "/api/tasks/console.echo/trigger", {"payload": 1, "delay": "1h"})
    await page.goto("/#/queues")
    row = page.locator('tr[data-queue="default"]')
    await expect(row).to_contain_text("running")
    await expect(row.locator("td").nth(2)).to_have_text("1")  # delayed: the run due in an hour

    await page.get_by_role("button", name="Pause queue default").click()
    await expect(row).to_contain_text("paused")
    assert (await _queue(console, "default"))["paused"] is True
    await expect(page.get_by_role("status")).to_contain_text("Queue default paused")
    await axe_check(page)
    await screenshot(page, "queues")

    await page.get_by_role("button", name="Resume queue default").click()
    await expect(row).to_contain_text("running")
    assert (await _queue(console, "default"))["paused"] is False


async def test_a_schedule_fires_now_and_pauses_from_the_page(page: Page, console: Console) -> None:
    schedule = await console.call(
        "POST",
        "/api/schedules",
        {"task_id": "console.echo", "cron": "0 9 * * *", "timezone": "Asia/Tokyo"},
    )
    sid = schedule["id"]
    await page.goto("/#/schedules")
    row = page.locator(f'tr[data-schedule-id="{sid}"]')
    await expect(row).to_contain_text("0 9 * * *")
    await expect(row).to_contain_text("Asia/Tokyo")
    # the next fire, in UTC and in the schedule's zone (09:00 in Tokyo is 00:00 UTC)
    await expect(row).to_contain_text("00:00:00 UTC")
    await expect(row).to_contain_text("09:00:00 Asia/Tokyo")
    await expect(row.locator("td.last-runs")).to_have_text("none")

    await page.get_by_role("button", name=f"Fire schedule {sid} now").click()
    link = page.get_by_role("status").locator("a")
    await expect(link).to_be_visible()
    fired = (await link.inner_text()).strip()
    runs = (await console.call("GET", f"/api/runs?schedule={sid}"))["runs"]
    assert [run["id"] for run in runs] == [fired]
    assert await link.get_attribute("href") == f"#/runs/{fired}"
    await expect(row.locator("td.last-runs a").first).to_have_attribute("href", f"#/runs/{fired}")

    await page.get_by_role("button", name=f"Pause schedule {sid}").click()
    await expect(row).to_contain_text("paused")
    assert (await console.call("GET", "/api/schedules"))["schedules"][0]["active"] is False
    await axe_check(page)
    await screenshot(page, "schedules")
    await page.get_by_role("button", name=f"Resume schedule {sid}").click()
    await expect(row).to_contain_text("active")
    assert (await console.call("GET", "/api/schedules"))["schedules"][0]["active"] is True


async def test_the_workers_page_shows_this_daemon(page: Page, console: Console) -> None:
    await page.goto("/#/workers")
    (worker,) = (await console.call("GET", "/api/workers"))["workers"]
    row = page.locator(f'tr[data-worker="{worker["id"]}"]')
    await expect(row).to_contain_text(socket.gethostname())
    await expect(row.locator("td").first).to_have_text(str(os.getpid()))
    await expect(row).to_contain_text(worker["version"])
    await expect(row).to_contain_text("0 / 8")  # executing / concurrency
    # more than six tasks (the console's and taskd.webhook): a list to open, which stays open
    # across the page's refreshes
    served = row.locator("summary", has_text="tasks")
    await expect(served).to_have_text(f"{len(worker['tasks'])} tasks")
    await served.click()
    for task_id in ("console.echo", "console.fails", "console.progress", "taskd.webhook"):
        await expect(row.get_by_role("link", name=task_id)).to_be_visible()
    await expect(page.locator("p", has_text="live worker; updated")).not_to_have_text(
        await page.locator("p", has_text="live worker; updated").inner_text()
    )  # refreshed
    await expect(row.get_by_role("link", name="console.sleeps")).to_be_visible()
    heartbeat = row.locator(".heartbeat")
    await expect(heartbeat).to_contain_text("ago")
    first = await heartbeat.inner_text()
    await expect(heartbeat).not_to_have_text(first)  # it ticks
    await axe_check(page)
    await screenshot(page, "workers")


async def test_the_read_only_token_gets_no_action_on_these_pages(
    read_page: Page, console: Console
) -> None:
    page = read_page
    await console.call("POST", "/api/tasks/console.echo/trigger", {"payload": 1, "delay": "1h"})
    await console.call("POST", "/api/schedules", {"task_id": "console.echo", "cron": "@daily"})
    for route, heading, what in (
        ("#/tasks/console.echo", "console.echo", "triggering runs"),
        ("#/queues", "Queues", "pause, resume and limits"),
        ("#/schedules", "Schedules", "pause, resume and fire now"),
    ):
        await page.goto(f"/{route}")
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        await expect(page.get_by_text(f"Read-only session: {what}")).to_be_visible()
        await expect(page.locator("main").get_by_role("button")).to_have_count(0)
        await expect(page.locator("main form")).to_have_count(0)
    await axe_check(page)
    await screenshot(page, "schedules-read-only")

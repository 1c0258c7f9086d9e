"""The console's shell in real Chromium: login with the token, the read-only token, logout,
the security headers, no inline script, accessibility."""

from __future__ import annotations

from html.parser import HTMLParser

from playwright.async_api import Browser, Page, expect

from tests.support.browser import (
    READ_TOKEN,
    TOKEN,
    Console,
    PageProblems,
    axe_check,
    screenshot,
)
from tests.support.console_files import CSP, console_html_files
from tests.support.in_process import admin_url, running_daemon


async def test_the_token_opens_the_console_and_a_wrong_one_does_not(
    anonymous_page: Page, console: Console
) -> None:
    page = anonymous_page
    await page.goto("/")
    await expect(page).to_have_url(console.url + "/login")
    await expect(page.get_by_role("heading", name="taskd console")).to_be_visible()
    await axe_check(page)
    await screenshot(page, "login")

    await page.get_by_label("Token").fill("not-the-token")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong token.")
    await expect(page).to_have_url(console.url + "/login")

    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(console.url + "/#/runs")
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await expect(page.locator("#role")).to_have_text("admin")
    await expect(page.get_by_role("navigation", name="Console pages")).to_be_visible()

    (cookie,) = await page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert TOKEN not in cookie["value"]
    await axe_check(page)
    await screenshot(page, "shell")


async def test_the_read_only_token_sees_but_cannot_act(read_page: Page, console: Console) -> None:
    run_id = await console.trigger("console.sleeps")
    page = read_page
    await expect(page.locator("#role")).to_have_text("read-only")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()

    answer = await page.evaluate(
        """async (id) => {
            const response = await fetch(`/api/runs/${id}/cancel`, {
                method: "POST", headers: {"Content-Type": "application/json"}});
            return [response.status, (await response.json()).error];
        }""",
        str(run_id),
    )
    assert answer[0] == 403
    assert "read-only token can look but not act" in answer[1]
    run = await console.client.get_run(run_id)
    assert run.status in ("queued", "executing")
    await console.call("POST", f"/api/runs/{run_id}/cancel")


async def test_every_answer_carries_the_security_headers(page: Page, console: Console) -> None:
    for path in ("/", "/login", "/console/console.css", "/console/js/app.js", "/api/runs"):
        response = await page.request.get(path)
        assert response.status == 200, path
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
    module = await page.request.get("/console/js/lib.js")
    assert module.headers["content-type"].startswith("text/javascript")
    missing = await page.request.get("/console/js/../../server.py")
    assert missing.status == 404


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found += [
            f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"
        ]
        if tag == "a" and (names.get("href") or "").lower().startswith("javascript:"):
            self.found.append("javascript: link")


async def test_no_served_html_holds_inline_script_or_style(page: Page) -> None:
    served = {"/": await page.request.get("/"), "/login": await page.request.get("/login")}
    for name in console_html_files():
        served[name] = await page.request.get(f"/console/{name}")
    for path, response in served.items():
        finder = _InlineFinder()
        finder.feed(await response.text())
        assert finder.found == [], path


async def test_logout_ends_the_session(page: Page, console: Console) -> None:
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(console.url + "/login")
    answer = await page.request.get("/api/runs")
    assert answer.status == 401
    await page.goto("/")
    await expect(page).to_have_url(console.url + "/login")
    session = await page.request.get("/api/session")
    assert await session.json() == {"role": None, "auth_required": True}


async def test_a_read_only_session_cookie_is_not_an_admin_one(read_page: Page) -> None:
    (cookie,) = await read_page.context.cookies()
    assert READ_TOKEN not in cookie["value"]
    forged = cookie["value"].replace(".read.", ".admin.")
    await read_page.context.clear_cookies()
    await read_page.context.add_cookies([{**cookie, "value": forged}])  # type: ignore[list-item]
    answer = await read_page.request.get("/api/session")
    assert (await answer.json())["role"] is None


async def test_every_page_in_the_navigation_opens_and_is_accessible(page: Page) -> None:
    """Each nav link loads its page module (no script error, no CSP refusal: the fixture
    checks) and its heading, in the light and the dark scheme, on a wide and a narrow screen."""
    links = page.get_by_role("navigation", name="Console pages").get_by_role("link")
    names = await links.all_inner_texts()
    assert "Runs" in names
    for scheme, width in (("light", 1280), ("dark", 390)):
        await page.emulate_media(color_scheme=scheme)
        await page.set_viewport_size({"width": width, "height": 900})
        for name in names:
            await links.get_by_text(name, exact=True).click()
            await expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()
            link = links.get_by_text(name, exact=True)
            await expect(link).to_have_attribute("aria-current", "page")
            await axe_check(page)
    await screenshot(page, "shell-dark-narrow")


async def test_the_skip_link_moves_the_focus_to_the_page(page: Page, console: Console) -> None:
    await page.goto("/#/runs?task=x")
    await page.reload()  # a fresh load: the focus starts at the top of the document
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("main")).to_be_focused()
    await expect(page).to_have_url(console.url + "/#/runs?task=x")


async def test_without_a_token_the_console_opens_without_login(
    browser: Browser, database: str, problems: PageProblems
) -> None:
    async with running_daemon(database, []) as daemon:
        context = await browser.new_context(base_url=admin_url(daemon))
        try:
            page = await context.new_page()
            problems.watch(page)
            await page.goto("/login")
            await expect(page).to_have_url(admin_url(daemon) + "/#/runs")
            await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
            await expect(page.locator("#role")).to_have_text("admin")
            await expect(page.get_by_role("button", name="Log out")).to_be_hidden()
        finally:
            await context.close()
    assert problems.errors == [], problems.errors

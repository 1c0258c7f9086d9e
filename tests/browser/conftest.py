"""The browser tier's fixtures (they live in tests/support/browser.py)."""

from tests.support.browser import anonymous_page, browser, console, page, problems, read_page

__all__ = ["anonymous_page", "browser", "console", "page", "problems", "read_page"]

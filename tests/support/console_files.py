"""The console's files in the checkout and the CSP every answer carries."""

from __future__ import annotations

from taskd.admin.console_files import ROOT, SECURITY_HEADERS

CSP = SECURITY_HEADERS["Content-Security-Policy"]


def console_html_files() -> list[str]:
    """The HTML files under admin/console/, relative to it."""
    return sorted(str(path.relative_to(ROOT)) for path in ROOT.rglob("*.html"))


def console_files() -> list[str]:
    """Every file under admin/console/, relative to it."""
    return sorted(str(path.relative_to(ROOT)) for path in ROOT.rglob("*") if path.is_file())

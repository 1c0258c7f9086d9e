"""The console's static files (admin/console/, shipped in the package), served as they are.

``/`` is the shell (index.html), ``/login`` the login page, ``/console/...`` the assets (ES
modules, the style sheet). No build step: what is in the folder is what the browser gets.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from taskd.admin.session import cookie_role
from taskd.config import AdminSettings

ROOT = Path(__file__).parent / "console"
CONSOLE_PREFIX = "/console/"
CONSOLE_PAGES = ("/", "/login")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain",
}


def _file(relative: str) -> web.StreamResponse:
    path = (ROOT / relative).resolve()
    if not path.is_relative_to(ROOT.resolve()) or not path.is_file() or path.suffix not in _TYPES:
        raise web.HTTPNotFound(reason=f"no console file {relative[:100]!r}")
    kind = _TYPES[path.suffix]
    if kind.startswith("text/") or kind.endswith("+xml"):
        kind += "; charset=utf-8"
    return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Content-Type": kind})


def add_console(app: web.Application, settings: AdminSettings) -> None:
    async def shell(request: web.Request) -> web.StreamResponse:
        if settings.token and cookie_role(settings, request) is None:
            raise web.HTTPFound("/login")
        return _file("index.html")

    async def login(request: web.Request) -> web.StreamResponse:
        return _file("login.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        return _file(request.match_info["path"])

    app.router.add_get("/", shell)
    app.router.add_get("/login", login)
    app.router.add_get(CONSOLE_PREFIX + "{path:.+}", asset)

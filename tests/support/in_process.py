"""A daemon in the test's own event loop: test settings, start, drain, its admin URL.

The machinery is taskd.testing's (``taskd.testing.daemon``, what task authors' tests use too);
this module keeps the names the suite imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskd.testing.daemon import admin_url, running_daemon, test_settings

StartDaemon = Callable[..., Any]
"""The type of conftest's ``start_daemon`` fixture: ``start_daemon([tasks], **worker)``."""

__all__ = ["StartDaemon", "admin_url", "running_daemon", "test_settings"]

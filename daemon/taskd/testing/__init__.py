"""Test helpers for task authors, a pytest plugin installed with taskd (see the README's
"Testing your tasks: taskd.testing"): the ``taskd_tester`` fixture gives a test a database of
its own, an in-process daemon and a virtual clock (``Tester``: ``run``, ``trigger``, ``drain``,
``advance``, ``assert_triggered``); ``taskd_anthropic`` a fake Anthropic API
(``taskd.testing.anthropic.FakeAnthropic``) the daemon calls.

The names below load on first use: ``taskd.testing.anthropic`` alone needs only aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskd.testing.tester import RunResult, Tester, TesterError

__all__ = ["RunResult", "Tester", "TesterError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from taskd.testing import tester

        return getattr(tester, name)
    raise AttributeError(f"module 'taskd.testing' has no attribute {name!r}")

"""Where the checkout is: subprocesses run from its root, tests read its files."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

"""Loads the named statements of a noun's SQL file (``store/<noun>.sql``, blocks headed
``-- name: NAME``): each store module reads its own file, beside it."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(noun: str) -> dict[str, str]:
    text = resources.files("taskd.store").joinpath(f"{noun}.sql").read_text()
    parts = _HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}

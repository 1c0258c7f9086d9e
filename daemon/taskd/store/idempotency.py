"""Idempotency keys: taken for the runs of a keyed batch (runs.insert_many_keyed,
waits.create_children) inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from taskd.store.queries import load

SQL = load("idempotency")


async def hold_keys(
    connection: asyncpg.Connection,
    task_id: str,
    ids: Sequence[uuid.UUID],
    keys: Sequence[str | None],
    key_ttl: float,
) -> tuple[list[uuid.UUID], list[int]]:
    """Take the free keys for their runs; (every run's id, with a held key's run id in its
    place; the indexes of the runs to create). A key repeated in the batch gives the id of
    its first run."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None:
            first.setdefault(key, index)
    held: dict[str, uuid.UUID] = {}
    if first:
        names = sorted(first)
        owned = {
            row[0]
            for row in await connection.fetch(
                SQL["claim_many"],
                task_id,
                names,
                [ids[first[name]] for name in names],
                key_ttl,
            )
        }
        held = {name: ids[first[name]] for name in owned}
        others = [name for name in names if name not in owned]
        if others:
            rows = await connection.fetch(SQL["lookup"], task_id, others)
            held.update({row[0]: row[1] for row in rows})
    final = [ids[i] if key is None else held[key] for i, key in enumerate(keys)]
    new = [
        i for i, key in enumerate(keys) if key is None or (first[key] == i and held[key] == ids[i])
    ]
    return final, new

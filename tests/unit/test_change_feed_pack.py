"""The change feed's notifications (worker/change_feed.py ``pack``): each under PostgreSQL's
8000-byte NOTIFY limit, every change in one of them once and in order, and data too large
for one either cut (an error message) or left to be read from the run's row (metadata)."""

from __future__ import annotations

import uuid

import orjson

from taskd.changes import ChangeKind, RunChange
from taskd.worker.change_feed import INLINE_DATA, MAX_PAYLOAD, pack

ORIGIN = str(uuid.uuid4())


def change(kind: ChangeKind, data: dict[str, object] | None = None) -> RunChange:
    return RunChange(kind, uuid.uuid4(), "some.task", "executing", 1, data=data)


def unpack(payloads: list[str]) -> list[list[object]]:
    entries: list[list[object]] = []
    for payload in payloads:
        assert len(payload.encode()) <= MAX_PAYLOAD < 8000
        message = orjson.loads(payload)
        assert message["o"] == ORIGIN
        entries.extend(message["c"])
    return entries


def test_many_changes_are_split_into_notifications_under_the_limit_in_order() -> None:
    changes = [change(ChangeKind.STARTED) for _ in range(1000)]
    payloads = pack(ORIGIN, changes)
    assert len(payloads) > 1
    entries = unpack(payloads)
    assert [e[1] for e in entries] == [str(c.run_id) for c in changes]
    first = entries[0]
    assert first[0] == "started" and first[2:5] == ["some.task", "executing", 1]
    assert first[5] == changes[0].at and first[6] is None and first[7] == 0


def test_large_metadata_is_left_to_be_read_and_a_long_error_is_cut() -> None:
    metadata = change(ChangeKind.METADATA, {"blob": "x" * 50_000})
    failed = change(
        ChangeKind.ATTEMPT_FAILED,
        {"error": {"type": "ValueError", "message": "y" * 50_000}, "retry_in": 1.5},
    )
    small = change(ChangeKind.METADATA, {"progress": 0.5})
    entries = unpack(pack(ORIGIN, [metadata, failed, small]))
    assert entries[0][6] is None and entries[0][7] == 1  # read from taskd.runs.metadata
    data = entries[1][6]
    assert isinstance(data, dict) and data["retry_in"] == 1.5
    assert data["error"]["type"] == "ValueError"
    assert len(orjson.dumps(data)) <= INLINE_DATA
    assert entries[2][6] == {"progress": 0.5} and entries[2][7] == 0


def test_nothing_to_send_is_no_notification() -> None:
    assert pack(ORIGIN, []) == []

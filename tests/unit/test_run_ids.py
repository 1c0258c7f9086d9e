"""Run ids made in batches (taskd.ids.new_run_ids, what batch_trigger uses) are the same
UUIDv7s as ids made one by one: strictly increasing within and across batches and single ids,
from any thread, valid uuid.UUID objects in every way a caller uses them."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from taskd.ids import id_time, new_run_id, new_run_ids


def test_batches_and_single_ids_are_one_increasing_sequence_of_uuid7() -> None:
    before = datetime.now(UTC)
    made = new_run_ids(1000) + [new_run_id() for _ in range(50)] + new_run_ids(3)
    made += new_run_ids(1) + new_run_ids(0) + [new_run_id()]
    after = datetime.now(UTC)
    assert len(made) == 1055
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    for run_id in made:
        assert run_id.version == 7 and run_id.variant == uuid.RFC_4122
        # (up to a few ms ahead: a batch of over 3,072 ids in one millisecond, by an earlier
        # test of this process, borrows the next milliseconds)
        assert (
            before - timedelta(milliseconds=1)
            <= id_time(run_id)
            <= after + timedelta(milliseconds=50)
        )


def test_a_batch_past_a_milliseconds_counter_keeps_increasing() -> None:
    made = new_run_ids(10_000)  # more than the 12-bit counter holds in one millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert id_time(made[-1]) - id_time(made[0]) < timedelta(milliseconds=10)
    assert new_run_id() > made[-1]


def test_ids_are_ordinary_uuids() -> None:
    (run_id,) = new_run_ids(1)
    same = uuid.UUID(str(run_id))
    assert type(run_id) is uuid.UUID
    assert run_id == same and hash(run_id) == hash(same) and {same: 1}[run_id] == 1
    assert pickle.loads(pickle.dumps(run_id)) == run_id
    assert orjson.dumps([run_id]) == f'["{same}"]'.encode()
    assert run_id.is_safe is uuid.SafeUUID.unknown
    assert uuid.UUID(bytes=run_id.bytes) == run_id and uuid.UUID(hex=run_id.hex) == run_id


def test_threads_get_unique_ids_each_in_order() -> None:
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(out: list[uuid.UUID]) -> None:
        for k in range(200):
            out.extend(new_run_ids(50) if k % 2 else [new_run_id()])
            time.sleep(0)  # let the others in between

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [run_id for out in per_thread for run_id in out]
    assert len(every) == 4 * (100 * 50 + 100)
    assert len(set(every)) == len(every)
    for out in per_thread:
        assert out == sorted(out)

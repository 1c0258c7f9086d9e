"""Wait percentiles over a day come from the roll-ups' histograms (store/stats.py): the quantile
is interpolated within the bin that holds it."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime

import pytest

from taskd.store.stats import WAIT_BOUNDS, RunBucket, wait_percentile

AT = datetime(2026, 12, 2, tzinfo=UTC)


def histogram(*waits: float) -> dict[int, int]:
    bins: dict[int, int] = {}
    for wait in waits:
        i = bisect.bisect_right(WAIT_BOUNDS, wait)  # as SQL's width_bucket(wait, bounds)
        bins[i] = bins.get(i, 0) + 1
    return bins


def test_no_wait_has_no_percentile() -> None:
    assert wait_percentile({}, 0.5) is None


def test_the_quantile_lies_in_the_bin_of_the_exact_one() -> None:
    waits = [0.003, 0.02, 0.02, 0.3, 0.4, 0.45, 2.0, 7.0, 40.0, 700.0]
    bins = histogram(*waits)
    for q, exact in ((0.5, 0.4), (0.95, 700.0), (0.1, 0.003)):
        value = wait_percentile(bins, q)
        assert value is not None
        i = bisect.bisect_right(WAIT_BOUNDS, exact)
        low = WAIT_BOUNDS[i - 1] if i else 0.0
        assert low <= value <= WAIT_BOUNDS[i], (q, value)


def test_waits_past_the_last_bound_read_as_the_last_bound() -> None:
    assert wait_percentile(histogram(200_000.0, 300_000.0), 0.5) == WAIT_BOUNDS[-1]


def test_parts_of_a_bucket_add_up() -> None:
    rolled = RunBucket(at=AT, started=2, completed=1, waits=histogram(0.02, 0.03))
    live = RunBucket(at=AT, started=1, failed=1, waits=histogram(5.5))
    rolled.add(live)
    assert (rolled.started, rolled.completed, rolled.failed) == (3, 1, 1)
    assert rolled.waits == histogram(0.02, 0.03, 5.5)
    assert rolled.wait_p50 == pytest.approx(wait_percentile(rolled.waits, 0.5))
    assert rolled.wait_p95 is not None and 5.0 <= rolled.wait_p95 <= 10.0

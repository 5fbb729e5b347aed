"""Damping: the recipient's side of the allocator."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.support.allocation import commitment, need
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import DampingSample, damping_factor, over_allocation, recent_history, update_damping


def samples(*values, start=0, step=1_000):
    return [DampingSample(over_allocation=v, timestamp=start + i * step) for i, v in enumerate(values)]


@pytest.mark.parametrize("values, factor", [
    ((), "1.0"),
    ((0,), "1.0"),
    ((0, 0, 0), "1.0"),
    ((5,), "0.8"),
    ((10, 5, 8), "0.5"),     # the seed's own example: down then up
    ((5, 10, 3), "0.5"),     # up then down
    ((5, 3, 3, 5), "0.5"),   # a plateau does not hide the turn
    ((10, 5, 2), "1.0"),
    ((3, 0, 0), "1.0"),
    ((10, 10, 4), "1.0"),
    ((5, 5, 5), "0.8"),      # stuck above zero
    ((2, 5, 9), "0.8"),      # rising
    ((0, 0, 4), "0.8"),
])
def test_damping_factor_rules(values, factor):
    assert damping_factor(samples(*values)) == Decimal(factor)


def test_history_keeps_the_last_30_seconds_or_the_last_three():
    old = samples(9, 1, 9, start=0)            # at 0, 1, 2 s
    new = samples(4, 3, 2, 1, start=40_000)    # at 40..43 s
    assert [s.over_allocation for s in recent_history(old + new, now_ms=43_000)] == [4, 3, 2, 1]
    # Nothing in the last 30 s: the last three still count.
    assert [s.over_allocation for s in recent_history(old, now_ms=100_000)] == [9, 1, 9]
    assert [s.over_allocation for s in recent_history(samples(7, 8) + samples(1, start=90_000),
                                                      now_ms=100_000)] == [7, 8, 1]


def test_update_damping_records_over_allocation_and_sets_the_factor():
    c = commitment("a", needs=[need("a", "n1", 10), need("a", "n2", 5)])
    assert over_allocation(c, {"n1": 14, "n2": 2}) == 4
    t = 0
    for received in ({"n1": 20}, {"n1": 12}, {"n1": 18}):  # over by 10, 2, 8: oscillating
        c = update_damping(c, received, now_ms=t)
        t += 1_000
    assert [s.over_allocation for s in c.damping_history] == [10, 2, 8]
    assert c.damping_factor == Decimal("0.5")
    # Long quiet afterwards: the window slides to the last samples, which decrease to zero.
    for received in ({"n1": 10}, {"n1": 10}, {"n1": 9}):
        c = update_damping(c, received, now_ms=t + 60_000)
        t += 1_000
    assert c.damping_factor == Decimal("1.0")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 50)), max_size=12), st.integers(0, 10**6))
def test_factor_is_one_of_three_and_the_window_is_recent(raw, now):
    history = [DampingSample(over_allocation=v, timestamp=t) for t, v in raw]
    window = recent_history(history, now)
    assert damping_factor(window) in (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
    assert len(window) >= min(3, len(history))
    assert all(s.timestamp > now - 30_000 for s in window) or len(window) <= 3

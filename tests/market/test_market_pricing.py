"""The ask policy and price units."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.errors import InvalidArgument, MarketError
from xsc.market import PricingPolicy, ask_price, units_cost


def test_curve_points():
    p = PricingPolicy(floor=1_000, ceiling=4_000, exponent=2)
    assert ask_price(p, 0, 100) == 1_000
    assert ask_price(p, 50, 100) == 1_750  # 1000 + 3000 * 1/4
    assert ask_price(p, 100, 100) == 4_000
    assert ask_price(p, 1, 3) == 1_000 + 334  # ceil(3000 / 9)
    assert ask_price(p, 500, 100) == 4_000  # clamped
    assert ask_price(p, 0, 0) == 4_000  # no capacity: the ceiling


def test_bad_policies_are_refused_with_a_clear_error():
    with pytest.raises(MarketError, match="ceiling"):
        PricingPolicy.of(floor=5, ceiling=4)
    with pytest.raises(MarketError, match="exponent"):
        PricingPolicy.of(floor=1, ceiling=4, exponent=9)
    with pytest.raises(MarketError, match="floor"):
        PricingPolicy.of(floor=-1, ceiling=4)
    assert PricingPolicy.of(floor=1, ceiling=1, exponent=8) == PricingPolicy(floor=1, ceiling=1, exponent=8)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 8), st.integers(0, 10**15),
       st.integers(0, 10**15), st.integers(0, 10**15))
def test_ask_is_monotone_and_bounded(floor, extra, exponent, capacity, u1, u2):
    p = PricingPolicy(floor=floor, ceiling=floor + extra, exponent=exponent)
    lo, hi = sorted((u1, u2))
    a, b = ask_price(p, lo, capacity), ask_price(p, hi, capacity)
    assert p.floor <= a <= b <= p.ceiling
    assert ask_price(p, capacity, capacity) == p.ceiling
    if capacity:
        assert ask_price(p, 0, capacity) == p.floor


def test_units_cost_reuses_the_ledger_prices():
    gib = 2**30
    assert units_cost("storage", gib, 3600, 1_000) == 1_000  # one GiB-hour
    assert units_cost("storage", 1, 1, 1) == 1  # rounded up once
    assert units_cost("compute", 2_000_000, 999, 10) == 20  # the window does not matter
    assert units_cost("compute", 1, 0, 1) == 1
    with pytest.raises(MarketError, match="no price unit"):
        units_cost("gpu", 1, 1, 1)
    with pytest.raises(InvalidArgument):
        units_cost("storage", -1, 1, 1)

"""What a slot may sell to the needs present (xsc.market.core.supply): properties over random books."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.market import cap_supply, need_key, spread_groups
from xsc.market.core.supply import match_spread

from tests.support.market import HOUR, ask, bid

providers = st.lists(st.tuples(st.integers(1, 10_000), st.integers(1, 5_000)), min_size=1, max_size=8)
needs = st.lists(st.tuples(st.integers(1, 3_000), st.integers(1, 5_000), st.sampled_from([None, "g1", "g2"])),
                 min_size=1, max_size=12)


def _book(offers, wanted):
    asks = [ask(f"p{i}", f"s{i}", quantity, price) for i, (quantity, price) in enumerate(offers)]
    bids = [bid("me", f"n{i}", quantity, price, group=group) for i, (quantity, price, group) in enumerate(wanted)]
    return asks, bids


@settings(max_examples=200, deadline=None)
@given(offers=providers, wanted=needs)
def test_spread_groups_keeps_every_need_and_never_asks_more_distinct_providers_than_exist(offers, wanted) -> None:
    asks, bids = _book(offers, wanted)
    spread = spread_groups(asks, bids)
    assert sorted(b.slot.id for b in spread) == sorted(b.slot.id for b in bids)
    for group, size in Counter(b.group for b in spread if b.group is not None).items():
        members = [b for b in bids if b.group == group.split("#")[0]]
        able = {a.slot.owner for a in asks for b in members if a.price <= b.price and a.slot.quantity >= b.slot.quantity}
        if "#" in group:  # split: no sub-group needs more distinct providers than can serve it
            assert size <= len(able)


@settings(max_examples=200, deadline=None)
@given(offers=providers, wanted=needs)
def test_cap_supply_only_lowers_quantities_and_keeps_every_slot_that_can_serve_a_need(offers, wanted) -> None:
    asks, bids = _book(offers, wanted)
    capped = {a.slot.id: a for a in cap_supply(asks, spread_groups(asks, bids))}
    for a in asks:
        useful = any(a.price <= b.price and a.slot.quantity >= b.slot.quantity for b in bids)
        if useful:
            assert a.slot.id in capped
            assert 0 < capped[a.slot.id].slot.quantity <= a.slot.quantity
            # Room for every single need it can serve is left.
            assert all(capped[a.slot.id].slot.quantity >= b.slot.quantity for b in bids
                       if a.price <= b.price and a.slot.quantity >= b.slot.quantity)
        elif a.slot.id in capped:
            assert all(a.price > b.price for b in bids)  # kept only to explain a price refusal


def test_six_shares_on_three_providers_go_two_by_two() -> None:
    asks = [ask(f"p{i}", f"s{i}", 10**9, 1000 + i) for i in range(3)]
    bids = [bid("me", f"n{i}", 100, 4000, group="put") for i in range(6)]
    spread = spread_groups(asks, bids)
    assert Counter(b.group for b in spread) == {"put#0": 3, "put#1": 3}
    assert {a.slot.quantity for a in cap_supply(asks, spread)} == {200}  # two shares each, for the clearing


def _spread_match(asks, bids):
    return match_spread(asks, bids, recognition={}, availability={a.slot.owner: Decimal(1) for a in asks},
                        bucket_seconds=HOUR, now_ms=0, first="me")


@settings(max_examples=150, deadline=None)
@given(prices=st.lists(st.integers(1, 100), min_size=1, max_size=7), size=st.integers(2, 6),
       group_bid=st.integers(1, 100),
       others=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 100), st.sampled_from([None, "h"])), max_size=4))
def test_a_group_the_spread_count_accepts_is_matched_onto_as_many_distinct_providers(prices, size, group_bid,
                                                                                     others) -> None:
    """The auction counts units, not who sells them: one provider's supply may stand for the group's share and for
    other needs beside it, and the market clear under the ask of a provider the group was counted on.  The group's
    needs would then be left short (a put's shares all kept home, or refused as if the providers had no room)."""
    asks = [ask(f"p{i}", f"s{i}", 10**6, price) for i, price in enumerate(prices)]
    bids = [bid("me", f"n{i}", 1, group_bid, group="put") for i in range(size)] + \
        [bid(f"o{i % 2}", f"m{i}", quantity, price, group=group) for i, (quantity, price, group) in enumerate(others)]
    if sum(price <= group_bid for price in prices) < size:
        return  # split over fewer providers than needs: test_six_shares_on_three_providers_go_two_by_two
    assert all(b.group == "put" for b in spread_groups(asks, bids) if b.slot.owner == "me")
    result = _spread_match(asks, bids)
    if any(e.code == "below_clearing_price" for key, e in result.explanations.items() if key.startswith("me/")):
        assert any(b.price > group_bid for b in bids)  # a higher bid cleared the market above the group's
        return
    placed = [a.provider for key, a in result.assignments.items() if key.startswith("me/")]
    assert len(placed) == len(set(placed)) == size


@pytest.mark.parametrize("others", [[("o", "m", 1, 1, None)],
                                    [("o", "m0", 2, 2, "h"), ("o", "m2", 1, 2, "h"), ("p", "m1", 1, 1, None)]])
def test_the_needs_beside_a_group_do_not_price_it_out_of_its_providers(others) -> None:
    """Beside a bid under the group's, or another group's needs at the same bid, the market clears at 1."""
    asks = [ask("p0", "s0", 10**6, 1), ask("p1", "s1", 10**6, 1), ask("p2", "s2", 10**6, 2)]
    bids = [bid("me", f"n{i}", 1, 2, group="put") for i in range(3)] + \
        [bid(owner, sid, quantity, price, group=group) for owner, sid, quantity, price, group in others]
    result = _spread_match(asks, bids)
    assert sorted(a.provider for key, a in result.assignments.items() if key.startswith("me/")) == ["p0", "p1", "p2"]
    assert all(result.explanations[need_key(b.slot.owner, b.slot.id)].code == "below_clearing_price"
               for b in bids if b.price < 2)

"""What a slot may sell to the needs present (xsc.market.core.supply): properties over random books."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import NeedSlot, SlotFilter
from xsc.market import Bid, cap_supply, need_key, spread_groups
from xsc.market.core.allocated import apart, from_allocation, placeable, within_room
from xsc.market.core.supply import crowded_groups, match_spread, providers_of

from tests.support.calls import python_calls, python_lines
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
    assert all(c.low <= c.price <= c.high for c in result.clearings.values() if c.price is not None)


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


def _run(steps):
    """Drive a decision in steps (`xsc.market.core.allocated.Steps`), each matching run in place: its answer."""
    result = None
    try:
        while True:
            fn, kwargs = steps.send(result)
            result = fn(**kwargs)
    except StopIteration as done:
        return done.value


def _deal(asks, bids, availability, given):
    """What `Dealing._deal` gives "me"'s needs, over the pure core it decides by (`xsc.market.core.allocated`): the
    call market cleared first; the needs `placeable` leaves to the allocation placed where it (`given`: provider ->
    units it gives) has room at that clearing's price, and the rest matched again away from the providers the placed
    needs of their group took.  Need id -> provider (None: none found)."""
    kw = {"recognition": {}, "availability": availability, "bucket_seconds": HOUR, "now_ms": 0}
    result = match_spread(asks, bids, first="me", **kw)
    mine = [b for b in bids if b.slot.owner == "me"]
    room = {p: u for p, u in given.items() if availability.get(p, 0) > 0}
    served = _run(from_allocation(placeable(mine, asks, availability), within_room(asks, room, "storage"), room,
                                  result.clearings, "me", **kw))
    rest = apart(mine, served)
    if served and rest:
        result = match_spread(asks, rest + [b for b in bids if b.slot.owner != "me"], first="me", **kw)
    return {**{b.slot.id: getattr(result.assignments.get(need_key("me", b.slot.id)), "provider", None) for b in rest},
            **{n: a.provider for n, a in served.items()}}


@settings(max_examples=150, deadline=None)
@given(offers=st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["1", "0.5"]), st.integers(0, 3)),
                       min_size=1, max_size=7),
       size=st.integers(2, 6), group_bid=st.integers(1, 5), wants_available=st.booleans(),
       others=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 5), st.sampled_from([None, "h"])), max_size=3))
def test_a_deal_puts_a_group_on_as_many_distinct_providers_as_can_serve_it_evenly(offers, size, group_bid,
                                                                                 wants_available, others) -> None:
    """Whether a group is crowded (placed by the call market alone) and how the market spreads it rest on one count
    of the providers that can serve it (`providers_of`): counted one way and matched another, a group counted as
    not crowded is placed in part from the allocation and its rest finds too few providers (refused as no deal), or
    one counted crowded is dealt unevenly."""
    asks = [ask(f"p{i}", f"s{i}", 10**6, price) for i, (price, _, _) in enumerate(offers)]
    availability = {f"p{i}": Decimal(up) for i, (_, up, _) in enumerate(offers)}
    given_units = {f"p{i}": units for i, (_, _, units) in enumerate(offers)}
    group = [bid("me", f"n{i}", 1, group_bid, group="put", min_availability="0.9" if wants_available else None)
             for i in range(size)]
    # Others bid no more than the group: they compete, and cannot price it out of its providers.
    bids = group + [bid(f"o{i % 2}", f"m{i}", quantity, min(price, group_bid), group=g)
                    for i, (quantity, price, g) in enumerate(others)]
    can_serve = providers_of(asks, group, availability)
    placed = _deal(asks, bids, availability, given_units)
    if can_serve == 0:
        assert set(placed.values()) == {None}
        return
    assert None not in placed.values(), placed
    counts = Counter(placed.values())
    assert len(counts) == min(size, can_serve), placed
    assert max(counts.values()) - min(counts.values()) <= 1, placed


def test_a_provider_under_a_groups_min_availability_is_not_counted_for_it() -> None:
    """A put asking for providers at least 0.9 available, over three of which one is at 0.5: counted on three, its
    three shares were kept on three distinct providers the matching could give only two of, and the put refused."""
    asks = [ask(f"p{i}", f"s{i}", 10**6, 1) for i in range(3)]
    bids = [bid("me", f"n{i}", 1, 5, group="put", min_availability="0.9") for i in range(3)]
    availability = {"p0": Decimal(1), "p1": Decimal(1), "p2": Decimal("0.5")}
    result = _spread_match_at(asks, bids, availability)
    assert sorted(a.provider for a in result.assignments.values()) == ["p0", "p0", "p1"]
    assert crowded_groups(asks, bids, availability) == {("me", "put")}
    assert crowded_groups(asks, bids, {p: Decimal(1) for p in availability}) == set()


def _spread_match_at(asks, bids, availability):
    return match_spread(asks, bids, recognition={}, availability=availability, bucket_seconds=HOUR, now_ms=0,
                        first="me")


def test_a_market_priced_at_a_floor_shows_the_floor_within_its_range() -> None:
    """`xsc market prices` shows each clearing's price and range: a market priced at a group's floor above what the
    auction cleared at must not show a price outside its own range."""
    asks = [ask("p0", "s0", 10**6, 1), ask("p1", "s1", 10**6, 1), ask("p2", "s2", 10**6, 2)]
    bids = [bid("me", f"n{i}", 1, 2, group="put") for i in range(3)] + \
        [bid("o", "m0", 2, 2, group="h"), bid("o", "m2", 1, 2, group="h"), bid("p", "m1", 1, 1)]
    clearing = _spread_match(asks, bids).clearings[("storage", 0)]  # the auction alone: 1, within [1, 1]
    assert (clearing.price, clearing.low, clearing.high) == (2, 2, 2)


@settings(max_examples=200, deadline=None)
@given(offers=st.lists(st.tuples(st.integers(1, 3_000), st.integers(1, 5_000), st.sampled_from(["1", "0.5", None])),
                       min_size=1, max_size=8),
       wanted=st.lists(st.tuples(st.integers(1, 3_000), st.integers(1, 5_000), st.sampled_from([None, "g1", "g2"]),
                                 st.sampled_from([None, "0.9"])), min_size=1, max_size=12))
def test_a_slot_counts_only_the_needs_its_provider_is_available_enough_for(offers, wanted) -> None:
    """In a book of needs asking different availabilities, a slot's supply counts only the needs `providers_of`
    counts it for: counted for a need its provider is not available enough for, a cheap slot of a provider below
    it sells the auction units only other needs can take, and clears the market under the asks of the providers the
    need could use."""
    asks = [ask(f"p{i}", f"s{i}", quantity, price) for i, (quantity, price, _) in enumerate(offers)]
    availability = {f"p{i}": Decimal(up) for i, (_, _, up) in enumerate(offers) if up is not None}
    bids = [bid(f"o{i % 3}", f"n{i}", quantity, price, group=group, min_availability=floor)
            for i, (quantity, price, group, floor) in enumerate(wanted)]
    capped = {a.slot.id: a.slot.quantity for a in cap_supply(asks, bids, availability)}
    groups: dict = {}
    for b in bids:
        if b.group is not None:
            groups.setdefault((b.slot.owner, b.group), []).append(b)
    for a in asks:
        can = [b for b in bids if providers_of([a], [b], availability)]
        if not can:
            continue  # only a need's own filters keep it out: it may take part for the explanation's sake
        most = sum(b.slot.quantity for b in can if b.group is None) + sum(
            len(members) * max(b.slot.quantity for b in members if b in can)
            for members in groups.values() if any(b in can for b in members))
        assert 0 < capped[a.slot.id] <= most
        assert all(capped[a.slot.id] >= b.slot.quantity for b in can)  # room for every need it can serve


def test_a_need_asking_for_availability_is_served_beside_needs_that_do_not() -> None:
    """A need asking for 0.9 availability beside another's that asks for none: the cheap provider at 0.5 sold the
    auction both needs' units, the market cleared at 25 under the 50 of the one provider available enough, and the
    need was refused as finding no slot."""
    asks = [ask("p", "s0", 10**6, 1), ask("q", "s1", 10**6, 50)]
    bids = [bid("me", "a", 1, 100, min_availability="0.9"), bid("o", "b", 1, 100)]
    result = _spread_match_at(asks, bids, {"p": Decimal("0.5"), "q": Decimal(1)})
    assert {key: a.provider for key, a in result.assignments.items()} == {"me/a": "q", "o/b": "p"}
    assert all(a.price >= 50 for a in result.assignments.values())


def _spread_calls(offers: int) -> int:
    """The Python calls spreading 20 puts of 6 shares over `offers` providers each able to hold any share take."""
    asks = [ask(f"p{i}", "s", 10**9, 1_000 + i % 7) for i in range(offers)]
    needs = [bid(f"u{n}", f"n{k}", 10**6, 2_000, group="put") for n in range(20) for k in range(6)]
    return python_calls(lambda: spread_groups(asks, needs))


def test_spreading_the_groups_costs_the_same_whatever_the_offers_count():
    small, large = _spread_calls(100), _spread_calls(1_000)
    assert large < 2 * small, (small, large)  # each group looked at every ask: 10 x


def _plain_supply(a, bids, groups, sizes, availability) -> int:
    """What `a` can sell to `bids`, each need looked at: what `cap_supply` must count without looking at them all."""
    supply = sum(b.slot.quantity for b in bids if b.group is None and providers_of([a], [b], availability))
    for key, members in groups.items():
        served = [b.slot.quantity for b in members if providers_of([a], [b], availability)]
        if served:
            n, providers = sizes[key]
            supply += -(-n // max(providers, 1)) * max(served)
    return supply


def _plain_cap_supply(asks, bids, availability):
    groups: dict = {}
    for b in bids:
        if b.group is not None:
            groups.setdefault((b.slot.owner, b.group), []).append(b)
    sizes = {key: (len(m), providers_of(asks, m, availability)) for key, m in groups.items()}
    unfiltered = [b.model_copy(update={"slot": b.slot.model_copy(update={"filters": SlotFilter()}),
                                       "min_availability": None}) for b in bids]
    loose: dict = {}
    for b in unfiltered:
        if b.group is not None:
            loose.setdefault((b.slot.owner, b.group), []).append(b)
    out = []
    for a in asks:
        supply = (_plain_supply(a, bids, groups, sizes, availability)
                  or _plain_supply(a, unfiltered, loose, sizes, availability))
        if supply == 0:
            if bids and all(a.price > b.price for b in bids):
                out.append(a)
            continue
        out.append(a.model_copy(update={"slot": a.slot.model_copy(update={"quantity": min(supply, a.slot.quantity)})}))
    return out


_OWNERS = ("o0", "o1", "o2")
_ask_filters = st.sampled_from([SlotFilter(), SlotFilter(deny=("o1",)), SlotFilter(allow=("o0", "o2")),
                                SlotFilter(require_tags=("ssd",))])
_bid_filters = st.sampled_from([SlotFilter(), SlotFilter(deny=("p1",)), SlotFilter(require_tags=("ssd",))])
_places = st.sampled_from(["any", "eu", ("eu", "us"), "us"])
_tags = st.sampled_from([(), ("ssd",)])


@settings(max_examples=300, deadline=None)
@given(offers=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 40), st.integers(1, 9),
                                 st.sampled_from(["storage", "compute"]), _places, _tags, _ask_filters,
                                 st.sampled_from(["1", "0.5", None])), min_size=1, max_size=8),
       wanted=st.lists(st.tuples(st.sampled_from(_OWNERS), st.integers(0, 3), st.integers(1, 12), st.integers(1, 9),
                                 st.sampled_from(["storage", "compute"]), _places, _tags, _bid_filters,
                                 st.sampled_from([None, "g1", "g2"]), st.sampled_from([None, "0.9"])),
                       min_size=0, max_size=14))
def test_the_supply_cap_counts_what_a_plain_walk_over_every_need_counts(offers, wanted) -> None:
    asks = [ask(f"p{i % 3}", f"s{i}", q, price, start=b * HOUR, end=(b + n) * HOUR, kind=kind, location=place,
                tags=tags, filters=filters)
            for i, (b, n, q, price, kind, place, tags, filters, _) in enumerate(offers)]
    availability = {f"p{i % 3}": Decimal(up) for i, (*_, up) in enumerate(offers) if up is not None}
    bids = [Bid(slot=NeedSlot(id=f"n{i}", owner=owner, kind=kind, quantity=q, start=b * HOUR, end=(b + 1) * HOUR,
                              location=place, tags=tags, filters=filters),
                price=price, group=group, min_availability=None if floor is None else Decimal(floor))
            for i, (owner, b, q, price, kind, place, tags, filters, group, floor) in enumerate(wanted)]
    assert cap_supply(asks, bids, availability) == _plain_cap_supply(asks, bids, availability)
    assert cap_supply(asks, bids) == _plain_cap_supply(asks, bids, {})


def _supply_lines(offers: int, puts: int, sizes: int = 4) -> int:
    """The Python lines capping `offers` slots at what they can sell to `puts` puts of 6 shares (of `sizes` sizes)."""
    asks = [ask(f"p{i}", "s", 10**9, 1_000 + (i * 7919) % 3_000) for i in range(offers)]
    needs = [bid(f"u{n}", f"n{k}", (1 + n % sizes) * 10**6, 2_000 + n % 3_000, group="put")
             for n in range(puts) for k in range(6)]
    return python_lines(lambda: cap_supply(asks, needs))


def test_a_slot_more_costs_the_supply_cap_the_same_whatever_the_needs_count():
    """What one more slot adds to the cap, with ten times the puts of the same few shapes: each slot looked at every
    need, and the cost of the first matching of a large book was the slots times the needs."""
    few = _supply_lines(100, 20) - _supply_lines(50, 20)
    many = _supply_lines(100, 200) - _supply_lines(50, 200)
    assert many < 2 * few, (few, many)


def test_a_slot_more_costs_the_supply_cap_the_same_however_many_sizes_the_needs_have():
    """Each put of its own size: needs of one size were a class each ask looked at, the slots times the puts."""
    few = _supply_lines(100, 20, sizes=10**6) - _supply_lines(50, 20, sizes=10**6)
    many = _supply_lines(100, 200, sizes=10**6) - _supply_lines(50, 200, sizes=10**6)
    assert many < 2 * few, (few, many)

"""The call market: the facts of the issue, and its properties against a unit-by-unit reference."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.market import order

from xsc.errors import MarketError
from xsc.market import bucket_of, clear_auction, clear_book
from xsc.market.core.models import MAX_PRICE


def _clear(bid_prices, ask_prices):
    return clear_auction([order("bid", p, oid=f"b{i}") for i, p in enumerate(bid_prices)],
                         [order("ask", p, oid=f"a{i}") for i, p in enumerate(ask_prices)])


def test_two_trades_at_six():
    c = _clear([9, 8], [3, 4])
    assert (c.traded, c.price, c.low, c.high) == (2, 6, 4, 8)
    assert sorted(f.order_id for f in c.fills) == ["a0", "a1", "b0", "b1"]


def test_one_trade_at_six():
    c = _clear([9, 4], [3, 8])
    assert (c.traded, c.price, c.low, c.high) == (1, 6, 4, 8)
    assert [(f.order_id, f.quantity) for f in c.fills] == [("b0", 1), ("a0", 1)]


@pytest.mark.parametrize("bids, asks", [([], []), ([9, 8], []), ([], [3, 4]), ([2, 1], [3, 4])])
def test_empty_one_sided_or_uncrossed_book_trades_nothing(bids, asks):
    c = _clear(bids, asks)
    assert (c.traded, c.price, c.low, c.high, c.fills) == (0, None, None, None, ())


def test_quantities_split_at_the_margin():
    # 10 units wanted at 9, 5 offered at 3 and 10 at 7: all 10 trade; the 11th unit offered (at 7)
    # bounds the range from above, so the price is 7 and the ask at 7 fills 5 of its 10.
    c = clear_auction([order("bid", 9, 10, "b")], [order("ask", 3, 5, "a1"), order("ask", 7, 10, "a2")])
    assert (c.traded, c.low, c.high, c.price) == (10, 7, 7, 7)
    assert [(f.order_id, f.quantity) for f in c.fills] == [("b", 10), ("a1", 5), ("a2", 5)]


def test_ties_at_the_margin_go_by_digest():
    bids = [order("bid", 5, 1, oid) for oid in ("zz", "aa", "mm")]
    c = clear_auction(bids, [order("ask", 5, 2, "a")])
    assert [f.order_id for f in c.fills_of("bid")] == ["aa", "mm"]
    assert c.price == 5


def test_sides_are_checked():
    with pytest.raises(MarketError, match="listed among the bids"):
        clear_auction([order("ask", 1)], [order("ask", 1)])
    with pytest.raises(MarketError, match="positive number of seconds"):
        bucket_of(10, 0)
    assert bucket_of(7199, 3600) == 1 and bucket_of(-1, 3600) == -1


def test_clear_book_groups_by_kind_and_bucket():
    orders = [order("bid", 9, oid="b1"), order("ask", 3, oid="a1"),
              order("bid", 9, oid="b2", kind="compute"), order("ask", 1, oid="a2", bucket=5)]
    out = clear_book(orders)
    assert list(out) == [("compute", 0), ("storage", 0), ("storage", 5)]
    assert out[("storage", 0)].price == 6 and out[("compute", 0)].price is None and out[("storage", 5)].traded == 0


def _reference(bids, asks):
    """Unit by unit, materialised: (Q, low, high) by the textbook definition."""
    b_units = sorted((p for p, q, _ in bids for _ in range(q)), reverse=True)
    a_units = sorted(p for p, q, _ in asks for _ in range(q))
    q = 0
    while q < min(len(b_units), len(a_units)) and b_units[q] >= a_units[q]:
        q += 1
    if q == 0:
        return 0, None, None
    low = max([a_units[q - 1]] + ([b_units[q]] if q < len(b_units) else []))
    high = min([b_units[q - 1]] + ([a_units[q]] if q < len(a_units) else []))
    return q, low, high


sides = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 6), st.binary(min_size=1, max_size=2)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(sides, sides, st.randoms(use_true_random=False))
def test_clearing_properties(bid_specs, ask_specs, rnd):
    bids = [order("bid", p, q, f"b{i}", owner=f"o{i % 3}") for i, (p, q, _) in enumerate(bid_specs)]
    asks = [order("ask", p, q, f"a{i}", owner=f"o{i % 4}") for i, (p, q, _) in enumerate(ask_specs)]
    c = clear_auction(bids, asks)
    q, low, high = _reference(bid_specs, ask_specs)
    assert (c.traded, c.low, c.high) == (q, low, high)
    by_id = {o.id: o for o in bids + asks}
    bid_fills, ask_fills = c.fills_of("bid"), c.fills_of("ask")
    assert sum(f.quantity for f in bid_fills) == sum(f.quantity for f in ask_fills) == q
    if q == 0:
        assert c.price is None and c.fills == ()
        return
    assert low <= c.price <= high and c.price == (low + high) // 2
    for f in bid_fills:  # no buyer pays above its bid
        assert by_id[f.order_id].price >= c.price and 0 < f.quantity <= by_id[f.order_id].quantity
    for f in ask_fills:  # no seller receives below its ask
        assert by_id[f.order_id].price <= c.price and 0 < f.quantity <= by_id[f.order_id].quantity
    # budget balance: buyers pay exactly what sellers receive
    assert sum(f.quantity * c.price for f in bid_fills) == sum(f.quantity * c.price for f in ask_fills)
    filled = {f.order_id: f.quantity for f in c.fills}
    for o in bids:  # strictly better prices trade in full
        if o.price > c.price:
            assert filled.get(o.id, 0) == o.quantity
    for o in asks:
        if o.price < c.price:
            assert filled.get(o.id, 0) == o.quantity
    # deterministic, whatever the order of the input
    rnd.shuffle(bids)
    rnd.shuffle(asks)
    assert clear_auction(bids, asks) == c


@settings(max_examples=300, deadline=None)
@given(sides, sides, st.integers(1, 6), st.integers(21, MAX_PRICE), st.integers(21, MAX_PRICE))
def test_how_far_a_bid_tops_the_book_moves_no_one_elses_fill_or_price(bid_specs, ask_specs, quantity, one, other):
    """A bid above every other order (prices here are at most 20) trades first whatever its price: the fills are the
    same, and so is the price unless that bid alone is filled (then it alone pays it; the asks' sellers get it)."""
    bids = [order("bid", p, q, f"b{i}") for i, (p, q, _) in enumerate(bid_specs)]
    asks = [order("ask", p, q, f"a{i}") for i, (p, q, _) in enumerate(ask_specs)]
    first, second = (clear_auction([*bids, order("bid", price, quantity, "top")], asks) for price in (one, other))
    assert (first.traded, first.fills) == (second.traded, second.fills)
    if any(f.order_id != "top" for f in first.fills_of("bid")):
        assert (first.price, first.low, first.high) == (second.price, second.low, second.high)


def test_large_book_matches_the_reference_totals():
    rng = random.Random(7)
    bids = [order("bid", rng.randint(1, 1000), rng.randint(1, 10**9), f"b{i}") for i in range(2000)]
    asks = [order("ask", rng.randint(1, 1000), rng.randint(1, 10**10), f"a{i}") for i in range(200)]
    c = clear_auction(bids, asks)
    assert c.traded > 0 and c.low <= c.price <= c.high
    assert sum(f.quantity for f in c.fills_of("bid")) == sum(f.quantity for f in c.fills_of("ask")) == c.traded


def test_a_market_the_clearing_node_alone_trades_in_is_priced_at_the_low_end_of_its_range():
    """A node's needs bought from the node itself share no surplus with anyone: priced at its ask (its range's low
    end), not the midpoint its own bid would pull up; a market another participant trades in is cleared as ever."""
    alone = [order("bid", 4000, 6, "b", owner="me"), order("ask", 1000, 6, "a", owner="me")]  # no ask past Q
    assert (clear_book(alone, "me")[("storage", 0)].price, clear_book(alone)[("storage", 0)].price) == (1000, 2500)
    shared = [*alone[:1], order("ask", 1000, 3, "a1", owner="me"), order("ask", 1200, 3, "a2", owner="peer")]
    c = clear_book(shared, "me")[("storage", 0)]
    assert (c.low, c.high, c.price) == (1200, 4000, 2600)
    mine_left_out = [*alone, order("bid", 1500, 10, "b2", owner="me")]  # a bid of its own above its ask, not filled
    c = clear_book(mine_left_out, "me")[("storage", 0)]
    assert (c.traded, c.low, c.price) == (6, 1500, 1500)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 6), st.booleans()), min_size=1, max_size=8),
       st.integers(0, 40))
def test_a_bid_taking_every_ask_sets_the_price_with_the_dearest_ask_once_another_seller_trades(specs, over):
    """The node's bid for every unit the asks offer leaves no further ask to bound the range: it is [the dearest
    ask, the bid].  With another seller filled the market is priced at the midpoint, so the bid moves the price by
    half as much as it moves; one the node alone sells in is priced at the dearest ask (its own), whatever the bid."""
    asks = [order("ask", p, q, f"a{i}", owner="me" if mine else f"peer{i}") for i, (p, q, mine) in enumerate(specs)]
    dearest, units = max(p for p, _, _ in specs), sum(q for _, q, _ in specs)
    bid = order("bid", dearest + over, units, "b", owner="me")
    c = clear_book([bid, *asks], "me")[("storage", 0)]
    assert (c.traded, c.low, c.high) == (units, dearest, dearest + over)
    if all(mine for _, _, mine in specs):
        assert c.price == dearest
    else:
        assert c.price == (2 * dearest + over) // 2 == clear_book([bid, *asks])[("storage", 0)].price


@settings(max_examples=300, deadline=None)
@given(sides, sides, st.lists(st.booleans(), min_size=24, max_size=24))
def test_the_clearing_node_changes_a_price_only_where_it_alone_trades(bid_specs, ask_specs, mine):
    """`clear_book(orders, me)` is the call market's clearing, but for a market whose every fill is `me`'s: that one
    is priced at its range's low end."""
    orders = [order("bid", p, q, f"b{i}", owner="me" if mine[i] else "peer") for i, (p, q, _) in enumerate(bid_specs)]
    orders += [order("ask", p, q, f"a{i}", owner="me" if mine[12 + i] else "peer")
               for i, (p, q, _) in enumerate(ask_specs)]
    plain, own = clear_book(orders).get(("storage", 0)), clear_book(orders, "me").get(("storage", 0))
    if plain is None or plain.price is None or any(f.owner != "me" for f in plain.fills):
        assert own == plain
    else:
        assert own.price == own.low == plain.low and (own.traded, own.fills) == (plain.traded, plain.fills)

"""The book's orders kept between rounds (`StandingOrders`) clear as the full computation does after every change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.calls import python_lines
from tests.support.market import HOUR, ask, bid, covered

from xsc.market.core.auction import clear_book
from xsc.market.core.orders import Coverage, market_orders
from xsc.market.core.standing import StandingOrders

OWNERS = ("p0", "p1", "p2", "p3")

_asks = st.lists(st.tuples(st.sampled_from(["storage", "compute"]), st.integers(0, 30), st.integers(1, 8),
                           st.integers(0, 3), st.integers(1, 3)), max_size=4)
_bids = st.lists(st.tuples(st.sampled_from(["storage", "compute"]), st.integers(0, 12), st.integers(1, 8),
                           st.integers(0, 3), st.sampled_from([None, "g0", "g1"])), max_size=5)
_changes = st.lists(st.tuples(st.sampled_from(OWNERS), _asks, _bids), min_size=1, max_size=12)


def _orders(owner: str, asks: list, bids: list) -> tuple[list, list]:
    return ([ask(owner, f"s{i}", q, price, start=b * HOUR, end=(b + n) * HOUR, kind=kind)
             for i, (kind, q, price, b, n) in enumerate(asks)],
            [bid(owner, f"n{i}", q, price, start=b * HOUR, end=(b + 1) * HOUR, kind=kind, group=group)
             for i, (kind, q, price, b, group) in enumerate(bids)])


@settings(max_examples=150, deadline=None)
@given(changes=_changes, me=st.sampled_from([None, "p0"]))
def test_standing_orders_clear_as_the_whole_book_after_every_change(changes, me):
    standing = StandingOrders(HOUR, me)
    held: dict[str, tuple[list, list]] = {}
    for owner, asks, bids in changes:
        held[owner] = _orders(owner, asks, bids)
        standing.set(owner, *held[owner])
        every_ask = [a for a, _ in held.values() for a in a]
        every_bid = [b for _, b in held.values() for b in b]
        whole = clear_book(market_orders(every_ask, every_bid, HOUR), me)
        assert standing.clearings() == whole
        assert StandingOrders.of(every_ask, every_bid, HOUR, me).clearings() == whole
        assert standing.set(owner, *held[owner]) is False  # the very orders again change nothing


def test_a_participant_without_orders_leaves_no_market_behind():
    standing = StandingOrders(HOUR, "me")
    standing.set("p0", [ask("p0", "s", 10, 5, start=2 * HOUR, end=3 * HOUR)], [bid("p0", "n", 4, 9, group="g")])
    assert set(standing.clearings()) == {("storage", 0), ("storage", 2)}
    standing.set("p0", [], [])
    assert standing.clearings() == {} and standing.held("p0") == ((), ())


def _one_change(offers: int, puts: int) -> int:
    """The Python lines one ask's change and the clearing after it take, in a book of `offers` offers and `puts` open
    puts of 6 shares each, every offer large enough to hold a share of each."""
    asks = [ask(f"p{i}", "s", 10**12, 1_000 + (i * 7919) % 3_000, end=2 * HOUR) for i in range(offers)]
    needs = [bid(f"u{n}", f"n{k}", 10**6 + n, 2_500, end=HOUR, group="g") for n in range(puts) for k in range(6)]
    standing = StandingOrders.of(asks, needs, HOUR, "u0")
    standing.clearings()
    moved = ask("p1", "s", 10**12, 1_001, end=2 * HOUR)
    return python_lines(lambda: (standing.set("p1", [moved], []), standing.clearings()))


def test_a_round_after_one_order_changed_costs_the_same_whatever_the_book_holds():
    small, large = _one_change(200, 1), _one_change(2_000, 1)
    assert large < 2 * small, (small, large)  # the orders made again and sorted from scratch: 10 x



_needs = st.lists(st.tuples(st.sampled_from(OWNERS), st.sampled_from([None, "g0", "g1", "g2"]), st.integers(1, 12)),
                  max_size=14)
_takes = st.lists(st.tuples(st.sampled_from(OWNERS), st.integers(0, 60)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(needs=_needs, takes=_takes)
def test_an_ask_offers_what_a_plain_walk_over_every_group_counts(needs, takes):
    bids = [bid(owner, f"n{i}", q, 5, end=HOUR, group=group) for i, (owner, group, q) in enumerate(needs)]
    coverage = Coverage()
    for b in bids:
        coverage.add(b)
    coverage.freeze()
    assert [coverage.take(owner, q) for owner, q in takes] == covered(bids, takes)


def test_a_round_after_one_order_changed_costs_the_same_whatever_the_puts_open():
    small, large = _one_change(50, 20), _one_change(50, 400)
    assert large < 2 * small, (small, large)  # each of the asks covering them counted for every put: 20 x

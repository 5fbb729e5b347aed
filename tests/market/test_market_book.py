"""Signed market commitments and the replicated book."""

from __future__ import annotations

import json
from decimal import Decimal
from itertools import permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.calls import python_calls, python_lines
from tests.support.market import ask, bid

from xsc.allocation import Outcome, Stamp
from xsc.errors import InvalidCommitment, InvalidMarketCommitment
from xsc.identity import Identity
from xsc.market import Book, MarketCommitment, parse_commitment, sign_commitment, signed_bytes
from xsc.market.core import book as book_module
from xsc.market.core.orders import market_orders

ALICE, BOB = Identity.generate(), Identity.generate()


def _mc(identity=ALICE, stamp=None, ts=1_000, price=10, **kw):
    me = identity.id
    kw.setdefault("asks", [ask(me, "c1", 10**9, price)])
    kw.setdefault("bids", [bid(me, "n1", 10**6, 50, group="put-1", min_availability="0.9", prefer=(BOB.id,),
                               location=("eu", "us"))])
    kw.setdefault("recognition", {BOB.id: Decimal("2.5")})
    return sign_commitment(identity, stamp=stamp or Stamp.seed().event(), timestamp=ts, **kw)


def test_round_trip_through_json_verifies():
    mc = _mc()
    wire = json.loads(json.dumps(mc.to_json()))
    back = parse_commitment(wire)
    assert back == mc
    assert parse_commitment(back) == mc
    assert signed_bytes(wire).startswith(b"XSC-MARKET-COMMITMENT-1\n")


@pytest.mark.parametrize("field, value", [
    ("timestamp", 1_001),
    ("recognition", {BOB.id: "3"}),
    ("stamp", Stamp.seed().event().event().encode().hex()),
])
def test_tampering_is_caught(field, value):
    wire = _mc().to_json()
    wire[field] = value
    with pytest.raises(InvalidMarketCommitment, match="not signed by that node's key"):
        parse_commitment(wire)


def test_a_price_change_breaks_the_signature():
    wire = _mc().to_json()
    wire["asks"][0]["price"] = 1
    with pytest.raises(InvalidMarketCommitment, match="not signed"):
        parse_commitment(wire)


def test_someone_elses_signature_is_refused():
    wire = _mc().to_json()
    wire["signature"] = _mc(identity=BOB).signature
    with pytest.raises(InvalidMarketCommitment, match="not signed"):
        parse_commitment(wire)


@pytest.mark.parametrize("change, message", [
    (lambda w: w.update(participant="not-an-id"), "node id"),
    (lambda w: w.pop("stamp"), "stamp"),
    (lambda w: w.update(stamp="zz"), "hex"),
    (lambda w: w.update(signature="00"), "signature"),
    (lambda w: w.update(extra=1), "extra"),
    (lambda w: w["asks"][0].update(price=-1), "price"),
    (lambda w: w["asks"][0]["slot"].update(kind="gpu"), "trades compute and storage"),
    (lambda w: w["bids"][0].update(min_availability="1.5"), "min_availability"),
    (lambda w: w["recognition"].update(x="-1"), "recognition"),
])
def test_malformed_commitments_say_what_is_wrong(change, message):
    wire = _mc().to_json()
    change(wire)
    with pytest.raises(InvalidMarketCommitment, match=message):
        parse_commitment(wire)
    with pytest.raises(InvalidMarketCommitment):
        parse_commitment([wire])


def test_rules_of_the_book():
    me = ALICE.id
    with pytest.raises(InvalidMarketCommitment, match="owned by 'bob'"):
        _mc(asks=[ask("bob", "c1", 1, 1)])
    with pytest.raises(InvalidMarketCommitment, match="share the slot id 'c1'"):
        _mc(asks=[ask(me, "c1", 1, 1), ask(me, "c1", 2, 1)])
    # an ask and a bid may share an id: capacity and need slots are named apart, as in the allocator
    _mc(asks=[ask(me, "x", 1, 1)], bids=[bid(me, "x", 1, 1)])
    assert issubclass(InvalidMarketCommitment, InvalidCommitment)


def test_too_many_orders(monkeypatch):
    monkeypatch.setattr(book_module, "MAX_ORDERS", 2)
    me = ALICE.id
    with pytest.raises(InvalidMarketCommitment, match="3 orders in one commitment"):
        _mc(asks=[ask(me, f"c{i}", 1, 1) for i in range(3)], bids=[])


def test_future_dates_are_refused_when_asked():
    mc = _mc(ts=10_000_000)
    assert parse_commitment(mc.to_json()) == mc
    with pytest.raises(InvalidMarketCommitment, match="in the future"):
        parse_commitment(mc.to_json(), now_ms=0)


def test_receive_new_stale_newer():
    book = Book()
    s1 = Stamp.seed().event()
    first, second = _mc(stamp=s1), _mc(stamp=s1.event(), ts=2_000, price=11)
    assert book.receive(first) is Outcome.NEW
    assert book.receive(first) is Outcome.STALE
    assert book.receive(second) is Outcome.NEW
    assert book.receive(first) is Outcome.STALE
    assert book.get(ALICE.id) == second and book.asks()[0].price == 11
    assert book.seen(ALICE.id) == second.stamp
    assert len(book) == 1 and book.get(BOB.id) is None


def test_concurrent_commitments_merge_alike_in_any_order():
    left, right = Stamp.seed().fork()  # one key used from two places: concurrent histories
    a = _mc(stamp=left.event(), ts=1_000, price=1)
    b = _mc(stamp=right.event(), ts=2_000, price=2)
    digests = set()
    for order in permutations([a, b]):
        book = Book()
        outcomes = [book.receive(x) for x in order]
        assert outcomes == [Outcome.NEW, Outcome.MERGED]
        assert book.get(ALICE.id) is b  # the later timestamp wins, kept exactly as signed
        assert book.receive(a) is Outcome.STALE and book.receive(b) is Outcome.STALE
        digests.add(book.digest())
    assert len(digests) == 1
    # a commitment after both replaces the merge
    c = _mc(stamp=left.event().join(right.event().peek()).event(), ts=3_000, price=3)
    book.receive(c)
    assert book.get(ALICE.id) is c


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_books_converge_whatever_the_delivery_order(steps, rnd):
    """Three replicas of one participant make events and sometimes sync with each other; every
    commitment reaches two books in different orders: they end with the same book."""
    replicas = list(Stamp.seed().fork_many(3))
    made: list[MarketCommitment] = []
    for ts, (r, sync) in enumerate(steps, start=1):
        if sync:
            replicas[r] = replicas[r].join(replicas[(r + 1) % 3].peek())
        replicas[r] = replicas[r].event()
        made.append(_mc(stamp=replicas[r], ts=ts, price=ts))
    books = [Book(), Book()]
    for book in books:
        order = list(made)
        rnd.shuffle(order)
        for mc in order:
            book.receive(mc)
    assert books[0].digest() == books[1].digest()
    assert books[0].get(ALICE.id) is books[1].get(ALICE.id)


def test_orders_and_digest():
    book = Book(bucket_seconds=3600)
    book.receive(_mc())
    book.receive(_mc(identity=BOB, asks=[ask(BOB.id, "c9", 5, 7, start=0, end=5 * 3600)],
                     bids=[bid(BOB.id, "n9", 5, 9, start=3 * 3600, end=4 * 3600)]))
    ids = sorted((o.id.split("/")[0], o.owner == ALICE.id, o.bucket) for o in book.orders())
    # Each ask joins bucket 0 (its start) and bucket 3 (Bob's bid is there; both windows reach it)
    assert ids == [("ask", False, 0), ("ask", False, 3), ("ask", True, 0), ("ask", True, 3), ("bid", False, 3),
                   ("bid", True, 0)]
    other = Book()
    for mc in reversed(book.commitments()):
        other.receive(mc)
    assert other.digest() == book.digest() and Book().digest() != book.digest()
    assert set(book.recognition()) == {ALICE.id, BOB.id}
    with pytest.raises(InvalidMarketCommitment, match="positive number of seconds"):
        Book(bucket_seconds=0)


def _steps(asks: int, groups: int) -> int:
    """The Python calls `market_orders` makes (generator steps counted) over `asks` asks and `groups` puts of 2."""
    offers = [ask(f"p{i}", "s", 10**9, 1_000 + i) for i in range(asks)]
    needs = [bid(f"u{g}", f"n{g}-{k}", 10, 2_000, group=f"g{g}") for g in range(groups) for k in range(2)]
    return python_calls(lambda: market_orders(offers, needs, 3600))


def test_the_orders_of_a_book_cost_in_proportion_to_its_asks_and_bids_not_their_product():
    """Past the asks that cover every need, each further ask offers what one provider could deliver: a sum over the
    market's groups made once, not again for every ask (10,000 participants with 1,000 puts open: 1 s a round)."""
    small, large = _steps(100, 100), _steps(400, 400)
    assert large < 6 * small, (small, large)  # linear: 4 x; a sum over the groups for every ask: 16 x


def test_groups_no_ask_can_hold_cost_each_ask_nothing_however_many_there_are():
    """A group whose needs no provider has room for stays open past every ask: each ask smaller than every open
    group's largest need counts for none of them without walking them all."""
    def steps(n: int) -> int:
        offers = [ask(f"p{i}", "s", 10**9, 1_000 + i) for i in range(n)]
        needs = [bid(f"u{g}", f"n{g}-{k}", 10**10, 2_000, group=f"g{g}") for g in range(n) for k in range(2)]
        return python_lines(lambda: market_orders(offers, needs, 3600))

    small, large = steps(100), steps(400)
    assert large < 6 * small, (small, large)  # linear: 4 x; every open group walked for every ask: 16 x

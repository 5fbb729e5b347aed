"""The matching's classes of alike asks (xsc/market/core/ask_classes.py) give what a walk over every compatible ask
gives (tests/support/plain_matching.py), need for need and message for message, and a need costs the matching the
same however many asks the book holds."""

from __future__ import annotations

from contextlib import ExitStack
from decimal import Decimal
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support import plain_matching
from tests.support.calls import python_lines
from tests.support.market import HOUR, ask, bid

from xsc.allocation import NeedSlot, SlotFilter
from xsc.market import Bid, match_needs
from xsc.market.core import matching, supply
from xsc.market.core.ask_classes import _MaxTree
from xsc.market.core.backing import backed
from xsc.market.core.supply import match_spread

OWNERS = ("a", "b", "c", "d", "e", "f")
_filters = st.sampled_from([SlotFilter(), SlotFilter(deny=("b",)), SlotFilter(deny=("a", "c", "e")),
                            SlotFilter(allow=("a", "d")), SlotFilter(allow=("f",), deny=("f",)),
                            SlotFilter(require_tags=("ssd",)), SlotFilter(allow=("b", "c"), require_tags=("ssd",))])
_ask_filters = st.sampled_from([SlotFilter(), SlotFilter(), SlotFilter(deny=("a",)), SlotFilter(allow=("b", "c")),
                                SlotFilter(require_tags=("fast",))])
_places = st.sampled_from(["any", "any", "eu", ("eu", "us"), "us"])


_owners = st.sampled_from(OWNERS)
_kinds = st.sampled_from(("storage", "storage", "compute"))
_hours = st.integers(0, 3)
# An ask's fields, then a bid's, each drawn as one tuple of strategies made once: a book is some 200 choices, and
# hypothesis draws them so in half the time it takes through a strategy made at each draw (most of these tests' time).
_ask = st.tuples(_hours, st.sampled_from((0, 0, 0, 600)), _owners, st.integers(1, 6), st.integers(0, 4),
                 st.integers(1, 3), _kinds, _places, st.sampled_from(((), ("ssd",), ("ssd", "fast"))), _ask_filters)
_bid = st.tuples(_hours, st.sampled_from((None, None, "0.5", "0.9")), _owners, st.integers(1, 6),
                 st.sampled_from((HOUR, HOUR, 2 * HOUR)), _kinds, _places, st.sampled_from(((), ("ssd",))), _filters,
                 st.integers(0, 5), st.sampled_from((None, "g", "g", "h")), st.lists(_owners, max_size=3, unique=True))
_recognised = st.integers(0, 3)
_availabilities = st.sampled_from(("0.2", "0.5", "0.9", "1"))


@st.composite
def books(draw):
    """Asks and bids with ties in price (few prices), in window (bucket-aligned and not), alike slots of many owners
    and several slots per owner, filters on both sides, groups, minimum availabilities and preferences."""
    asks = []
    for i in range(draw(st.integers(0, 14))):
        hour, offset, owner, size, price, hours, kind, location, tags, filters = draw(_ask)
        start = hour * HOUR + offset
        asks.append(ask(owner, f"s{i}", size * 10, price, start=start, end=start + hours * HOUR, kind=kind,
                        location=location, tags=tags, filters=filters))
    bids = []
    for i in range(draw(st.integers(0, 16))):
        hour, floor, owner, size, length, kind, location, tags, filters, price, group, prefer = draw(_bid)
        slot = NeedSlot(id=f"n{i}", owner=owner, quantity=size * 5, start=hour * HOUR, end=hour * HOUR + length,
                        kind=kind, location=location, tags=tags, filters=filters)
        bids.append(Bid(slot=slot, price=price, group=group,
                        min_availability=None if floor is None else Decimal(floor), prefer=tuple(prefer)))
    recognition = {p: {q: Decimal(draw(_recognised)) for q in draw(st.lists(_owners, max_size=3))}
                   for p in draw(st.lists(_owners, max_size=3, unique=True))}
    availability = {p: Decimal(draw(_availabilities)) for p in draw(st.lists(_owners, unique=True))}
    return asks, bids, recognition, availability


def _same(order) -> bytes:
    return b""


@settings(max_examples=400, deadline=None)
@given(book=books(), allow_self=st.booleans(), first=st.sampled_from((None, "a", "e")),
       floors=st.dictionaries(st.tuples(st.sampled_from(("storage", "compute")), st.integers(0, 3)),
                              st.integers(0, 5), max_size=2),
       digests=st.booleans())
def test_the_matching_gives_what_a_walk_over_every_ask_gives(book, allow_self, first, floors, digests) -> None:
    asks, bids, recognition, availability = book
    kwargs = dict(recognition=recognition, availability=availability, bucket_seconds=HOUR, now_ms=0,
                  allow_self=allow_self, first=first, floors=floors)
    with ExitStack() as stack:
        if digests:  # every order's digest the same: the fixed orders fall back to (owner, id)
            stack.enter_context(mock.patch.multiple(matching, ask_digest=_same, bid_digest=_same))
            stack.enter_context(mock.patch.object(plain_matching, "ask_digest", _same))  # (bids: matching's order)
        assert match_needs(asks, bids, **kwargs) == plain_matching.match_needs(asks, bids, **kwargs)


@settings(max_examples=200, deadline=None)
@given(book=books(), backing=st.dictionaries(st.sampled_from(OWNERS), st.integers(0, 10**4)),
       me=st.sampled_from(OWNERS))
def test_a_deals_matching_gives_what_a_walk_over_every_ask_gives(book, backing, me) -> None:
    """`match_spread` (a deal's matching: groups spread, supply capped, floors raised) over bids as far as their
    backing counts them, as a deal makes it."""
    asks, bids, recognition, availability = book
    counted = backed(bids, lambda owner: backing.get(owner, 0), me)
    kwargs = dict(recognition=recognition, availability=availability, bucket_seconds=HOUR, now_ms=0, first=me)
    fast = match_spread(asks, counted, **kwargs)
    with mock.patch.object(supply, "match_needs", plain_matching.match_needs):
        assert fast == match_spread(asks, counted, **kwargs)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-1, 9), min_size=1, max_size=40), data=st.data())
def test_the_tree_of_rooms_finds_the_first_value_at_least_asked(values, data) -> None:
    tree = _MaxTree(values)
    for _ in range(10):
        i, value = data.draw(st.integers(0, len(values) - 1)), data.draw(st.integers(-1, 9))
        values[i] = value
        tree.set(i, value)
        lo = data.draw(st.integers(0, len(values)))
        hi, x = data.draw(st.integers(0, len(values))), data.draw(st.integers(0, 9))
        assert tree.first(lo, hi, x) == next((j for j in range(lo, hi) if values[j] >= x), None)


def _lines(providers: int) -> int:
    """The Python lines of a matching of 60 puts of 6 shares over `providers` providers, each offering this bucket
    and the next, one in ten also putting (the bench's book, small)."""
    asks = [ask(f"p{i}", f"s{b}", (64 + i % 512) * 2**20, 1_000 + (i * 7919) % 3_000, start=b * HOUR,
                end=(b + 1) * HOUR) for i in range(providers) for b in (0, 1)]
    bids = [bid(f"p{n}", f"n{k}", (1 + n % 64) * 2**20, 2_000 + n % 3_000, end=HOUR, group="put")
            for n in range(0, providers, 10) for k in range(6)]
    return python_lines(lambda: match_needs(asks, bids, recognition={}, availability={}, bucket_seconds=HOUR,
                                            now_ms=0))


def test_a_provider_more_costs_the_matching_the_same_whatever_the_book_holds() -> None:
    """Each need walked every compatible ask: the first matching of a book of N cost N x N."""
    few = _lines(400) - _lines(200)
    many = _lines(4_000) - _lines(3_800)
    assert many < 2 * few, (few, many)

"""The book's orders kept between market rounds, changed one participant at a time (pure).

`StandingOrders.clearings()` is what `clear_book(market_orders(asks, bids, bucket_seconds), me)` makes of every
participant's asks and bids set so far, without making it again from the whole book after each change: a market
round after one order changed looked at every order of a book of 10,000 participants again (26,000 `Order`s made,
the asks sorted, each market's sides sorted), some 400 ms of CPU.  Kept instead:

  - per kind, the asks sorted as `market_orders` walks them, (price, digest, owner, id): a change is a bisect and
    a list insert or delete per ask;
  - per market (kind, bucket) holding bids, its bids sorted as the auction takes them (price high to low, digest,
    id), and what they need from providers (`Coverage`'s loose needs and groups; a group is one owner's, so a
    participant's change touches its own groups alone);
  - the markets asks start in, which every clearing lists even when nobody bids there.

A clearing walks each market's two sides from the best order only as far as the auction does (the units traded
and the next order of each side), counting what each ask offers (`Coverage.take`, from the cheapest) on the way:
an ask past the margin offers nothing the clearing reads.  Asks and bids in any market that takes no part are
never looked at.  The result is the full computation's (tested against it with random sequences of changes).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from itertools import accumulate
from collections.abc import Iterable, Iterator
from typing import Any

from .auction import Clearing, Fill, Order, bucket_of, by_itself
from .models import Ask, Bid, ask_digest
from .orders import Coverage, GroupTally, bid_order


class _Market:
    """One (kind, bucket)'s bids: sorted as the auction takes them, and what they need from providers."""

    __slots__ = ("bids", "loose", "groups", "group_keys", "tally", "_sides")

    def __init__(self) -> None:
        # (-price, digest, id, order, its fill in full), sorted: (price, digest, id) is unique
        self.bids: list[tuple[int, bytes, str, Order, Fill]] = []
        self.loose = 0
        self.groups: dict[tuple[str, str], list[int]] = {}  # (owner, group) -> [needs, largest need]
        self.group_keys: list[tuple[str, str]] = []  # sorted, as `Coverage.take` walks them
        self.tally = GroupTally()  # the groups by how many providers each needs
        self._sides: tuple | None = None  # `sides()`, until the bids change

    def changed(self) -> None:
        self._sides = None

    def sides(self) -> tuple[list[int], list[int], list[Order], tuple[Fill, ...]]:
        """The bids of some units in the auction's order: their prices negated (ascending), the units up to and with
        each, the bids, and each one's fill in full; so the clearing finds the bids an ask trades with by bisection."""
        if self._sides is None:
            orders = [entry[3] for entry in self.bids if entry[3].quantity]
            self._sides = ([-o.price for o in orders], list(accumulate(o.quantity for o in orders)), orders,
                           tuple(entry[4] for entry in self.bids if entry[3].quantity))
        return self._sides

    def coverage(self) -> Coverage:
        """A fresh walk of what these bids need, as `market_orders` starts one (it reads the groups, never writes
        them)."""
        return Coverage(self.loose, self.groups, self.group_keys, self.tally)


class StandingOrders:
    """Every participant's asks and bids as the call markets take them, kept up with each participant's change (see
    the module docstring).  `me`: the node clearing (`clear_book`'s)."""

    def __init__(self, bucket_seconds: int, me: str | None = None) -> None:
        bucket_of(0, bucket_seconds)  # refuses a width that is no positive int, as the full computation does
        self.bucket_seconds = bucket_seconds
        self.me = me
        self._held: dict[str, tuple[tuple, tuple]] = {}  # participant -> (asks, bids) as set
        self._asks: dict[str, list[tuple]] = {}  # kind -> sorted (price, digest, owner, id, first, last, qty, oid)
        self._entries: dict[str, list[tuple]] = {}  # participant -> its entries in `_asks`
        self._starting: dict[tuple[str, int], int] = {}  # (kind, bucket) -> asks whose window starts there
        self._markets: dict[tuple[str, int], _Market] = {}  # markets that hold a bid
        self._bid_orders: dict[str, list[tuple[Bid, Order]]] = {}  # participant -> its bids and their orders
        self._made: dict | None = None  # the clearings, until a participant's orders change
        self._bulk = False  # while `of` fills it: its sorted lists are sorted once, at the end

    @classmethod
    def of(cls, asks: Iterable[Ask], bids: Iterable[Bid], bucket_seconds: int, me: str | None = None
           ) -> "StandingOrders":
        """Standing orders holding these asks and bids (each taken as its slot's owner's)."""
        out = cls(bucket_seconds, me)
        by_owner: dict[str, tuple[list, list]] = {}
        for a in asks:
            by_owner.setdefault(a.slot.owner, ([], []))[0].append(a)
        for b in bids:
            by_owner.setdefault(b.slot.owner, ([], []))[1].append(b)
        out._bulk = True  # appended, each list sorted once at the end: an insert each is quadratic in the book
        for owner, (a, b) in by_owner.items():
            out.set(owner, a, b)
        out._bulk = False
        for sorted_asks in out._asks.values():
            sorted_asks.sort()
        for m in out._markets.values():
            m.bids.sort()
            m.group_keys.sort()
        return out

    def held(self, participant: str) -> tuple[tuple, tuple]:
        """The asks and bids of `participant` as last set (empty when none)."""
        return self._held.get(participant, ((), ()))

    def set(self, participant: str, asks: Iterable[Ask], bids: Iterable[Bid]) -> bool:
        """`participant`'s orders are now these (every slot owned by it); returns whether they changed."""
        asks, bids = tuple(asks), tuple(bids)
        if self.held(participant) == (asks, bids):
            return False
        old_asks, old_bids = self.held(participant)
        if old_asks != asks:
            self._drop_asks(participant)
            self._add_asks(participant, asks)
        if old_bids != bids:
            self._drop_bids(participant)
            self._add_bids(participant, bids)
        if asks or bids:
            self._held[participant] = (asks, bids)
        else:
            self._held.pop(participant, None)
        self._made = None
        return True

    def _add_asks(self, participant: str, asks: tuple[Ask, ...]) -> None:
        entries = []
        for a in asks:
            s = a.slot
            first, last = bucket_of(s.start, self.bucket_seconds), bucket_of(s.end - 1, self.bucket_seconds)
            entry = (a.price, ask_digest(a), s.owner, s.id, first, last, s.quantity, f"ask/{s.owner}/{s.id}")
            _insert(self._asks.setdefault(s.kind, []), entry, self._bulk)
            entries.append((s.kind, entry))
            key = (s.kind, first)
            self._starting[key] = self._starting.get(key, 0) + 1
        if entries:
            self._entries[participant] = entries

    def _drop_asks(self, participant: str) -> None:
        for kind, entry in self._entries.pop(participant, ()):
            sorted_asks = self._asks[kind]
            del sorted_asks[bisect_left(sorted_asks, entry)]
            if not sorted_asks:
                del self._asks[kind]
            key = (kind, entry[4])
            self._starting[key] -= 1
            if not self._starting[key]:
                del self._starting[key]

    def _add_bids(self, participant: str, bids: tuple[Bid, ...]) -> None:
        made = [(b, bid_order(b, self.bucket_seconds)) for b in bids]
        grouped: set[tuple[_Market, tuple[str, str]]] = set()
        for b, o in made:
            m = self._markets.get((o.kind, o.bucket))
            if m is None:
                m = self._markets[(o.kind, o.bucket)] = _Market()
            m.changed()
            _insert(m.bids, (-o.price, o.digest, o.id, o, Fill(o.id, o.owner, "bid", o.quantity)), self._bulk)
            if b.group is None:
                m.loose += b.slot.quantity
                continue
            key = (b.slot.owner, b.group)
            g = m.groups.get(key)
            if g is None:
                g = m.groups[key] = [0, 0]
                _insert(m.group_keys, key, self._bulk)
            g[0] += 1
            g[1] = max(g[1], b.slot.quantity)
            grouped.add((m, key))
        for m, key in grouped:  # a group's bids all come at once: it is tallied once they are in
            m.tally.add(*m.groups[key])
        if made:
            self._bid_orders[participant] = made

    def _drop_bids(self, participant: str) -> None:
        for b, o in self._bid_orders.pop(participant, ()):
            key = (o.kind, o.bucket)
            m = self._markets[key]
            m.changed()
            del m.bids[bisect_left(m.bids, (-o.price, o.digest, o.id))]
            if b.group is None:
                m.loose -= b.slot.quantity
            elif (b.slot.owner, b.group) in m.groups:  # a group's bids all leave at once: the first one drops it
                m.tally.remove(*m.groups.pop((b.slot.owner, b.group)))
                del m.group_keys[bisect_left(m.group_keys, (b.slot.owner, b.group))]
            if not m.bids:
                del self._markets[key]

    def clearings(self) -> dict[tuple[str, int], Clearing]:
        """`clear_book(market_orders(every ask, every bid), me)`: one clearing per (kind, bucket) holding an order."""
        if self._made is None:
            none = {key: Clearing(key[0], key[1], None, None, None, 0, ()) for key in self._starting}
            self._made = {key: self._clear(key, self._markets[key]) if key in self._markets else none[key]
                          for key in sorted(none.keys() | self._markets.keys())}
        return dict(self._made)

    def _asks_in(self, kind: str, bucket: int, market: _Market) -> Iterator[Order]:
        """The asks of one market with bids, from the cheapest, each with what it offers there (none of nothing)."""
        coverage = market.coverage()
        for price, digest, owner, _, first, last, quantity, oid in self._asks.get(kind, ()):
            if first <= bucket <= last:
                offered = coverage.take(owner, quantity)
                if offered:
                    yield Order(oid, owner, "ask", kind, bucket, offered, price, digest)

    def _clear(self, key: tuple[str, int], market: _Market) -> Clearing:
        """`clear_auction` of one market with bids, walking the asks only as far as the clearing reads them, and
        finding the bids each ask trades with by bisection: the units traded so far say which bid is next."""
        kind, bucket = key
        neg_prices, units, orders, full = market.sides()
        asks = self._asks_in(kind, bucket, market)
        ask = next(asks, None)
        if not orders or ask is None:
            return Clearing(kind, bucket, None, None, None, 0, ())
        ra = ask.quantity
        traded = last_bid = last_ask = 0
        ask_fills: list[Fill] = []
        while ask is not None:
            i = bisect_right(units, traded)  # the bid the next unit is of
            if i == len(orders) or orders[i].price < ask.price:
                break
            # the units of the bids at or above this ask's price, less those traded: what it trades at most
            t = min(ra, units[bisect_right(neg_prices, -ask.price) - 1] - traded)
            traded += t
            ra -= t
            last_bid, last_ask = orders[bisect_left(units, traded)].price, ask.price
            if ra:
                break  # the bids left are below this ask's price
            ask_fills.append(Fill(ask.id, ask.owner, "ask", ask.quantity))
            ask = next(asks, None)
            ra = ask.quantity if ask is not None else 0
        if not traded:
            return Clearing(kind, bucket, None, None, None, 0, ())
        i = bisect_right(units, traded)  # bids before it traded in full
        bid = orders[i] if i < len(orders) else None
        bid_fills = full[:i]
        if bid is not None and units[i] - traded < bid.quantity:
            bid_fills += (Fill(bid.id, bid.owner, "bid", bid.quantity - (units[i] - traded)),)
        if ask is not None and ra < ask.quantity:
            ask_fills.append(Fill(ask.id, ask.owner, "ask", ask.quantity - ra))
        low = last_ask if bid is None else max(last_ask, bid.price)
        high = last_bid if ask is None else min(last_bid, ask.price)
        return by_itself(Clearing(kind, bucket, (low + high) // 2, low, high, traded, (*bid_fills, *ask_fills)),
                         self.me)


def _insert(into: list, item: Any, bulk: bool) -> None:
    if bulk:
        into.append(item)
    else:
        insort(into, item)

"""Who takes part in a clearing, and the clearing `xsc market book` and `xsc market prices` show.

One rule (`taking_part`) says whose orders a clearing takes, for the clearing shown and for every deal's matching
(`Dealing`, a put's quote): were the shown one to take an ask of a seller that is down or whose offer went stale,
which no deal takes, it would show a price no put pays (its ask bounding the range, or its fills making the market
one of several sellers, priced at the midpoint, where the deal's, this node's alone, is priced at its own ask).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from ..tasks import in_pool, now_ms
from .core.auction import clear_book
from .core.availability import weighed
from .core.models import Ask, Bid
from .core.orders import market_orders
from .core.standing import StandingOrders


def taking_part(market: Any, exclude: frozenset[str] = frozenset(),
                down: frozenset[str] | None = None) -> Callable[[str], bool]:
    """Does a participant's orders take part in a clearing of `market` (a MarketService) now: this node, and every
    participant `active` (known, up, its offer current) that is not probed down (availability 0: `down`, as
    `market.down()` gives it) nor in `exclude` (providers that just failed a deal).  Each participant is looked at
    once per predicate: a deal asks for every order of a big book."""
    if down is None:
        down = market.down()
    seen: dict[str, bool] = {}

    def takes_part(participant: str) -> bool:
        if participant not in seen:
            seen[participant] = participant not in down and participant not in exclude and market.active(participant)
        return seen[participant]

    return takes_part


def _flips_version(peers: Any) -> Any:
    """Changes whenever a peer's descriptor or its being up may have (`_flipped_since` says whose); a view of the
    peers that keeps no such record (a test's) changes it with its whole state."""
    if peers is None:
        return None
    flips = getattr(peers, "flips_version", None)
    return flips() if flips is not None else ("all", peers.state_version())


def _flipped_since(peers: Any, version: Any) -> set[str] | None:
    """The peers whose descriptor or being up changed since `_flips_version(peers)` was `version` (None: unknown)."""
    if version == _flips_version(peers):
        return set()
    return None if version is None or version[0] == "all" else peers.flipped_since(version)


def _probed_down(market: Any, participant: str) -> bool:
    """Whether a known peer's availability is 0 (`market.down()`'s answer for one participant, looked at alone: a probe
    round that probed every peer and flipped one costs the round after it that peer alone)."""
    if participant == market.me or market.peers is None or market.peers.get(participant) is None:
        return False
    return weighed(market.peers.availability(participant)) == 0


def clear_orders(*orders: Any) -> dict:
    """The clearings `clear_book(Book.orders(), me)` makes: of standing orders (`StandingOrders`, kept between rounds),
    or of (asks, bids, bucket width, the node `me`) from scratch (pure).  Every clearing the shown one is made of is
    made here."""
    if len(orders) == 1:
        return orders[0].clearings()
    asks, bids, bucket_seconds, me = orders
    return clear_book(market_orders(asks, bids, bucket_seconds), me)


def standing_clearings(asks: list[Ask], bids: list[Bid], bucket_seconds: int, me: str
                       ) -> tuple[StandingOrders, dict]:
    """These asks and bids as standing orders, and their clearings (pure)."""
    standing = StandingOrders.of(asks, bids, bucket_seconds, me)
    return standing, clear_orders(standing)


class CountedBids:
    """Which of the book's bids count (`MarketService.credible_bids`: other participants' as far as their trust lines
    here back them), and a version that grows whenever they changed with no change of the book: a deal's answer kept
    for reuse rests on them (`Dealing._shape_of`).  Looked at again only when the book or a trust line changed, and
    its version moves only when that changed which bids count: a reservation on a line, made for every share a peer
    stores here, moves no bid in a book that holds none of that peer's.  A change of the book alone is looked at for
    the participants it changed (`BookReplication.changed_since`: a participant's bids count or not whatever the
    others bid), not for the whole book; a trust line changed, or changes no longer all remembered, look at it whole."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService
        self._version = 0
        self._made_of: tuple | None = None  # (the book's version, the trust lines') they were looked at in
        self._counted: dict[str, frozenset[str]] = {}  # owner -> the need ids of its bids that count (none: absent)
        self._floored: set[str] = set()  # the owners one of whose bids that count asks for a minimum availability
        self.floored = False  # whether one of them asks for a minimum availability (as of `version()`)

    def version(self) -> int:
        market = self.market
        made_of = (market.version, market.backing_version())
        if made_of != self._made_of:
            changed = None if self._made_of is None or made_of[1] != self._made_of[1] else \
                market.replication.changed_since(self._made_of[0])
            if changed is None:
                counted: dict[str, list] = {}
                for b in market.credible_bids():
                    counted.setdefault(b.slot.owner, []).append(b)
                moved = self._count(set(self._counted) | set(counted), counted)
            else:
                moved = self._count(changed, {p: market.credible_bids(held.bids) for p in changed
                                              if (held := market.book.get(p)) is not None})
            if moved:
                self._version += 1
            self.floored = bool(self._floored)
            self._made_of = made_of
        return self._version

    def _count(self, owners: set[str], bids: dict[str, list]) -> bool:
        """The bids that count of `owners` set to `bids` (owner -> them): whether that changed any."""
        moved = False
        for owner in owners:
            mine = bids.get(owner, ())
            ids = frozenset(b.slot.id for b in mine)
            if ids != self._counted.get(owner, frozenset()):
                moved = True
                if ids:
                    self._counted[owner] = ids
                else:
                    del self._counted[owner]
            (self._floored.add if any(b.min_availability is not None for b in mine) else self._floored.discard)(owner)
        return moved


class TakingPart:
    """Those of the book `taking_part` leaves out of the shown clearing, and a version that grows whenever they change.

    Looked at every market round, they are made again whole (a look at every participant: with 10,000 in the book,
    ~40 ms of CPU) only when the changes are not all remembered, `market.freshness` changed or the clock was set back.
    A change of the book (a commitment taken or forgotten: a peer put in quarantine is forgotten, and is back only with
    a commitment taken again) decides only for the participants it changed (`BookReplication.changed_since`), and one
    of the peers only for those whose descriptor or being up changed (`PeerService.flipped_since`): a probe round
    moves every peer's history, and changes none of this unless a peer came up or went down (a peer up at its last
    probe has answered within the hour: its availability is not 0).  Time only ever makes an offer go stale, so the
    participant taking part whose offer was signed first is the next whose part the clock can end: while it is still
    `active`, and the clock was not set back, no one's was."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService
        self.version = 0
        self._left_out: frozenset[str] = frozenset()
        self._made_of: tuple | None = None  # (the book's version, the peers' flips', the freshness) they were made of
        self._since = 0  # ms when they were last looked at: a clock set back before it makes them again
        self._down: set[str] = set()  # those probed down (availability 0)
        # Those of them whose last probe answered, down by the hour's ratio alone: only after the clock was set back
        # behind that answer, and the clock can end it.  While there is one, so can any change of the peers' state.
        self._odd: set[str] = set()
        self._peers_of: tuple | None = None  # `market.peers_version()` when they were made, while there is one
        self._signed: dict[str, int] = {}  # peer taking part -> when its offer was signed
        self._by_age: list[tuple[int, str]] = []  # heap of (signed, peer), stale entries left until they surface

    def left_out(self) -> frozenset[str]:
        market = self.market
        made_of = (market.version, _flips_version(market.peers), market.config.freshness)
        changed = flipped = None
        now = now_ms()
        if self._made_of is not None and made_of[2] == self._made_of[2] and now >= self._since \
                and not (self._odd and market.peers_version() != self._peers_of):
            flipped = set() if made_of[1] == self._made_of[1] else _flipped_since(market.peers, self._made_of[1])
            changed = None if flipped is None else set() if made_of[0] == self._made_of[0] else \
                market.replication.changed_since(self._made_of[0])
        if changed is None:
            self._make(made_of)
        elif changed or flipped:
            self._update(changed | flipped, flipped, made_of)
        else:
            self._made_of = made_of
        oldest = self._oldest()
        # Between changes only the clock ends a part (the class says why): `active` is asked only once it has passed
        # the oldest offer's freshness, as an invoke's kept deal reads this on every call.
        if oldest is not None and now > self._signed[oldest] + made_of[2] * 1000 and not market.active(oldest):
            self._make(made_of)
        return self._left_out

    def _takes_part(self, participant: str) -> bool:
        """`taking_part`'s rule for one participant, with those probed down as they were made."""
        return participant not in self._down and self.market.active(participant)

    def _oldest(self) -> str | None:
        """The peer taking part whose offer was signed first (None: no peer takes part)."""
        heap = self._by_age
        while heap and self._signed.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][1] if heap else None

    def _make(self, made_of: tuple) -> None:
        market = self.market
        self._down = set(market.down())
        self._odd = {p for p in self._down if market.peers.up(p)} if self._down else set()
        commitments = market.book.commitments()
        left_out = frozenset(c.participant for c in commitments if not self._takes_part(c.participant))
        self._signed = {c.participant: c.timestamp for c in commitments
                        if c.participant != market.me and c.participant not in left_out}
        self._by_age = [(at, p) for p, at in self._signed.items()]
        heapq.heapify(self._by_age)
        self._done(made_of, left_out)

    def _update(self, changed: set[str], flipped: set[str], made_of: tuple) -> None:
        market = self.market
        for p in flipped:
            if _probed_down(market, p):
                self._down.add(p)
            else:
                self._down.discard(p)
            if p in self._down and market.peers.up(p):
                self._odd.add(p)
            else:
                self._odd.discard(p)
        joined, left = set(), set()  # those no longer left out, and those left out now
        for p in changed:
            held = market.book.get(p)
            self._signed.pop(p, None)
            out = held is not None and not self._takes_part(p)
            if out != (p in self._left_out):
                (left if out else joined).add(p)
            if held is not None and not out and p != market.me:
                self._signed[p] = held.timestamp
                heapq.heappush(self._by_age, (held.timestamp, p))
        if len(self._by_age) > 2 * len(self._signed) + 64:  # mostly stale entries: a heap of those taking part again
            self._by_age = [(at, p) for p, at in self._signed.items()]
            heapq.heapify(self._by_age)
        self._done(made_of, (self._left_out - joined) | left if joined or left else self._left_out)

    def _done(self, made_of: tuple, left_out: frozenset[str]) -> None:
        self._since, self._made_of = now_ms(), made_of
        self._peers_of = self.market.peers_version() if self._odd else None
        if left_out != self._left_out:
            self._left_out = left_out
            self.version += 1


class ShownClearing:
    """The call market over the book's orders of those `taking_part`, cleared again when the orders of those taking
    part, who takes part or a trust line backing the bids changed (lazily, on the next read or market round), each
    new price kept for `xsc market prices`.

    The orders are kept between rounds (`StandingOrders`): a change of the book, or of who takes part, sets again the
    orders of the participants it changed alone, a change of a trust line the bids of each bidder, and one that leaves
    every order as it was (a peer's offer re-signed to stay current, every third of `market.freshness`; the offer of
    one left out) keeps the clearing.  They are made again from the whole book only when the changes are no longer
    all remembered (`BookReplication.changed_since`)."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService: the book, who is active, the prices, the pool
        self.taking_part = TakingPart(market)
        self._kept: tuple[tuple, dict] | None = None  # (what it was made of, the clearings)
        self._standing: StandingOrders | None = None  # the orders the kept clearings are made of
        self._left_out: frozenset[str] = frozenset()  # those left out of them
        self._bidders: set[str] = set()  # participants whose commitment holds bids: a trust line weighs theirs

    def _inputs(self) -> tuple[tuple, frozenset[str]]:
        """What a clearing is made of (the book's version, the version of those left out of it, the version of the
        trust lines that back the bids), and those left out: every order's owner holds a commitment in the book, so
        they say who takes part."""
        left_out = self.taking_part.left_out()
        return (self.market.version, self.taking_part.version, self.market.backing_version()), left_out

    def _update(self, made_of: tuple, left_out: frozenset[str]) -> bool:
        """Bring the kept clearing to `made_of` by the participants that changed since it was made (their orders set
        again, the clearing made again only if one's changed); False when it must be made from the whole book."""
        if self._kept is None:
            return False
        kept_of = self._kept[0]
        if kept_of == made_of:
            return True
        changed = self.market.replication.changed_since(kept_of[0])
        if changed is None:
            return False
        changed |= left_out ^ self._left_out
        if kept_of[2] != made_of[2]:
            changed |= self._bidders  # a trust line changed: whose bids count, weighed again bidder by bidder
        book, standing = self.market.book, self._standing
        moved = False
        for p in changed:
            held = book.get(p)
            if held is not None and held.bids:
                self._bidders.add(p)
            else:
                self._bidders.discard(p)
            if held is None or p in left_out:
                moved |= standing.set(p, (), ())
            else:
                moved |= standing.set(p, held.asks, self.market.credible_bids(held.bids))
        self._left_out = left_out
        if moved:
            self._keep(made_of, clear_orders(standing))
        else:
            self._kept = (made_of, self._kept[1])
        return True

    def _orders(self, left_out: frozenset[str]) -> tuple:
        market = self.market
        self._bidders = {b.slot.owner for b in market.book.bids()}
        return ([a for a in market.book.asks() if a.slot.owner not in left_out],
                [b for b in market.credible_bids() if b.slot.owner not in left_out],
                market.book.bucket_seconds, market.me)

    def _keep(self, made_of: tuple, clearings: dict) -> None:
        self._kept = (made_of, clearings)
        self.market.prices.record(clearings, now_ms())

    def now(self) -> dict:
        made_of, left_out = self._inputs()
        if not self._update(made_of, left_out):
            standing, clearings = standing_clearings(*self._orders(left_out))
            self._standing, self._left_out = standing, left_out
            self._keep(made_of, clearings)
        return self._kept[1]

    async def refresh(self) -> None:
        """`now()`, made from the whole book in the CPU pool (over 1,000 participants, 40-60 ms of CPU held the loop);
        a round after the changes of a few participants costs what their orders and the clearing's walk cost,
        whatever the book holds."""
        made_of, left_out = self._inputs()
        if self._update(made_of, left_out):
            return
        standing, clearings = await in_pool(self.market.pool, standing_clearings, *self._orders(left_out))
        if self._inputs()[0] == made_of:  # else what it is made of changed meanwhile: next round
            self._standing, self._left_out = standing, left_out
            self._keep(made_of, clearings)

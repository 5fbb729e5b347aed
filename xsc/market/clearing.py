"""Who takes part in a clearing, and the clearing `xsc market book` and `xsc market prices` show.

One rule (`taking_part`) says whose orders a clearing takes, for the clearing shown and for every deal's matching
(`Dealing`, a put's quote): were the shown one to take an ask of a seller that is down or whose offer went stale,
which no deal takes, it would show a price no put pays (its ask bounding the range, or its fills making the market
one of several sellers, priced at the midpoint, where the deal's, this node's alone, is priced at its own ask).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..tasks import in_pool, now_ms
from .core.auction import clear_book
from .core.models import Ask, Bid
from .core.orders import market_orders


def taking_part(market: Any, exclude: frozenset[str] = frozenset(),
                availability: dict[str, Decimal] | None = None) -> Callable[[str], bool]:
    """Does a participant's orders take part in a clearing of `market` (a MarketService) now: this node, and every
    participant `active` (known, up, its offer current) that is not probed down (availability 0, `availability` as
    `market.availability_map()` gives it) nor in `exclude` (providers that just failed a deal).  Each participant is
    looked at once per predicate: a deal asks for every order of a big book."""
    if availability is None:
        availability = market.availability_map()
    out = {p for p, a in availability.items() if a == 0} | exclude
    seen: dict[str, bool] = {}

    def takes_part(participant: str) -> bool:
        if participant not in seen:
            seen[participant] = participant not in out and market.active(participant)
        return seen[participant]

    return takes_part


def clear_orders(asks: list[Ask], bids: list[Bid], bucket_seconds: int, me: str) -> dict:
    """What `Book.orders` and `clear_book` make of these asks and bids, cleared by node `me` (pure)."""
    return clear_book(market_orders(asks, bids, bucket_seconds), me)


class CountedBids:
    """Which of the book's bids count (`MarketService.credible_bids`: other participants' as far as their trust lines
    here back them), and a version that grows whenever they changed with no change of the book: a deal's answer kept
    for reuse rests on them (`Dealing._shape_of`).  Looked at again only when the book or a trust line changed, and
    its version moves only when that changed which bids count: a reservation on a line, made for every share a peer
    stores here, moves no bid in a book that holds none of that peer's."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService
        self._version = 0
        self._made_of: tuple | None = None  # (the book's version, the trust lines') they were looked at in
        self._counted: frozenset[tuple[str, str]] = frozenset()  # (owner, need id) of the bids that count

    def version(self) -> int:
        market = self.market
        made_of = (market.version, market.backing_version())
        if made_of != self._made_of:
            counted = frozenset((b.slot.owner, b.slot.id) for b in market.credible_bids())
            if counted != self._counted:
                self._counted = counted
                self._version += 1
            self._made_of = made_of
        return self._version


class TakingPart:
    """Those of the book `taking_part` leaves out of the shown clearing, and a version that grows whenever they change.

    Looked at every market round, they are made again (a look at every participant: with 10,000 in the book, ~35 ms
    of CPU) only when what decides them may have changed: the book (a commitment taken or forgotten: a peer put in
    quarantine is forgotten, and is back only with a commitment taken again), the peers' availability (the directory,
    a probe, the 5-minute bucket: `peers_version`), `market.freshness`, or the time.  Time only ever makes an offer go
    stale, so the participant taking part whose offer was signed first is the next whose part the clock can end:
    while it is still `active`, and the clock was not set back, no one's was."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService
        self.version = 0
        self._left_out: frozenset[str] = frozenset()
        self._made_of: tuple | None = None  # (the book's version, the peers', the freshness) they were made of
        self._since = 0  # ms when they were made: a clock set back before it makes them again
        self._oldest: str | None = None  # the peer taking part whose offer goes stale first (None: no peer takes part)

    def left_out(self) -> frozenset[str]:
        market = self.market
        made_of = (market.version, market.peers_version(), market.config.freshness)
        if made_of != self._made_of or now_ms() < self._since or \
                (self._oldest is not None and not market.active(self._oldest)):
            self._make(made_of)
        return self._left_out

    def _make(self, made_of: tuple) -> None:
        market = self.market
        takes_part = taking_part(market)
        commitments = market.book.commitments()
        left_out = frozenset(c.participant for c in commitments if not takes_part(c.participant))
        taking = [c for c in commitments if c.participant != market.me and c.participant not in left_out]
        self._oldest = min(taking, key=lambda c: c.timestamp).participant if taking else None
        self._since, self._made_of = now_ms(), made_of
        if left_out != self._left_out:
            self._left_out = left_out
            self.version += 1


class ShownClearing:
    """The call market over the book's orders of those `taking_part`, cleared again when the book, who takes part or
    a trust line backing the bids changed (lazily, on the next read or market round), each new price kept for
    `xsc market prices`."""

    def __init__(self, market: Any) -> None:
        self.market = market  # xsc.market.service.MarketService: the book, who is active, the prices, the pool
        self.taking_part = TakingPart(market)
        self._kept: tuple[tuple, dict] | None = None  # (what it was made of, the clearings)

    def _inputs(self) -> tuple[tuple, Callable[[str], bool]]:
        """What a clearing is made of (the book's version, the version of those left out of it, the version of the
        trust lines that back the bids), and the rule it is made by: every order's owner holds a commitment in the
        book, so those left out say who takes part."""
        left_out = self.taking_part.left_out()
        made_of = (self.market.version, self.taking_part.version, self.market.backing_version())
        return made_of, lambda participant: participant not in left_out

    def _orders(self, takes_part: Callable[[str], bool]) -> tuple:
        market = self.market
        return ([a for a in market.book.asks() if takes_part(a.slot.owner)],
                [b for b in market.credible_bids() if takes_part(b.slot.owner)],
                market.book.bucket_seconds, market.me)

    def _keep(self, made_of: tuple, clearings: dict) -> None:
        self._kept = (made_of, clearings)
        self.market.prices.record(clearings, now_ms())

    def now(self) -> dict:
        made_of, takes_part = self._inputs()
        if self._kept is None or self._kept[0] != made_of:
            self._keep(made_of, clear_orders(*self._orders(takes_part)))
        return self._kept[1]

    async def refresh(self) -> None:
        """`now()` made in the CPU pool (over 1,000 participants, 40-60 ms of CPU held the loop at each change); a
        round in which neither the book, who takes part nor a trust line changed costs the same whatever the book
        holds."""
        made_of, takes_part = self._inputs()
        if self._kept is not None and self._kept[0] == made_of:
            return
        clearings = await in_pool(self.market.pool, clear_orders, *self._orders(takes_part))
        if self._inputs()[0] == made_of:  # else what it is made of changed meanwhile: next round
            self._keep(made_of, clearings)

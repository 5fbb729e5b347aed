"""Where a put's shares go and what they cost: one need slot per share, matched on the market.

A put of known size publishes six need slots (share bytes x lease duration, one group, so distinct
providers while there are enough), bid at the user's maximum price (`--max-price`, default
`market.storage_bid`, micro-credits per GiB-hour).  The market clears them with the book and
assigns each to a provider at the clearing price; the user's credit must cover the whole lease
before a byte is stored.  Each holder is told the deal price when the upload begins and refuses it
under its own ask.  A stream of unknown size cannot be matched (its share size is unknown): it is
kept whole on this node at this node's ask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from ..errors import InvalidArgument, MarketNoDeal, StorageFull
from ..identity import parse_public_id
from ..ledger.pricing import price_storage
from ..market.service import MarketService
from . import erasure, layout
from .deals import MAX_PRICE



@dataclass
class PutQuote:
    share_bytes: int
    seconds: int
    nodes: list[str]  # the provider of each share
    prices: dict[int, int]  # share -> micro-credits per GiB-hour
    needs: list[str] = field(default_factory=list)
    assignments: list = field(default_factory=list)  # the market's, when it matched the needs (market.spent)

    @property
    def cost(self) -> int:
        return sum(price_storage(self.share_bytes, self.seconds, p) for p in self.prices.values())

    def to_json(self) -> dict:
        return {"needs": self.needs, "prices": [self.prices[s] for s in sorted(self.prices)], "cost": self.cost,
                "lease_seconds": self.seconds}


def parse_max_price(text: str | None, default: int) -> int:
    """`?max_price=` of a put (micro-credits per GiB-hour), else the node's default bid."""
    if text is None:
        return default
    if not text.isdigit() or int(text) > MAX_PRICE:
        raise InvalidArgument(f"max_price must be a whole number of micro-credits per GiB-hour, not {text!r}",
                              hint="e.g. --max-price 5000")
    return int(text)


def parse_filters(query: Mapping[str, str]) -> dict:
    """The put's own filters: `avoid` and `prefer` (comma-separated node ids), `min_availability` (0 to 1)."""
    out: dict = {}
    for name in ("avoid", "prefer"):
        text = query.get(name, "")
        ids = tuple(i for i in text.split(",") if i)
        for node in ids:
            parse_public_id(node)  # a clear 400 for anything that is not a node id
        out[name] = ids
    text = query.get("min_availability")
    if text is not None:
        try:
            ratio = Decimal(text)
        except InvalidOperation:
            ratio = Decimal(-1)
        if not ratio.is_finite() or not 0 <= ratio <= 1:
            raise InvalidArgument(f"min_availability must be a ratio from 0 to 1, not {text!r}",
                                  hint="e.g. --min-availability 0.99")
        out["min_availability"] = ratio
    return out


async def quote(market: MarketService, segment_size: int, size: int | None, seconds: int, bid: int,
                **wanted) -> PutQuote:
    """Match the put's needs on the market (or, for an unknown size, price it here at our own ask)."""
    me = market.me
    if size is None:
        ask = market.ask("storage")
        if ask is None:
            raise StorageFull("this node offers no storage for a stream of unknown size",
                              hint="send the size (Content-Length), or turn market.offer_storage on")
        if ask > bid:
            raise InvalidArgument(f"this node's ask of {ask} per GiB-hour is above your maximum price {bid}",
                                  hint=f"raise --max-price to at least {ask}")
        return PutQuote(0, seconds, [me] * erasure.N, {s: ask for s in range(erasure.N)})
    share_bytes = layout.share_bytes(size, segment_size)
    room = market.book.most_offered("storage")
    if room < share_bytes:
        raise StorageFull(f"no node offers room for a share of this file ({share_bytes} bytes; the most any "
                          f"offers is {room})", hint="free space, or add nodes with `xsc peers add`")
    group = f"put-{os.urandom(6).hex()}"
    bids = [market.need(f"{group}-{s}", "storage", share_bytes, seconds, bid, group=group, **wanted)
            for s in range(erasure.N)]
    market.needs.open(bids)  # published while the put runs
    try:
        assignments = await market.deal(bids)
    except BaseException as err:
        withdraw_needs(market, [b.slot.id for b in bids])
        affordable = any(a.slot.kind == "storage" and a.price <= bid for a in market.book.asks())
        if isinstance(err, MarketNoDeal) and affordable and \
                set(err.details.get("needs", {}).values()) <= {"capacity_taken", "no_compatible_slot"}:
            raise StorageFull(f"the providers have no room for all {erasure.N} shares of this file ({share_bytes} "
                              f"bytes each; the most free on one provider is {room} bytes)",
                              hint="free space, or add nodes with `xsc peers add`", needs=err.details["needs"]) from None
        raise
    finally:
        market.remember()
    return PutQuote(share_bytes, seconds, [assignments[b.slot.id].provider for b in bids],
                    {s: assignments[b.slot.id].price for s, b in enumerate(bids)}, [b.slot.id for b in bids],
                    [assignments[b.slot.id] for b in bids])


def withdraw_needs(market: MarketService, needs: list[str]) -> None:
    """The put is over (stored or not): its needs leave the book."""
    market.needs.withdraw(needs)


async def relocation(market: MarketService, share_bytes: int, seconds: int, *, avoid: set[str],
               bid: int | None = None, failed: frozenset[str] = frozenset()) -> tuple[str, int]:
    """A provider (not in `avoid`) and its price for one share placed again (a repair, or a holder that could
    not take its share), at `bid` (default: the node's default bid); `failed` providers do not even take part in
    the clearing (a dead provider's ask must not set the price the others are measured against)."""
    need = market.need(f"repair-{os.urandom(6).hex()}", "storage", share_bytes, seconds,
                       market.config.storage_bid if bid is None else bid, avoid=tuple(sorted(avoid)))
    try:
        assignment = (await market.deal([need], failed))[need.slot.id]
    finally:
        market.remember()
    return assignment.provider, assignment.price

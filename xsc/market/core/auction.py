"""The uniform-price call market: one clearing per (kind, time bucket), a k-double auction with k = 1/2.

Every order is `quantity` units at one price (micro-credits per price unit).  Conceptually each
side is a unit curve: bids sorted high to low, asks low to high, ties broken by the order's digest
(then its id), and each order contributing `quantity` consecutive units.  With B(u) the bid
price of the u-th unit and A(u) the ask price of the u-th unit:

    Q     = the largest u with B(u) >= A(u)                      (0: no trade)
    low   = max(A(Q), B(Q+1)),   high = min(B(Q), A(Q+1))        (a missing neighbour is ignored)
    price = floor((low + high) / 2)                              (k = 1/2, rounded down)

B falls and A rises, so B - A falls and Q is found by one merge walk over the two sorted lists;
units are never materialised (storage quantities are bytes).  low <= price <= high, and
B(Q+1) < A(Q+1) when both exist, so every one of the first Q bid units is worth at least the
price to its bidder and every one of the first Q ask units costs at most the price: those are
the fills.  Orders with a price strictly better than `price` trade in full; at the margin (price
equal) the tie-break order decides, and one order may be filled in part.  Bid fills and ask fills
both sum to Q, and everyone pays or receives the one price: the market is budget-balanced.

A market in which one participant alone trades, on both sides (a node's puts placed on the node itself once the
other sellers are gone), is priced at the low end of its range instead (`clear_book`'s `me`): there is no other
party to share a surplus with, and the midpoint of the node's own ask and its own bid would move what its puts pay
with whether a peer's ask happens to bound the range.

Known weakness: a k-double auction is not truthful.  A marginal trader sets the price (its own
price is one end of [low, high]) and can gain by shading it; traders away from the margin cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Literal, Sequence

from ...errors import MarketError


@dataclass(frozen=True, slots=True)
class Order:
    """One side's offer in one (kind, bucket): `quantity` units at `price` per price unit.

    `digest` is the SHA-256 of the signed order (see `order_digest`): the tie-break."""

    id: str
    owner: str
    side: Literal["bid", "ask"]
    kind: str
    bucket: int
    quantity: int
    price: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: str
    owner: str
    side: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Clearing:
    """The outcome of one call: `traded` units at `price` (None when nothing trades), the clearing
    range [low, high], and the fills of both sides (bids first, each side in priority order)."""

    kind: str
    bucket: int
    price: int | None
    low: int | None
    high: int | None
    traded: int
    fills: tuple[Fill, ...]

    def fills_of(self, side: str) -> tuple[Fill, ...]:
        return tuple(f for f in self.fills if f.side == side)


def bucket_of(start_seconds: int, bucket_seconds: int) -> int:
    """The time bucket a window starting at `start_seconds` belongs to: floor(start / width)."""
    if type(bucket_seconds) is not int or bucket_seconds <= 0:
        raise MarketError(f"the bucket width must be a positive number of seconds, not {bucket_seconds!r}")
    return start_seconds // bucket_seconds


def _bid_key(o: Order) -> tuple:
    return (-o.price, o.digest, o.id)


def _ask_key(o: Order) -> tuple:
    return (o.price, o.digest, o.id)


def _check_side(orders: Sequence[Order], side: str) -> list[Order]:
    out = []
    for o in orders:
        if o.side != side:
            raise MarketError(f"order {o.id!r} is a {o.side}, listed among the {side}s")
        if o.quantity:  # an order of no units takes no place on the curve
            out.append(o)
    return out


def _fills(orders: list[Order], traded: int) -> list[Fill]:
    out = []
    left = traded
    for o in orders:
        if not left:
            break
        take = o.quantity if o.quantity < left else left
        out.append(Fill(o.id, o.owner, o.side, take))
        left -= take
    return out


def clear_auction(bids: Sequence[Order], asks: Sequence[Order], *, kind: str = "", bucket: int = 0) -> Clearing:
    """Clear one call market (see the module docstring).  Deterministic: the result depends on
    the orders, not on the order they are given in."""
    bids = sorted(_check_side(bids, "bid"), key=_bid_key)
    asks = sorted(_check_side(asks, "ask"), key=_ask_key)
    if not bids or not asks:
        return Clearing(kind, bucket, None, None, None, 0, ())
    nb, na = len(bids), len(asks)
    i = j = 0
    rb, ra = bids[0].quantity, asks[0].quantity  # units left in the current order of each side
    traded = 0
    last_bid = last_ask = 0  # B(Q), A(Q)
    while i < nb and j < na:
        bp, ap = bids[i].price, asks[j].price
        if bp < ap:
            break
        t = rb if rb < ra else ra
        traded += t
        last_bid, last_ask = bp, ap
        rb -= t
        ra -= t
        if not rb:
            i += 1
            if i < nb:
                rb = bids[i].quantity
        if not ra:
            j += 1
            if j < na:
                ra = asks[j].quantity
    if not traded:
        return Clearing(kind, bucket, None, None, None, 0, ())
    # The current positions hold unit Q+1 of each side (if any is left).
    low = last_ask if i >= nb else max(last_ask, bids[i].price)
    high = last_bid if j >= na else min(last_bid, asks[j].price)
    price = (low + high) // 2
    return Clearing(kind, bucket, price, low, high, traded, tuple(_fills(bids, traded) + _fills(asks, traded)))


def clear_book(orders: Iterable[Order], me: str | None = None) -> dict[tuple[str, int], Clearing]:
    """One clearing per (kind, bucket) that has at least one order (one-sided ones trade nothing),
    in order of (kind, bucket).  `me`: the node clearing the book; a market it alone trades in is priced at its
    range's low end (`by_itself`)."""
    sides: dict[tuple[str, int], tuple[list[Order], list[Order]]] = {}
    for o in orders:
        key = (o.kind, o.bucket)
        pair = sides.get(key)
        if pair is None:
            pair = sides[key] = ([], [])
        if o.side == "bid":
            pair[0].append(o)
        elif o.side == "ask":
            pair[1].append(o)
        else:
            raise MarketError(f"order {o.id!r} has side {o.side!r}: it must be 'bid' or 'ask'")
    return {key: by_itself(clear_auction(b, a, kind=key[0], bucket=key[1]), me)
            for key, (b, a) in sorted(sides.items())}


def by_itself(c: Clearing, me: str | None) -> Clearing:
    """`c`, priced at the low end of its range when `me` is the only trader on both sides (see the module docstring):
    still at least every filled ask and at most every filled bid, as low is."""
    if me is None or c.price is None or any(f.owner != me for f in c.fills):
        return c
    return replace(c, price=c.low)

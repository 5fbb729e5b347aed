"""Builders shared by the market tests."""

from __future__ import annotations

from decimal import Decimal

from xsc.allocation import CapacitySlot, NeedSlot, SlotFilter
from xsc.market import Ask, Bid
from xsc.market.clearing import clear_orders, taking_part
from xsc.market.core.auction import Order

HOUR = 3600


def order(side: str, price: int, quantity: int = 1, oid: str | None = None, owner: str = "x", kind: str = "storage",
          bucket: int = 0) -> Order:
    oid = oid or f"{side}-{price}-{quantity}"
    return Order(oid, owner, side, kind, bucket, quantity, price, oid.encode())


def ask(owner: str, sid: str, quantity: int, price: int, start: int = 0, end: int = 10 * HOUR, kind: str = "storage",
        location="any", **kw) -> Ask:
    return Ask(slot=CapacitySlot(id=sid, owner=owner, kind=kind, quantity=quantity, start=start, end=end,
                                 location=location, **kw), price=price)


def bid(owner: str, sid: str, quantity: int, price: int, start: int = 0, end: int = 10 * HOUR, kind: str = "storage",
        location="any", deny: tuple[str, ...] = (), group: str | None = None, min_availability: str | None = None,
        prefer: tuple[str, ...] = (), **kw) -> Bid:
    filters = SlotFilter(deny=deny) if deny else SlotFilter()
    return Bid(slot=NeedSlot(id=sid, owner=owner, kind=kind, quantity=quantity, start=start, end=end,
                             location=location, filters=filters, **kw),
               price=price, group=group, prefer=prefer,
               min_availability=None if min_availability is None else Decimal(min_availability))


def fresh_clearing(market) -> tuple[frozenset[str], dict]:
    """Those a MarketService leaves out of its shown clearing, and that clearing, made now from nothing kept: what
    the ones it keeps between rounds must equal."""
    takes_part = taking_part(market)
    left_out = frozenset(c.participant for c in market.book.commitments() if not takes_part(c.participant))
    asks = [a for a in market.book.asks() if takes_part(a.slot.owner)]
    bids = [b for b in market.credible_bids() if takes_part(b.slot.owner)]
    return left_out, clear_orders(asks, bids, market.book.bucket_seconds, market.me)


def covered(bids: list[Bid], takes: list[tuple[str, int]]) -> list[int]:
    """What each (provider, quantity) offers walking the market of `bids` from the cheapest ask, counted plainly
    (every open group looked at for every ask, as xsc.market.core.orders' docstring words it): what `Coverage.take`
    must return."""
    loose = sum(b.slot.quantity for b in bids if b.group is None)
    groups: dict[tuple[str, str], list[int]] = {}
    for b in bids:
        if b.group is not None:
            g = groups.setdefault((b.slot.owner, b.group), [0, 0])
            g[0], g[1] = g[0] + 1, max(g[1], b.slot.quantity)
    potential = loose + sum(g[1] for g in groups.values())
    counted: dict[str, set] = {}
    out = []
    for owner, quantity in takes:
        took = 0
        for key in sorted(groups):
            need = groups[key]
            if need[0] > 0 and key not in counted.setdefault(owner, set()) and need[1] <= quantity - took:
                took += need[1]
                need[0] -= 1
                counted[owner].add(key)
        part = min(quantity - took, loose)
        loose -= part
        took += part
        out.append(min(quantity, potential) if not took and not loose and not any(g[0] for g in groups.values())
                   else took)
    return out

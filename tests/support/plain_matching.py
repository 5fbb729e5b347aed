"""A plain matching, for the tests: `xsc.market.core.matching.match_needs` written with a walk over every ask
compatible with each need (what the product's classes of alike asks must give, need for need, message for message).
The clearing, the allocator's hints and the order needs are served in are the product's (`_cleared`,
`_in_service_order`): only what follows them is written out again here."""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping, Sequence

from xsc.allocation.core.matching import CapacityIndex, need_rows
from xsc.allocation.core.models import SlotFilter
from xsc.market.core.auction import bucket_of
from xsc.market.core.matching import (_TIERS, Assignment, Explanation, MarketResult, _accepts, _cleared,
                                      _in_service_order, excluded_by, none_fits)
from xsc.market.core.models import PRICE_UNITS, Ask, Bid, ask_digest, need_key, units_cost


class _OrderedBook:
    """The book in the fixed order (asks by lowest ask, then digest, then (owner, id): a position is a rank; bids by
    (owner, id)), each market's clearing, and the asks compatible with each need whatever its own filters (those
    are looked at apart, to tell "filtered out" from "no compatible slot")."""

    def __init__(self, asks: Sequence[Ask], bids: Sequence[Bid], clearings: dict, *, availability: Mapping[str, Decimal],
                 bucket_seconds: int, allow_self: bool) -> None:
        self.asks = sorted(asks, key=lambda a: (a.price, ask_digest(a), a.slot.owner, a.slot.id))
        self.bids = sorted(bids, key=lambda b: (b.slot.owner, b.slot.id))
        self.clearings, self.availability = clearings, availability
        self.bucket_seconds, self.allow_self = bucket_seconds, allow_self
        self.slots = [a.slot for a in self.asks]
        self.first_bucket = [bucket_of(s.start, bucket_seconds) for s in self.slots]
        self.last_bucket = [bucket_of(s.end - 1, bucket_seconds) for s in self.slots]
        self.owner_of = [s.owner for s in self.slots]
        open_needs = tuple(b.slot if b.slot.filters.is_empty() else b.slot.model_copy(update={"filters": SlotFilter()})
                           for b in self.bids)
        self.compatible_asks: list[list[int]] = [[] for _ in self.bids]
        for pos, matched in enumerate(CapacityIndex(self.slots).match(need_rows(open_needs))):
            for i in matched:
                self.compatible_asks[i].append(pos)  # positions come in increasing order: the fixed order

    def price_of(self, b: Bid) -> int | None:
        return self.clearings[(b.slot.kind, bucket_of(b.slot.start, self.bucket_seconds))].price

    def priced_bids(self) -> list[Bid]:
        return [b for b in self.bids if (p := self.price_of(b)) is not None and b.price >= p]

    def priced_asks(self) -> list[int]:
        """Positions of the asks at or below the clearing price of a market their window takes part in."""
        return sorted(i for i, a in enumerate(self.asks)
                      if any(c.price is not None and a.price <= c.price
                             for (kind, bucket), c in self.clearings.items()
                             if kind == a.slot.kind and self.first_bucket[i] <= bucket <= self.last_bucket[i]))

    def eligible(self, b: Bid, i: int) -> list[int]:
        """Positions of the slots that may serve bid b (#i): every rule but room and group."""
        n = b.slot
        p = self.price_of(b)
        bucket = bucket_of(n.start, self.bucket_seconds)
        f = None if n.filters.is_empty() else n.filters
        floor = b.min_availability
        out = []
        for pos in self.compatible_asks[i]:
            s = self.slots[pos]
            if (s.quantity < n.quantity or self.asks[pos].price > p
                    or not self.first_bucket[pos] <= bucket <= self.last_bucket[pos]
                    or (f is not None and not _accepts(f, s.owner, s.tags))
                    or (floor is not None and self.availability.get(s.owner, Decimal(0)) < floor)
                    or (not self.allow_self and s.owner == n.owner)):
                continue
            out.append(pos)
        return out


def _assign(book: _OrderedBook, served: list[Bid], hints: dict) -> dict[str, Assignment]:
    """Each need in order of service gets the first eligible slot with room that no need of its group holds."""
    bid_index = {id(b): i for i, b in enumerate(book.bids)}
    room = [s.quantity for s in book.slots]
    owner_of, slots = book.owner_of, book.slots
    group_used: dict[tuple[str, str], set[str]] = {}
    assignments: dict[str, Assignment] = {}
    for b in served:
        n = b.slot
        candidates = book.eligible(b, bid_index[id(b)])
        given = hints.get((n.owner, n.id))
        if given or b.prefer:
            rank = {p: r for r, p in enumerate(b.prefer)}
            far = len(rank)
            candidates.sort(key=lambda pos: (-(given or {}).get(pos, (0, 3))[0], rank.get(owner_of[pos], far), pos))
        used = group_used.get((n.owner, b.group)) if b.group is not None else None
        for pos in candidates:
            if room[pos] < n.quantity or (used is not None and owner_of[pos] in used):
                continue
            room[pos] -= n.quantity
            if b.group is not None:
                group_used.setdefault((n.owner, b.group), set()).add(owner_of[pos])
            units, tier = (given or {}).get(pos, (0, 3))
            p = book.price_of(b)
            assignments[need_key(n.owner, n.id)] = Assignment(
                need_id=n.id, recipient=n.owner, provider=owner_of[pos], capacity_slot=slots[pos].id,
                quantity=n.quantity, price=p, tier=_TIERS[tier if units else 3],
                cost=units_cost(n.kind, n.quantity, n.end - n.start, p), kind=n.kind,
                bucket=bucket_of(n.start, book.bucket_seconds))
            break
    return assignments


def match_needs(asks: Sequence[Ask], bids: Sequence[Bid], *, recognition: Mapping[str, Mapping[str, Decimal]],
                availability: Mapping[str, Decimal], bucket_seconds: int, now_ms: int,
                allow_self: bool = True, first: str | None = None,
                floors: Mapping[tuple[str, int], int] | None = None) -> MarketResult:
    """`xsc.market.core.matching.match_needs` as it was written first: every need walks every compatible ask."""
    clearings = _cleared(asks, bids, availability, bucket_seconds, allow_self, first, floors)
    book = _OrderedBook(asks, bids, clearings, availability=availability, bucket_seconds=bucket_seconds,
                        allow_self=allow_self)
    hints, tier_at, served = _in_service_order(book, recognition, now_ms, first)
    assignments = _assign(book, served, hints)
    explanations = {}
    for i, b in enumerate(book.bids):
        key = need_key(b.slot.owner, b.slot.id)
        explanations[key] = _explain(b, i, assignments.get(key), book.asks, book.slots, book.compatible_asks[i],
                                     book.price_of(b), book.eligible, availability, allow_self, bucket_seconds)
    return MarketResult(clearings=clearings, assignments=dict(sorted(assignments.items())),
                        explanations=explanations, tiers={k: _TIERS[t] for k, t in sorted(tier_at.items())})


def _explain(b: Bid, i: int, a: Assignment | None, asks: list[Ask], slots: list, compatible: list[int],
             price: int | None, eligible, availability: Mapping[str, Decimal], allow_self: bool,
             bucket_seconds: int) -> Explanation:
    n = b.slot
    unit = PRICE_UNITS[n.kind]
    bucket = bucket_of(n.start, bucket_seconds)

    def out(code: str, message: str) -> Explanation:
        return Explanation(need_id=n.id, code=code, message=message, recipient=n.owner, clearing_price=price)

    if a is not None:
        return out("matched", f"matched to {a.provider} (slot {a.capacity_slot}) at {a.price} per {unit}, "
                              f"{a.tier} tier, cost {a.cost}")
    large = [pos for pos in compatible if slots[pos].quantity >= n.quantity]
    if not large:
        if compatible:
            biggest = max(slots[pos].quantity for pos in compatible)
            return out("no_compatible_slot", f"no compatible slot holds all {n.quantity} units (the largest holds "
                                             f"{biggest}); a need is never split over providers")
        return out("no_compatible_slot", none_fits(n))
    f = n.filters
    kept = [pos for pos in large if _accepts(f, slots[pos].owner, slots[pos].tags)
            and (b.min_availability is None or availability.get(slots[pos].owner, Decimal(0)) >= b.min_availability)
            and (allow_self or slots[pos].owner != n.owner)]
    if not kept:
        return out("filtered_out", f"all {len(large)} compatible slots are excluded by " + excluded_by(b, allow_self))
    if price is None:
        return out("no_trade", f"nothing traded in the {n.kind} market of bucket {bucket}: no bid met an ask")
    if b.price < price:
        return out("below_clearing_price", f"the bid {b.price} per {unit} is below the clearing price {price} "
                                           f"of the {n.kind} market of bucket {bucket}")
    if not eligible(b, i):
        return out("no_compatible_slot", f"the {len(kept)} compatible slots ask more than the clearing price {price} "
                                         f"per {unit} (or did not take part in bucket {bucket})")
    group = f" or hold another need of group {b.group!r}" if b.group is not None else ""
    return out("capacity_taken", f"the compatible slots at or below {price} per {unit} were taken by needs served "
                                 f"before this one (higher tier or higher bid){group}")

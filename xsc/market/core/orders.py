"""Asks and bids as auction orders: which call market (kind, bucket) each one takes part in.

- A bid takes part in the market of the bucket its window starts in: one need, bought once.
- An ask takes part in the market of the bucket its window starts in (so the book always shows
  it) and in every other bucket its window overlaps in which there is at least one bid of its
  kind.  A provider's capacity slot spans many buckets (free bytes for the coming weeks), while
  needs start now: counting the slot only where it starts would leave later needs without asks.
  The same capacity may so be offered in several buckets at once; what is actually given is
  bounded by the slot's quantity when needs are matched (xsc.market.core.matching), not here.
- What an ask offers in a market with bids is what it adds to covering that market's needs,
  walking the asks from the lowest (price, digest, owner, id).  Needs are indivisible and one
  provider holds at most one need of a group (the six shares of a put go to six providers), so
  an ask counts, for each group that still needs a provider and that it has not been counted
  for, the group's largest need (if it fits), then as much of the needs outside groups as are
  still uncovered.  Once cheaper asks cover every need, a further ask offers what one provider
  could deliver (each group's largest need plus all needs outside groups): it competes with
  the cheaper ones, so the clearing range stays bounded by the next ask.  Without this, one
  large cheap slot would count as supply for every share of a put, set the price at its own
  ask, price every other provider out, and leave the put with one provider for six shares.
  (Locations and filters are not looked at here; matching checks them.)
  In a market without bids (an ask's start bucket, listed so the book shows it) the ask offers
  its whole quantity.

Order ids are `ask/OWNER/SLOT` and `bid/OWNER/SLOT` (slot ids are unique per owner and side).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Iterable

from .auction import Order, bucket_of
from .models import Ask, Bid, ask_digest, bid_digest


def bid_order(bid: Bid, bucket_seconds: int) -> Order:
    s = bid.slot
    return Order(f"bid/{s.owner}/{s.id}", s.owner, "bid", s.kind, bucket_of(s.start, bucket_seconds), s.quantity,
                 bid.price, bid_digest(bid))


def ask_buckets(ask: Ask, bucket_seconds: int, bid_buckets: dict[str, list[int]]) -> list[int]:
    """The buckets an ask takes part in, given the sorted buckets that hold bids, per kind."""
    s = ask.slot
    first = bucket_of(s.start, bucket_seconds)
    last = bucket_of(s.end - 1, bucket_seconds)
    held = bid_buckets.get(s.kind, ())
    found = held[bisect_left(held, first):bisect_right(held, last)]
    return found if found and found[0] == first else [first, *found]


class GroupTally:
    """A market's groups by how many providers each needs: per count, the sum of their largest needs and those needs
    sorted; so what the groups still open after `t` full takes need is a look at a few counts, not at every group."""

    __slots__ = ("by_needed",)

    def __init__(self) -> None:
        self.by_needed: dict[int, list] = {}  # providers needed -> [sum of largest needs, largest needs sorted]

    def add(self, needed: int, largest: int) -> None:
        entry = self.by_needed.setdefault(needed, [0, []])
        entry[0] += largest
        insort(entry[1], largest)

    def remove(self, needed: int, largest: int) -> None:
        entry = self.by_needed[needed]
        entry[0] -= largest
        del entry[1][bisect_left(entry[1], largest)]
        if not entry[1]:
            del self.by_needed[needed]

    def total(self) -> int:
        return sum(entry[0] for entry in self.by_needed.values())

    def open_after(self, takes: int) -> tuple[int, int, int]:
        """The groups needing more than `takes` providers: how many, the sum and the smallest of their largest
        needs."""
        count = needs = 0
        smallest = None
        for needed, (summed, largest) in self.by_needed.items():
            if needed > takes:
                count += len(largest)
                needs += summed
                smallest = largest[0] if smallest is None else min(smallest, largest[0])
        return count, needs, smallest or 0


class Coverage:
    """What the bids of one market still need from providers not yet counted, walking asks from the
    lowest: the needs outside groups (bytes or fuel, split freely), and per group (recipient, group)
    how many more distinct providers it needs and the size of its largest need.

    While every ask counted covers every open group it has not been counted for (the common case: a provider's free
    bytes hold a put's share of every open put), each group has been counted for by the same asks; the walk then
    keeps only how many such full takes there were, and a take costs a look at the `GroupTally`, not a walk over
    the groups.  The first ask that fits some open groups but not all writes the groups out and walks them."""

    def __init__(self, loose: int = 0, groups: dict | None = None, keys: list | None = None,
                 tally: GroupTally | None = None) -> None:
        self.loose = loose
        # (owner, group) -> [providers needed, largest need]: the walk never writes these (a standing market shares
        # them), it writes its own copy out
        self.groups: dict[tuple[str, str], list[int]] = groups or {}
        self.keys = keys  # the groups' keys sorted, as the walk takes them (None: sorted when needed)
        self.tally = tally
        self.takes = 0  # full takes so far (while no group is written out)
        self.takers: set[str] = set()  # providers counted for every group open at their take
        self.open_groups: list | None = None  # once written out: the open groups' keys, sorted
        self.counted: dict[str, set] = {}  # provider -> the groups written out it is counted for
        self.smallest = 0  # the largest need of the open group whose largest need is smallest
        self.potential = loose + (tally.total() if tally is not None else 0)

    def add(self, b: Bid) -> None:
        if b.group is None:
            self.loose += b.slot.quantity
        else:
            g = self.groups.setdefault((b.slot.owner, b.group), [0, 0])
            g[0] += 1
            g[1] = max(g[1], b.slot.quantity)

    def freeze(self) -> None:
        """Every bid added: what one provider could deliver here (each group's largest need, plus the loose needs),
        summed once, as every ask past those covering the needs offers it."""
        self.tally = GroupTally()
        for needed, largest in self.groups.values():
            self.tally.add(needed, largest)
        self.potential = self.loose + self.tally.total()

    def take(self, owner: str, quantity: int) -> int:
        """Count `quantity` units of `owner` against what is still needed; return how many count."""
        if self.open_groups is None:
            took, groups_open = self._take_all(owner, quantity)
        if self.open_groups is not None:
            took = self._take_some(owner, quantity)
            groups_open = bool(self.open_groups)
        loose = min(quantity - took, self.loose)
        self.loose -= loose
        took += loose
        if took == 0 and not groups_open and not self.loose:
            # Everything is covered by cheaper asks: this one still competes with them (it could
            # replace any of them), so it offers what one provider could deliver.
            return min(quantity, self.potential)
        return took

    def _take_all(self, owner: str, quantity: int) -> tuple[int, bool]:
        """A take while every open group was counted for by the same providers: what it took from the groups and
        whether any is open after it; writes the groups out when this ask fits some open groups but not all."""
        count, needs, smallest = self.tally.open_after(self.takes) if self.tally is not None else (0, 0, 0)
        if not count or owner in self.takers or quantity < smallest:
            # (a provider counted before is counted for every group still open: groups only close)
            return 0, bool(count)
        if quantity >= needs:
            self.takes += 1
            self.takers.add(owner)
            return needs, bool(self.tally.open_after(self.takes)[0])
        self._write_out()
        return 0, True

    def _write_out(self) -> None:
        keys = self.keys if self.keys is not None else sorted(self.groups)
        self.groups = {key: [self.groups[key][0] - self.takes, self.groups[key][1]] for key in keys
                       if self.groups[key][0] > self.takes}
        self.open_groups = [key for key in keys if key in self.groups]
        self.smallest = min((g[1] for g in self.groups.values()), default=0)

    def _take_some(self, owner: str, quantity: int) -> int:
        took = 0
        # An ask smaller than every open group's largest need counts for none: groups that never close (too few
        # providers hold their needs) were walked again for every further ask.
        if self.open_groups and quantity >= self.smallest and owner not in self.takers:
            counted = self.counted.setdefault(owner, set())
            still_open = []
            for key in self.open_groups:
                need = self.groups[key]
                if key not in counted and need[1] <= quantity - took:
                    took += need[1]
                    need[0] -= 1
                    counted.add(key)
                if need[0] > 0:
                    still_open.append(key)
            if len(still_open) < len(self.open_groups):
                self.smallest = min((self.groups[key][1] for key in still_open), default=0)
            self.open_groups = still_open
        return took


def market_orders(asks: Iterable[Ask], bids: Iterable[Bid], bucket_seconds: int) -> list[Order]:
    """Every bid and ask as the Orders of the call markets it takes part in (see the module docstring)."""
    bids = list(bids)
    out = [bid_order(b, bucket_seconds) for b in bids]
    coverage: dict[tuple[str, int], Coverage] = {}
    for b, o in zip(bids, out):
        coverage.setdefault((o.kind, o.bucket), Coverage()).add(b)
    for c in coverage.values():
        c.freeze()
    by_kind: dict[str, set[int]] = {}
    for o in out:
        by_kind.setdefault(o.kind, set()).add(o.bucket)
    bid_buckets = {kind: sorted(b) for kind, b in by_kind.items()}
    for a in sorted(asks, key=lambda a: (a.price, ask_digest(a), a.slot.owner, a.slot.id)):
        s = a.slot
        oid, digest = f"ask/{s.owner}/{s.id}", ask_digest(a)
        for b in ask_buckets(a, bucket_seconds, bid_buckets):
            c = coverage.get((s.kind, b))
            quantity = s.quantity if c is None else c.take(s.owner, s.quantity)
            out.append(Order(oid, s.owner, "ask", s.kind, b, quantity, a.price, digest))
    return out

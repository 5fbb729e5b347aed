"""Which need slots a capacity slot can serve, without comparing every pair.

A capacity slot c and a need slot n are compatible when all of these hold:
  - same kind;
  - their windows overlap: c.start < n.end and n.start < c.end (windows are half-open);
  - their locations meet: either is 'any', or their tag sets intersect
    (a tag is the set of that one tag; a list is the set of its tags);
  - n's filters accept c (c's owner allowed and not denied, c carries n's required tags)
    and c's filters accept n (the same the other way round).

`NeedIndex` buckets need slots by kind, then by fixed-width time buckets, so a capacity slot only
looks at need slots of its kind in the buckets its window touches.
"""

from __future__ import annotations

from statistics import median_low
from typing import Iterable

from .models import ANY, CapacitySlot, NeedSlot, SlotFilter, _Slot


def _accepts(f: SlotFilter, other: _Slot) -> bool:
    if f.allow is None and not f.deny and not f.require_tags:
        return True
    if f.allow is not None and other.owner not in f.allow:
        return False
    if other.owner in f.deny:
        return False
    return all(t in other.tags for t in f.require_tags)


def locations_meet(a: _Slot, b: _Slot) -> bool:
    la, lb = a.locations(), b.locations()
    return la is None or lb is None or not la.isdisjoint(lb)


def compatible(c: CapacitySlot, n: NeedSlot) -> bool:
    """The compatibility rule of the module docstring, for one pair."""
    return (
        c.kind == n.kind
        and c.start < n.end
        and n.start < c.end
        and locations_meet(c, n)
        and _accepts(n.filters, c)
        and _accepts(c.filters, n)
    )


_MAX_SPAN = 64
"""A need slot spanning more buckets than this is kept apart rather than copied into each."""


class NeedIndex:
    """Need slots bucketed by kind and time.

    Per kind the bucket width W is the median window length of that kind's need slots, so a need
    slot sits in about two buckets and a capacity slot visits (its length / W) + 1 buckets.
    Each slot is kept as a tuple (start, end, location set or None, has filters, slot, position),
    position being its place in `slots`, the order the slots were given in."""

    def __init__(self, slots: Iterable[NeedSlot]) -> None:
        by_kind: dict[str, list[tuple]] = {}
        locations: dict = {}
        self.slots: list[NeedSlot] = list(slots)
        for i, s in enumerate(self.slots):
            loc = s.location
            tags = locations.get(loc, locations)
            if tags is locations:
                tags = locations[loc] = (None if loc == ANY else frozenset((loc,) if isinstance(loc, str) else loc))
            f = s.filters
            item = (s.start, s.end, tags, f.allow is not None or bool(f.deny) or bool(f.require_tags), s, i)
            group = by_kind.get(s.kind)
            if group is None:
                by_kind[s.kind] = [item]
            else:
                group.append(item)
        self._kinds: dict[str, tuple[int, dict[int, list[tuple]], list[tuple]]] = {}
        for kind, group in by_kind.items():
            width = max(1, median_low([item[1] - item[0] for item in group]))
            buckets: dict[int, list[tuple]] = {}
            long: list[tuple] = []
            for item in group:
                first = item[0] // width
                last = (item[1] - 1) // width
                if first == last:
                    bucket = buckets.get(first)
                    if bucket is None:
                        buckets[first] = [item]
                    else:
                        bucket.append(item)
                elif last - first >= _MAX_SPAN:
                    # Far longer than the usual slot: checked against every capacity slot instead.
                    long.append(item)
                else:
                    for b in range(first, last + 1):
                        buckets.setdefault(b, []).append(item)
            self._kinds[kind] = (width, buckets, long)

    def candidates(self, c: CapacitySlot) -> list[NeedSlot]:
        """The need slots compatible with c (see `compatible`), each once.

        The order follows the buckets; callers that need an order independent of the input
        sort what they use."""
        return [item[4] for item in self.matches(c)]

    def matches(self, c: CapacitySlot) -> list[tuple]:
        """`candidates` as the index's tuples, whose last field is the slot's position."""
        found = self._kinds.get(c.kind)
        if found is None:
            return []
        width, buckets, long = found
        start, end = c.start, c.end
        cloc = c.locations()
        cfilter = None if c.filters.is_empty() else c.filters
        first, last = start // width, (end - 1) // width
        if last - first < len(buckets):
            visit = [(b, buckets.get(b, ())) for b in range(first, last + 1)]
        else:  # a capacity window wider than the whole index: walk the buckets that exist
            visit = sorted((b, items) for b, items in buckets.items() if first <= b <= last)
        visit.append((None, long))
        out: list[tuple] = []
        for b, items in visit:
            dedupe = b is not None and b != first
            for item in items:
                n_start, n_end, tags, filtered, n, _ = item
                if n_start >= end or start >= n_end:
                    continue
                # A slot spanning several buckets is looked at only in the first one both share.
                if dedupe and n_start // width < b:
                    continue
                if cloc is not None and tags is not None and cloc.isdisjoint(tags):
                    continue
                if filtered and not _accepts(n.filters, c):
                    continue
                if cfilter is not None and not _accepts(cfilter, n):
                    continue
                out.append(item)
        return out

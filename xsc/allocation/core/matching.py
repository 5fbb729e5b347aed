"""Which need slots a capacity slot can serve, without comparing every pair.

A capacity slot c and a need slot n are compatible when all of these hold:
  - same kind;
  - their windows overlap: c.start < n.end and n.start < c.end (windows are half-open);
  - their locations meet: either is 'any', or their tag sets intersect
    (a tag is the set of that one tag; a list is the set of its tags);
  - n's filters accept c (c's owner allowed and not denied, c carries n's required tags)
    and c's filters accept n (the same the other way round).

`NeedIndex` buckets need slots by kind, then by fixed-width time buckets, so a capacity slot only
looks at need slots of its kind in the buckets its window touches.  `CapacityIndex` does the same
the other way round, over one provider's (few) capacity slots, so that the network's (many) need
slots are each read once, as `NeedRow`s: what `compute_allocation` uses.
"""

from __future__ import annotations

from statistics import median_low
from typing import Iterable, Sequence

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


_NO_FILTER = _Slot.model_fields["filters"].default
"""The default (empty) filter: slots built without filters share this very object, so an identity
test settles most slots before the filter's fields are read."""


def _location_tags(loc: str | tuple[str, ...]) -> frozenset[str] | None:
    return None if loc == ANY else frozenset((loc,) if isinstance(loc, str) else loc)


NeedRow = tuple
"""What the allocator reads of a need slot, as a plain tuple (a NamedTuple would be slower to
unpack): (start, end, kind, location tags or None for 'any', filters or None when empty, id,
quantity, (owner, id), the NeedSlot itself).  See `need_rows`.

Reading a field of a pydantic model costs about ten tuple reads (BaseModel defines __getattr__,
which keeps the interpreter from specialising attribute access), and a provider reads every need
slot of the network on every computation."""
ROW_ID, ROW_QUANTITY, ROW_KEY = 5, 6, 7


def need_rows(slots: tuple[NeedSlot, ...]) -> tuple[NeedRow, ...]:
    """The rows of a commitment's `need_slots`, kept while that tuple is in use.

    Commitments are frozen, and a commitment copied with a new damping factor shares its
    `need_slots` tuple, so the rows are made once per set of need slots, not per computation."""
    cached = _ROWS.get(id(slots))
    if cached is not None and cached[0] is slots:
        return cached[1]
    rows = []
    for n in slots:
        loc, f, nid = n.location, n.filters, n.id
        tags = _TAGS.get(loc, _TAGS)
        if tags is _TAGS:
            tags = _location_tags(loc)
            if len(_TAGS) < _ROWS_KEPT:
                _TAGS[loc] = tags
        rows.append((n.start, n.end, n.kind, tags, None if f is _NO_FILTER or f.is_empty() else f,
                     nid, n.quantity, (n.owner, nid), n))
    rows = tuple(rows)
    if len(_ROWS) >= _ROWS_KEPT:
        _ROWS.clear()
    # The entry holds the tuple itself, which keeps its id from being reused for another one.
    _ROWS[id(slots)] = (slots, rows)
    return rows


_ROWS: dict[int, tuple[tuple[NeedSlot, ...], tuple[NeedRow, ...]]] = {}
_ROWS_KEPT = 1 << 14
_TAGS: dict = {}  # location -> its tags (locations repeat a lot)


class CapacityIndex:
    """A provider's capacity slots by kind and time, to stream need slots through.

    A kind with at most 8 capacity slots is just a list in order of start, which a need slot
    scans until the slots start after it ends.  With more, per kind the bucket width W is the
    median window length of that kind's capacity slots; a capacity slot is listed in every bucket
    its window touches (or, spanning more than 64 buckets, in a short list looked at by every need
    slot of its kind).  A need slot [s, e) looks at the buckets s // W .. (e - 1) // W; the
    capacity slots found there are gathered once per bucket range, so need slots with similar
    windows share one lookup.  Capacity slots are known by their position in `slots`."""

    _FEW = 8

    def __init__(self, slots: Sequence[CapacitySlot]) -> None:
        self.slots = list(slots)
        by_kind: dict[str, list[tuple]] = {}
        for pos, c in enumerate(self.slots):
            f = c.filters
            entry = (c.start, c.end, pos, c.locations(), None if f is _NO_FILTER or f.is_empty() else f, c)
            by_kind.setdefault(c.kind, []).append(entry)
        # kind -> (W or 0 for no buckets, (first, last) -> candidates, all its capacity slots by start)
        self._kinds: dict[str, tuple[int, dict, list[tuple]]] = {}
        self._buckets: dict[str, tuple[dict[int, list[tuple]], list[tuple]]] = {}
        for kind, group in by_kind.items():
            group.sort()
            if len(group) <= self._FEW:
                self._kinds[kind] = (0, {}, group)
                continue
            width = max(1, median_low([e[1] - e[0] for e in group]))
            buckets: dict[int, list[tuple]] = {}
            long: list[tuple] = []
            for e in group:
                first, last = e[0] // width, (e[1] - 1) // width
                if last - first >= _MAX_SPAN:
                    long.append(e)
                else:
                    for b in range(first, last + 1):
                        buckets.setdefault(b, []).append(e)
            self._kinds[kind] = (width, {}, group)
            self._buckets[kind] = (buckets, long)

    def _gather(self, kind: str, first: int, last: int) -> list[tuple]:
        """The capacity slots of `kind` listed in buckets first..last, each once, by start."""
        buckets, long = self._buckets[kind]
        if last - first < len(buckets):
            lists = [buckets[b] for b in range(first, last + 1) if b in buckets]
        else:  # a need window wider than all the buckets: walk the buckets that exist
            lists = [items for b, items in buckets.items() if first <= b <= last]
        return sorted({e[2]: e for items in (*lists, long) for e in items}.values())

    def match(self, needs: Sequence[NeedRow]) -> list[list[int]]:
        """For each capacity slot (by position), the positions in `needs` of the need slots it is
        compatible with (see `compatible`), in the order of `needs`."""
        out: list[list[int]] = [[] for _ in self.slots]
        kinds = self._kinds
        for i, (start, end, kind, tags, n_filter, _, _, _, n) in enumerate(needs):
            found = kinds.get(kind)
            if found is None:
                continue
            width, ranges, candidates = found
            if width:
                first, last = start // width, (end - 1) // width
                key = first if first == last else (first, last)
                candidates = ranges.get(key)
                if candidates is None:
                    candidates = ranges[key] = self._gather(kind, first, last)
            for c_start, c_end, pos, c_tags, c_filter, c in candidates:
                if c_start >= end:
                    break  # candidates are in order of start: none further overlaps
                if start >= c_end:
                    continue
                if tags is not None and c_tags is not None and c_tags.isdisjoint(tags):
                    continue
                if n_filter is not None and not _accepts(n_filter, c):
                    continue
                if c_filter is not None and not _accepts(c_filter, n):
                    continue
                out[pos].append(i)
        return out

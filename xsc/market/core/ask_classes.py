"""The asks of a matching in classes of alike slots, so that a need finds the slot it goes to, and counts the slots it
could go to, without a walk over every ask of the book (pure).

Whether a slot is compatible with a need (`xsc.allocation.compatible`, the need's own filters aside) depends on the
slot's kind, window, location and filters alone, never on its owner, quantity or price: the slots alike in those
(and in their tags, which the need's filters read) form a class, and a need is checked once per class.  Within a
class the slots keep the matching's fixed order (lowest ask first), so those at or below a clearing price are a
prefix of it, and the first of them with room for a need is found in a tree of the rooms (`_MaxTree`).  What still
depends on the slot's owner (the need's allow and deny lists, its minimum availability, its owner's own slots, the
providers its group already holds) is checked on the slot found, and the search goes on past it when it fails: a
deny list or a group skips a few slots; a minimum availability has a tree of its own, where the slots of providers
less available than it hold no room; an allow list is walked owner by owner.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from decimal import Decimal
from typing import Callable, Mapping, Sequence

from ...allocation.core.matching import CapacityIndex, need_rows
from ...allocation.core.models import CapacitySlot, NeedSlot, SlotFilter


class _MaxTree:
    """A list of integers with the first index in [lo, hi) whose value is at least x, in O(log n)."""

    def __init__(self, values: Sequence[int]) -> None:
        size = 1
        while size < len(values):
            size *= 2
        self.size = size
        self.tree = tree = [-1] * (2 * size)
        tree[size:size + len(values)] = values
        for i in range(size - 1, 0, -1):
            tree[i] = max(tree[2 * i], tree[2 * i + 1])

    def set(self, i: int, value: int) -> None:
        tree = self.tree
        i += self.size
        tree[i] = value
        i //= 2
        while i:
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
            i //= 2

    def first(self, lo: int, hi: int, x: int) -> int | None:
        tree, size = self.tree, self.size
        left, right = [], []
        lo, hi = lo + size, hi + size
        while lo < hi:  # the nodes that cover [lo, hi), left ones in order, right ones in reverse
            if lo & 1:
                left.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                right.append(hi)
            lo //= 2
            hi //= 2
        for node in left + right[::-1]:
            if tree[node] >= x:
                while node < size:
                    node = 2 * node if tree[2 * node] >= x else 2 * node + 1
                return node - size
        return None


def _class_key(s: CapacitySlot) -> tuple:
    return (s.kind, s.start, s.end, s.location, s.tags, s.filters)


class AskClasses:
    """`slots` (in the matching's fixed order: a position is a rank) in classes, and what `needs` (their own filters
    left out) are compatible with, class by class.  `availability`: provider -> availability (unknown: 0)."""

    def __init__(self, slots: Sequence[CapacitySlot], prices: Sequence[int], open_needs: Sequence[NeedSlot],
                 availability: Mapping[str, Decimal]) -> None:
        self.slots, self.prices, self.availability = slots, prices, availability
        found: dict[tuple, int] = {}
        self.members: list[list[int]] = []  # class -> its positions, in increasing order
        self.class_of: list[int] = []
        self.local: list[int] = []  # position -> its index among its class's members
        self.by_owner: dict[str, list[int]] = {}
        for pos, s in enumerate(slots):
            c = found.setdefault(_class_key(s), len(found))
            if c == len(self.members):
                self.members.append([])
            self.class_of.append(c)
            self.local.append(len(self.members[c]))
            self.members[c].append(pos)
            self.by_owner.setdefault(s.owner, []).append(pos)
        self.first = [slots[m[0]] for m in self.members]  # each class's first slot stands for it
        self.class_prices = [[prices[pos] for pos in m] for m in self.members]
        self.quantities = [sorted(slots[pos].quantity for pos in m) for m in self.members]
        self.compatible: list[list[int]] = [[] for _ in open_needs]  # need -> its compatible classes, in order
        for c, matched in enumerate(CapacityIndex(self.first).match(need_rows(tuple(open_needs)))):
            for i in matched:
                self.compatible[i].append(c)
        self.room = [s.quantity for s in slots]
        self.sizes = list(self.room)
        self._rooms: dict[tuple[int, Decimal | None], _MaxTree] = {}  # (class, minimum availability) -> rooms
        self._sizes: dict[tuple[int, Decimal | None], _MaxTree] = {}  # the same of the slots' whole quantities
        self._counts: dict[tuple[int, Decimal], list[int]] = {}  # sorted quantities of the slots available enough

    def _available(self, owner: str, floor: Decimal | None) -> bool:
        return floor is None or self.availability.get(owner, Decimal(0)) >= floor

    def _tree(self, trees: dict, values: list[int], c: int, floor: Decimal | None) -> _MaxTree:
        tree = trees.get((c, floor))
        if tree is None:
            slots = self.slots
            tree = trees[(c, floor)] = _MaxTree([values[pos] if self._available(slots[pos].owner, floor) else -1
                                                  for pos in self.members[c]])
        return tree

    def take(self, pos: int, quantity: int) -> None:
        """`quantity` of the slot at `pos` is given to a need."""
        self.room[pos] -= quantity
        c, local = self.class_of[pos], self.local[pos]
        for (tc, floor), tree in self._rooms.items():
            if tc == c and self._available(self.slots[pos].owner, floor):
                tree.set(local, self.room[pos])

    def first_fit(self, i: int, need: NeedSlot, classes_ok: Callable[[int], bool], price: int, floor: Decimal | None,
                  owner_ok: Callable[[str], bool], allow: tuple[str, ...] | None, room: bool) -> int | None:
        """The first position among need #i's compatible classes (those `classes_ok` keeps), at an ask of at most
        `price`, of a provider at least `floor` available whose owner `owner_ok` and `allow` (None: any) accept, with
        `need.quantity` of room (`room`) or of quantity (not `room`)."""
        values, trees = (self.room, self._rooms) if room else (self.sizes, self._sizes)
        best: int | None = None
        q = need.quantity
        for c in self.compatible[i]:
            members = self.members[c]
            if (best is not None and members[0] >= best) or not classes_ok(c):
                continue
            end = bisect_right(self.class_prices[c], price)
            if allow is not None:
                for owner in set(allow):
                    for pos in self.by_owner.get(owner, ()):
                        if (self.class_of[pos] == c and self.prices[pos] <= price and values[pos] >= q
                                and self._available(owner, floor) and owner_ok(owner)
                                and (best is None or pos < best)):
                            best = pos
                continue
            tree, start = self._tree(trees, values, c, floor), 0
            while (j := tree.first(start, end, q)) is not None:
                if owner_ok(self.slots[members[j]].owner):
                    if best is None or members[j] < best:
                        best = members[j]
                    break
                start = j + 1
        return best

    def count_fit(self, i: int, need: NeedSlot, classes_ok: Callable[[int], bool], floor: Decimal | None,
                  excluded: set[str], allow: tuple[str, ...] | None) -> int:
        """How many slots of need #i's compatible classes (those `classes_ok` keeps) hold all of it, of providers at
        least `floor` available, `allow` (None: any) accepts and not `excluded`."""
        q, count = need.quantity, 0
        for c in self.compatible[i]:
            if not classes_ok(c):
                continue
            if allow is not None:
                count += sum(1 for owner in set(allow) - excluded for pos in self.by_owner.get(owner, ())
                             if self.class_of[pos] == c and self.slots[pos].quantity >= q
                             and self._available(owner, floor))
                continue
            sizes = self._sized(c, floor)
            count += len(sizes) - bisect_left(sizes, q)
            count -= sum(1 for owner in excluded for pos in self.by_owner.get(owner, ())
                         if self.class_of[pos] == c and self.slots[pos].quantity >= q
                         and self._available(owner, floor))
        return count

    def _sized(self, c: int, floor: Decimal | None) -> list[int]:
        if floor is None:
            return self.quantities[c]
        sizes = self._counts.get((c, floor))
        if sizes is None:
            sizes = self._counts[(c, floor)] = sorted(self.slots[pos].quantity for pos in self.members[c]
                                                      if self._available(self.slots[pos].owner, floor))
        return sizes

    def largest(self, i: int) -> int | None:
        """The largest quantity of a slot compatible with need #i (None: none is)."""
        return max((self.quantities[c][-1] for c in self.compatible[i]), default=None)

    def accepts(self, f: SlotFilter | None, c: int) -> bool:
        """Do the need's filters `f` accept class `c`'s tags (its owners are checked slot by slot)?"""
        return f is None or all(t in self.first[c].tags for t in f.require_tags)

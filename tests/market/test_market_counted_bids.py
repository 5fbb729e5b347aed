"""`clearing.CountedBids`: its version moves exactly when which of the book's bids count changed, and a change of the
book costs it the participants changed, not the book."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.market import HOUR, bid

from xsc.market.clearing import CountedBids
from xsc.market.core.backing import backed

ME = "me"
OWNERS = ("me", "a", "b", "c")


class _Market:
    """A book of participants' bids and trust lines, with what `CountedBids` reads of a MarketService: its version,
    the trust lines' version, the participants each change of the book changed (or None: no longer remembered)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple] = {}
        self.lines: dict[str, int] = {}
        self.version = 0
        self.lines_version = 0
        self.changes: list[tuple[int, str]] = []
        self.forgotten = 0  # changes up to this version are no longer remembered
        self.looked_at: list[str] = []  # the participants whose bids `credible_bids` was asked about
        self.replication = SimpleNamespace(changed_since=self._changed_since)
        self.book = SimpleNamespace(get=lambda p: SimpleNamespace(bids=self.held[p]) if p in self.held else None,
                                    bids=lambda: [b for p in sorted(self.held) for b in self.held[p]])

    def _changed_since(self, version: int) -> set[str] | None:
        if version < self.forgotten:
            return None
        return {p for at, p in self.changes if at > version}

    def backing_version(self) -> int:
        return self.lines_version

    def credible_bids(self, bids=None) -> list:
        bids = self.book.bids() if bids is None else bids
        self.looked_at.extend(b.slot.owner for b in bids)
        return backed(bids, lambda owner: self.lines.get(owner, 0), ME)

    def apply(self, step: tuple) -> None:
        what, owner, n = step
        if what == "sign":  # a commitment taken: `n` bids at their price, one in two asking for an availability
            self.version += 1
            self.held[owner] = tuple(bid(owner, f"n{k}", 2**20, 10 + k, end=HOUR,
                                         min_availability="0.5" if (n + k) % 2 else None) for k in range(n))
            self.changes.append((self.version, owner))
        elif what == "forget":
            self.version += 1
            self.held.pop(owner, None)
            self.changes.append((self.version, owner))
        elif what == "line":
            self.lines_version += 1
            self.lines[owner] = n * 4_000
        else:  # the changes so far no longer remembered
            self.forgotten = self.version


def _counted(market: _Market) -> frozenset:
    return frozenset((b.slot.owner, b.slot.id) for b in backed(market.book.bids(), lambda o: market.lines.get(o, 0),
                                                               ME))


_steps = st.lists(st.tuples(st.sampled_from(("sign", "sign", "forget", "line", "lost")), st.sampled_from(OWNERS),
                            st.integers(0, 4)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(steps=_steps)
def test_the_version_moves_exactly_when_which_bids_count_changed(steps) -> None:
    market = _Market()
    counted = CountedBids(market)
    version, before = counted.version(), _counted(market)
    for step in steps:
        market.apply(step)
        now = _counted(market)
        assert (counted.version() != version) == (now != before), step
        assert counted.floored == any(b.min_availability is not None for b in market.credible_bids())
        version, before = counted.version(), now


def test_a_change_of_the_book_looks_at_the_participants_it_changed() -> None:
    market = _Market()
    for p in OWNERS:
        market.lines[p] = 10**6
        market.apply(("sign", p, 3))
    counted = CountedBids(market)
    first = counted.version()
    market.looked_at.clear()
    market.apply(("sign", "b", 2))
    assert counted.version() == first + 1 and set(market.looked_at) == {"b"}
    market.looked_at.clear()
    market.apply(("sign", "c", 3))  # the same bids again: nothing moved
    assert counted.version() == first + 1 and set(market.looked_at) == {"c"}

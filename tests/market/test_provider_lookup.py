"""Providers the book lacks, found through the hash table (market/lookup.py): looked up only when the book is short
and the known peers could offer more, at most every LOOKUP_EVERY seconds, and asked of known peers only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from xsc.market import lookup


@dataclass
class _Peer:
    id: str


@dataclass
class _Record:
    node: str


@dataclass
class _Slot:
    kind: str
    owner: str


@dataclass
class _Ask:
    slot: _Slot


@dataclass
class _World:
    """The book (its storage providers), the peers known (and up), what the table answers, and who was asked."""
    held: set[str]
    known: list[str]
    table: list[str]
    asked: list[str] = field(default_factory=list)
    lookups: int = 0

    @property
    def book(self) -> _World:
        return self

    def asks(self) -> list[_Ask]:
        return [_Ask(_Slot("storage", p)) for p in self.held]

    def peers(self) -> list[_Peer]:
        return [_Peer(i) for i in self.known]

    def up_peers(self) -> list[_Peer]:
        return self.peers()

    async def pull_own(self, peers: list[_Peer], timeout: float) -> None:
        self.asked += [d.id for d in peers]
        self.held |= {d.id for d in peers}  # each answered with its commitment

    async def find(self, kind: str, wanted: int) -> list[_Record]:
        self.lookups += 1
        return [_Record(i) for i in self.table]


def _lookup(world: _World) -> lookup.ProviderLookup:
    return lookup.ProviderLookup(replication=world, peers=world, active=lambda p: True, find=world.find)


def test_a_short_book_asks_the_providers_the_table_knows_and_only_known_peers() -> None:
    world = _World(held={"me", "a"}, known=["a", "b", "c", "d", "e", "f", "g"], table=["b", "c", "x", "a"])
    found = _lookup(world)
    asyncio.run(found.fill("storage", 6, 1.0))
    assert sorted(world.asked) == ["b", "c"] and found.found == 2  # "x" is no peer: never asked; "a" is held


def test_no_lookup_when_the_book_has_enough_or_holds_every_peer_known() -> None:
    enough = _World(held={"me", "a", "b", "c", "d", "e"}, known=["a", "b", "c", "d", "e", "f"], table=["f"])
    asyncio.run(_lookup(enough).fill("storage", 6, 1.0))
    small = _World(held={"me", "a", "b"}, known=["a", "b"], table=["a", "b"])
    asyncio.run(_lookup(small).fill("storage", 6, 1.0))
    assert enough.lookups == small.lookups == 0


def test_lookups_are_at_most_every_lookup_every_seconds(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(lookup.time, "monotonic", lambda: clock[0])
    world = _World(held={"me"}, known=["a", "b", "c", "d", "e", "f", "g"], table=[])
    found = _lookup(world)
    for step in (0, lookup.CHECK_EVERY, lookup.LOOKUP_EVERY / 2, lookup.LOOKUP_EVERY / 2):
        clock[0] += step
        asyncio.run(found.fill("storage", 6, 1.0))
    assert world.lookups == 2  # the first, and the one a whole LOOKUP_EVERY later


def test_more_providers_than_the_last_lookup_wanted_are_looked_up_at_once(monkeypatch) -> None:
    """An invoke's matching wants one compute provider; when that one fails, the failover wants two: it must not
    wait out the throttles the invoke's own check and lookup set."""
    clock = [1000.0]
    monkeypatch.setattr(lookup.time, "monotonic", lambda: clock[0])
    world = _World(held={"me"}, known=["a", "b", "c", "d"], table=[])
    found = _lookup(world)
    for wanted in (2, 2, 3, 3, 2):
        asyncio.run(found.fill("storage", wanted, 1.0))
    assert world.lookups == 2  # the first for 2, the first for 3; the same or fewer again wait


def test_a_lookup_that_fails_or_takes_too_long_leaves_the_book_as_it_was() -> None:
    """A lookup only adds to the book: the put it runs for goes on with the providers the book holds."""
    class Failing(_World):
        async def find(self, kind: str, wanted: int) -> list[_Record]:
            self.lookups += 1
            raise OSError("the table's socket is gone")

    class Slow(_World):
        async def find(self, kind: str, wanted: int) -> list[_Record]:
            self.lookups += 1
            await asyncio.sleep(60)
            return [_Record("b")]

    for world in (Failing(held={"me"}, known=["a", "b"], table=[]), Slow(held={"me"}, known=["a", "b"], table=[])):
        asyncio.run(_lookup(world).fill("storage", 6, 0.05))
        assert world.lookups == 1 and world.asked == [] and world.held == {"me"}

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

    def get(self, participant: str) -> None:  # (a peer's offer, when the book holds one: none here)
        return None

    def peers(self) -> list[_Peer]:
        return [_Peer(i) for i in self.known]

    def up_peers(self) -> list[_Peer]:
        return self.peers()

    async def pull_own(self, peers: list[_Peer], timeout: float) -> None:
        self.asked += [d.id for d in peers]
        self.held |= {d.id for d in peers}  # each answered with its commitment

    async def find(self, kind: str, wanted: int, found: dict[str, _Record]) -> None:
        self.lookups += 1
        found.update((i, _Record(i)) for i in self.table)


def _lookup(world: _World) -> lookup.ProviderLookup:
    return lookup.ProviderLookup(replication=world, peers=world, active=lambda p, within: True, find=world.find,
                                 freshness=60.0)


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


def test_a_lookup_that_fails_asks_the_up_peers_the_book_lacks_and_does_not_hold_off_the_next(monkeypatch) -> None:
    """A lookup only adds to the book: the caller goes on with the providers the book holds, and those a few of the
    up peers it lacks, asked directly, bring."""
    monkeypatch.setattr(lookup, "CHECK_EVERY", 0.0)  # every fill counts the book again

    class Failing(_World):
        async def find(self, kind: str, wanted: int, found: dict[str, _Record]) -> None:
            self.lookups += 1
            raise OSError("the table's socket is gone")

        async def pull_own(self, peers: list[_Peer], timeout: float) -> None:
            self.asked += [d.id for d in peers]  # none offers storage: the book stays as it was

    world = Failing(held={"me"}, known=["a", "b"], table=[])
    failing = _lookup(world)
    for _ in range(2):
        asyncio.run(failing.fill("storage", 6, 0.05))
    assert world.lookups == 2 and sorted(world.asked) == ["a", "a", "b", "b"] and world.held == {"me"}


def test_a_lookup_cut_short_asks_what_it_found_and_more_of_the_up_peers_the_book_lacks(monkeypatch) -> None:
    """A busy node's lookup may outlast its caller's wait: a put would otherwise deal its shares round the few
    providers its book holds."""
    monkeypatch.setattr(lookup, "CHECK_EVERY", 0.0)

    class Slow(_World):
        async def find(self, kind: str, wanted: int, found: dict[str, _Record]) -> None:
            self.lookups += 1
            found["b"] = _Record("b")  # the first answers came in time ...
            await asyncio.sleep(60)  # ... the rest do not

    world = Slow(held={"me", "a"}, known=[*"abcdefghijklmnop"], table=[])
    slow = _lookup(world)
    asyncio.run(slow.fill("storage", 6, 0.05))
    assert world.asked[0] == "b" and len(world.asked) == 2 * (6 - 2) and "a" not in world.asked
    assert len(world.held) >= 6 and slow.found == len(world.asked)


def test_offers_that_lapse_while_the_table_answers_are_asked_again_with_those_the_book_lacks(monkeypatch) -> None:
    """The offers a node announced at start reach every peer once and then only its neighbourhood: a book may hold
    some that lapse while a busy node's lookup runs, or before its caller matches.  Counted as held, they are not asked
    again, and a spread put deals its six shares round the four providers left (six needs on four nodes)."""
    monkeypatch.setattr(lookup, "CHECK_EVERY", 0.0)
    announced, lasting = {"a", "f", "j"}, {"me", "t"}  # a, f and j announced at start: their offers are lapsing

    class Lapsing(_World):
        lapsed: set[str] = set()

        def active(self, participant: str, within: float = 0.0) -> bool:
            if participant in self.lapsed:
                return False
            return participant in lasting or participant in self.asked or not within

        async def find(self, kind: str, wanted: int, found: dict[str, _Record]) -> None:
            self.lookups += 1
            found.update((i, _Record(i)) for i in "knt")  # the first answers came in time ...
            self.lapsed = {"f", "j"}  # ... and two of the offers held as it began lapsed meanwhile
            await asyncio.sleep(60)  # ... the rest of the answers do not

        async def pull_own(self, peers: list[_Peer], timeout: float) -> None:
            await super().pull_own(peers, timeout)
            self.lapsed -= {d.id for d in peers}  # each answered with its commitment as signed now

    world = Lapsing(held={"me", "t", *announced}, known=[*"tafjknd"], table=[])
    slow = lookup.ProviderLookup(replication=world, peers=world, active=world.active, find=world.find,
                                  freshness=60.0)
    asyncio.run(slow.fill("storage", 6, 0.05))
    assert announced <= set(world.asked) and {"k", "n"} <= set(world.asked) and "t" not in world.asked
    assert len(slow.providers("storage")) >= 6 and all(world.active(p, 0.05) for p in slow.providers("storage"))


@dataclass
class _Offer:
    timestamp: int  # ms when its provider signed it
    asks: tuple = ("storage",)


@dataclass
class _Pulled(_World):
    """A book whose providers' offers were signed when the table brought them (`signed`, ms) and are pushed no newer
    (outside this node's neighbourhood), on a clock of `clock` seconds."""
    freshness: float = 60.0
    clock: list[float] = field(default_factory=lambda: [1000.0])
    signed: dict[str, int] = field(default_factory=dict)

    def get(self, participant: str) -> _Offer | None:
        return _Offer(self.signed[participant]) if participant in self.signed else None

    def active(self, participant: str, within: float = 0.0) -> bool:
        return participant == "me" or self.clock[0] * 1000 - self.signed.get(participant, -10**12) < \
            (self.freshness - within) * 1000

    def asks(self) -> list[_Ask]:
        return [_Ask(_Slot("storage", p)) for p in self.held if self.active(p)]

    async def pull_own(self, peers: list[_Peer], timeout: float) -> None:
        await super().pull_own(peers, timeout)
        self.signed.update((d.id, int(self.clock[0] * 1000)) for d in peers)

    def lookup(self, monkeypatch) -> lookup.ProviderLookup:
        monkeypatch.setattr(lookup.time, "monotonic", lambda: self.clock[0])
        monkeypatch.setattr(lookup, "now_ms", lambda: int(self.clock[0] * 1000))
        return lookup.ProviderLookup(replication=self, peers=self, active=self.active, find=self.find,
                                     freshness=self.freshness)


def _lookups_after(freshness: float, seconds: list[float], monkeypatch) -> int:
    """Lookups of puts at `seconds` (after the first) in a book whose providers the table brought: three of the five
    up peers, the book short of six all along."""
    world = _Pulled(held={"me"}, known=[*"bcdef"], table=[*"bcd"], freshness=freshness)
    found = world.lookup(monkeypatch)
    asyncio.run(found.fill("storage", 6, 1.0))
    for at in seconds:
        world.clock[0] = 1000.0 + at
        asyncio.run(found.fill("storage", 6, 1.0))
    return world.lookups


def test_a_lookup_holds_off_the_next_no_longer_than_the_offers_it_pulled_last(monkeypatch) -> None:
    """With `market.freshness` under LOOKUP_EVERY, the offers a lookup pulled lapse before the next may run: a put
    then would deal its shares round the neighbourhood only.  At the default freshness nothing looks up sooner."""
    assert _lookups_after(12.0, [5.0, 15.0], monkeypatch) == 2  # held off while they last, not after
    assert _lookups_after(60.0, [5.0, 15.0, lookup.LOOKUP_EVERY - 1], monkeypatch) == 1


def test_offers_that_lapse_before_the_deal_matches_again_are_pulled_again(monkeypatch) -> None:
    """A put matches again after each round of asking strangers their terms, up to TERMS_SECONDS later: a provider
    whose offer lapses by then is lost to that matching, and its shares doubled up on the others."""
    world = _Pulled(held={"me", *"bcdef"}, known=[*"bcdef"], table=[*"bcdef"], freshness=6.0)
    world.signed = {p: int((world.clock[0] - 5.5) * 1000) for p in "bcdef"}  # current for half a second more
    found = world.lookup(monkeypatch)
    asyncio.run(found.fill("storage", 6, 1.0, needed=3.0))
    assert sorted(world.asked) == [*"bcdef"] and all(world.active(p, 3.0) for p in "bcdef")

"""Who takes part in the clearing `market book` shows, kept between market rounds over the real peer directory and
probes (xsc.peers): a probe round, which moves every peer's history, looks again only at the peers that came up or
went down, and the directory's changes only at the peers they were of."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.support.calls import python_lines
from tests.support.market import ask, fresh_clearing
from tests.support.nodes import node_config

from xsc.allocation import Stamp
from xsc.config import MarketSection
from xsc.db import open_database
from xsc.errors import PeerUnreachable
from xsc.identity import Identity
from xsc.market import availability, clearing, sign_commitment
from xsc.market import service as market_service
from xsc.market.core.availability import weighed
from xsc.market.needs import NeedRegistry
from xsc.market.recognition import Recognition
from xsc.peers import PeerDirectory, make_descriptor
from xsc.peers import probes
from xsc.peers import service as peers_service
from xsc.peers.probes import HealthService
from xsc.peers.service import MAX_NEW_PER_MESSAGE, PeerService

HOUR = 3600
START = 10**12  # ms: the clock the market and the probes read
PEERS = [Identity.generate() for _ in range(5)]
# The modules whose `now_ms` the test's clock replaces.
CLOCKS = (clearing, market_service, availability, probes, peers_service)


class _Network:
    """A node's market over its real peer directory and probes, the peers answering probes as the test says."""

    def __init__(self, root: Path, clock: list[int], identities: list[Identity]) -> None:
        self.clock, self.identities = clock, identities
        self.answering: set[str] = set()
        self.signed = 0  # descriptors signed so far: each newer than the last
        self.stamps: dict[str, Stamp] = {}
        root.mkdir(parents=True, exist_ok=True)
        self.db = open_database(root / "db")
        config = node_config(root)
        self.directory = PeerDirectory(self.db)
        self.health = HealthService(db=self.db, directory=self.directory, config=config.health,
                                    challenge=self._challenge)
        self.peers = PeerService(identity=Identity.generate(), db=self.db, config=config, client=None,
                                 storage=lambda: None, url="http://10.9.9.9:7070", directory=self.directory,
                                 health=self.health)
        me = Identity.generate()
        market_config = MarketSection(freshness=60.0, offer_storage=False, offer_compute=False)
        self.market = market_service.MarketService(
            config=market_config, identity=me, db=self.db, peers=self.peers,
            needs=NeedRegistry(db=self.db, me=me.id, config=market_config),
            weights=Recognition(db=self.db, me=me.id, peers=self.peers), subscribers=None, compute_threads=1,
            storage_usage=lambda: (0, 0), gossip_interval=1.0)
        self.peers.on_removed.append(self.market.forget)
        self.loop = asyncio.new_event_loop()  # every probe round on one loop: the probes' locks live on it

    async def _challenge(self, url: str, node_id: str, timeout: float | None) -> dict:
        if node_id not in self.answering:
            raise PeerUnreachable(f"{node_id} did not answer")
        return {}

    def descriptor(self, identity: Identity):
        self.signed += 1
        n = self.identities.index(identity)
        return make_descriptor(identity, url=f"http://10.1.{n >> 8}.{n & 255}:7070", capacity=1, free=1,
                               version="0", timestamp=START + self.signed)

    def add(self, identities: list[Identity]) -> None:
        for at in range(0, len(identities), MAX_NEW_PER_MESSAGE):
            self.directory.merge([self.descriptor(i) for i in identities[at:at + MAX_NEW_PER_MESSAGE]],
                                 me=self.peers.identity.id, my_url=self.peers.url)

    def probe_round(self) -> None:
        self.loop.run_until_complete(self.health.probe_round())

    def sign(self, identities: list[Identity], ms: int = 0, price: int = 2_000) -> None:
        commitments = []
        for identity in identities:
            p = identity.id
            self.stamps[p] = self.stamps.get(p, Stamp.seed()).event()
            commitments.append(sign_commitment(identity, asks=(ask(p, f"s-{p[:8]}", 10**7, price, end=HOUR),),
                                               bids=(), recognition={}, stamp=self.stamps[p],
                                               timestamp=self.clock[0] + ms).to_json())
        for at in range(0, len(commitments), 100):
            self.market.receive(commitments[at:at + 100])

    def close(self) -> None:
        self.loop.close()
        self.db.close()




def _apply(net: _Network, event: tuple) -> None:
    what, *args = event
    if what in ("tick", "set-back"):
        net.clock[0] += args[0] if what == "tick" else -args[0]
        return
    if what == "round":
        net.probe_round()
        return
    identity = PEERS[args[0]]
    p = identity.id
    if what == "answers":
        (net.answering.add if args[1] else net.answering.discard)(p)
    elif what == "heard":  # a challenge answered outside the probes (the user added it)
        if net.directory.get(p) is not None:
            net.health.answered(net.directory.get(p), 1.0)
    elif what == "sign":
        net.sign([identity], args[1], args[2])
    elif what == "remove":
        if net.directory.get(p) is not None:
            net.peers.remove(p)
    elif what == "add":  # back after a removal, or its descriptor re-signed
        net.directory.unblock(p)
        net.add([identity])


MS = st.one_of(st.integers(0, 70).map(lambda s: s * 1000), st.integers(1, 3),
               st.integers(1, 4).map(lambda k: k * 300_000 - 1))  # seconds, a step over an edge, over a bucket
EVENTS = st.one_of(
    st.tuples(st.just("answers"), st.integers(0, len(PEERS) - 1), st.booleans()),
    st.just(("round",)),
    st.tuples(st.sampled_from(["heard", "remove", "add"]), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("sign"), st.integers(0, len(PEERS) - 1), MS.map(lambda ms: -ms), st.integers(1_000, 4_000)),
    st.tuples(st.just("tick"), MS),
    st.tuples(st.just("set-back"), MS),
)


@contextlib.contextmanager
def _probed_network() -> Iterator[_Network]:
    """A market over PEERS on a clock of the test's (hypothesis runs many examples per fixture), every peer answering
    and probed once."""
    clock = [START]
    real = [m.now_ms for m in CLOCKS]
    for m in CLOCKS:
        m.now_ms = lambda: clock[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            net = _Network(Path(tmp), clock, PEERS)
            try:
                net.add(PEERS)
                net.answering = {i.id for i in PEERS}
                net.probe_round()
                yield net
            finally:
                net.close()
    finally:
        for m, now_ms in zip(CLOCKS, real):
            m.now_ms = now_ms


@settings(max_examples=40, deadline=None)
@given(events=st.lists(EVENTS, max_size=30))
# A peer that failed its probes answers one in a later 5-minute bucket, over an hour after it last answered, and the
# clock is set back before that answer: up, yet down by the hour's ratio, until the clock passes it again.
@example(events=[("answers", 0, False), *[("tick", 1_199_999)] * 4, ("round",), *[("tick", 70_000)] * 3,
                 ("answers", 0, True), ("round",), ("set-back", 10_000), ("sign", 0, 0, 2_000), ("tick", 1_000)])
def test_those_kept_as_taking_part_over_probe_rounds_are_those_the_rule_says_take_part_now(events) -> None:
    """After every probe round, directory change, offer and step of the clock, those left out of the clearing shown,
    kept up with what changed, and the clearing, are those made from scratch now."""
    with _probed_network() as net:
        net.sign(PEERS)
        for event in events:
            _apply(net, event)
            left_out, clearings = fresh_clearing(net.market)
            assert net.market.shown.taking_part.left_out() == left_out, event
            assert net.market.clearings() == clearings, event


def _round_lines(root: Path, n: int, clock: list[int]) -> tuple[int, int]:
    """The Python lines of the market round after a probe round of `n` peers that flipped none, and after one that
    flipped one peer down."""
    identities = [Identity.generate() for _ in range(n)]
    net = _Network(root, clock, identities)
    try:
        net.add(identities)
        net.answering = {i.id for i in identities}
        net.probe_round()
        net.sign(identities)
        net.market.clearings()
        net.probe_round()
        none = python_lines(net.market.clearings)
        net.answering.discard(identities[n // 2].id)
        net.probe_round()
        one = python_lines(net.market.clearings)
        assert identities[n // 2].id in net.market.shown.taking_part.left_out()
        return none, one
    finally:
        net.close()


def test_a_probe_round_costs_the_next_market_round_what_it_flipped_not_the_book(tmp_path, monkeypatch) -> None:
    """Every probe round moves every peer's history: the market round after it looks at the peers that came up or went
    down, the same work with 200 peers as with 2,000, whether it flipped one or none."""
    clock = [START]
    for m in CLOCKS:
        monkeypatch.setattr(m, "now_ms", lambda: clock[0])
    monkeypatch.setattr(peers_service, "MAX_PEERS", 2_000)  # the directory's bound, lifted to see the cost's growth
    monkeypatch.setattr(probes, "PROBE_STARTS", 10**6)  # probes not paced: nothing answers over a network here
    small = _round_lines(tmp_path / "small", 200, clock)
    large = _round_lines(tmp_path / "large", 2_000, clock)
    for before, after in zip(small, large):
        assert after <= before + before // 4, (small, large)



def _weighed_now(net: _Network) -> dict:
    """Every participant's availability as matching weighs it, made now from nothing kept."""
    return {net.market.me: Decimal(1), **{d.id: weighed(net.peers.availability(d.id)) for d in net.peers.peers()}}


LOOKED_AT = st.one_of(EVENTS, st.just(("due-round",)), st.just(("look",)))


@settings(max_examples=60, deadline=None)
@given(events=st.lists(LOOKED_AT, max_size=40))
# A peer fails a probe, answers the next, and the hour that counted the failure passes with no probe of it.
@example(events=[("answers", 0, False), ("round",), ("look",), ("answers", 0, True), ("round",), ("look",),
                 *[("tick", 1_199_999)] * 3, ("look",), ("tick", 1_199_999), ("look",)])
# The clock is set back behind a bucket that counted a failed probe of a peer up now, then catches up with it.
@example(events=[("answers", 0, False), ("round",), ("answers", 0, True), ("round",), ("set-back", 299_999),
                 ("look",), ("tick", 299_999), ("look",)])
def test_the_availability_kept_from_the_peers_changes_is_the_one_made_from_scratch(events) -> None:
    """After any probes (rounds of every peer, scheduled rounds of a sample, a challenge answered), directory changes
    and steps of the clock, the availability the market keeps up with the peers whose probe history or descriptor
    changed (and, as the 5-minute bucket moves, with those whose last hour held a failed probe) is the one made from
    every peer now, and its versions moved whenever an entry or who is at 0 did."""
    with _probed_network() as net:
        seen = (_weighed_now(net), net.market.availability.versions())
        for event in [*events, ("look",)]:
            if event == ("due-round",):
                net.loop.run_until_complete(net.health.probe_round(due_only=True))
            elif event != ("look",):
                _apply(net, event)
                continue
            now = _weighed_now(net)
            assert net.market.availability_map() == now, events
            assert net.market.down() == {p for p, a in now.items() if a == 0}
            versions = net.market.availability.versions()
            down_before = {p for p, a in seen[0].items() if a == 0}
            assert (versions[0] != seen[1][0]) >= (down_before != net.market.down())
            assert (versions[1] != seen[1][1]) >= (seen[0] != now)
            seen = (now, versions)

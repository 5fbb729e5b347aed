"""Who takes part in the clearing `market book` shows (market/clearing.py: `TakingPart`), kept between market rounds:
always what `taking_part` says of the book now, whatever the book, the probes, the quarantines and the clock did."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.support.market import ask, bid, fresh_clearing

from xsc.allocation import Stamp
from xsc.config import MarketSection
from xsc.db import open_database
from xsc.identity import Identity
from xsc.ledger.trust import TrustLines
from xsc.market import clearing, sign_commitment
from xsc.market import service as market_service
from xsc.market.clearing import clear_orders
from xsc.market.needs import NeedRegistry
from xsc.market.recognition import Recognition

HOUR = 3600
PEERS = [Identity.generate() for _ in range(5)]
START = 10**12  # ms: the clock the market reads (offers are dated by it, never ahead of the real one)


@dataclass
class _Peers:
    """The peers as the market sees them: the directory, quarantines, probes, and a version of what they say."""
    directory: set[str]
    quarantined: set[str] = field(default_factory=set)
    probed: dict[str, tuple[bool | None, float | None]] = field(default_factory=dict)  # id -> (up, ratio_1h)
    version: int = 0

    def peers(self) -> list:
        return [SimpleNamespace(id=p) for p in sorted(self.directory)]

    def state_version(self) -> tuple:
        return (self.version,)

    def known(self, node_id: str) -> bool:
        return node_id in self.directory and node_id not in self.quarantined

    def availability(self, node_id: str) -> SimpleNamespace:
        up, ratio = self.probed.get(node_id, (None, None))
        return SimpleNamespace(up=up, ratio_1h=ratio, ratio_24h=None)  # (none for a day: a weight derived from money)

    def up(self, node_id: str) -> bool:
        return self.availability(node_id).up is True

    def up_peers(self) -> list:
        return [d for d in self.peers() if self.up(d.id)]


def _market(path: Path, peers: _Peers, clock: list[int]) -> market_service.MarketService:
    db = open_database(path)
    me = Identity.generate()
    config = MarketSection(freshness=60.0, offer_storage=False, offer_compute=False)
    market = market_service.MarketService(
        config=config, identity=me, db=db, peers=peers, needs=NeedRegistry(db=db, me=me.id, config=config),
        weights=Recognition(db=db, me=me.id, peers=peers), subscribers=None, compute_threads=1,
        storage_usage=lambda: (0, 0), gossip_interval=1.0)
    market.replication.show(sign_commitment(me, asks=(), bids=(bid(me.id, "need", 10**6, 3_000, end=HOUR),),
                                            recognition={}, stamp=Stamp.seed().event(), timestamp=clock[0]))
    return market




MS = st.one_of(st.integers(0, 70).map(lambda s: s * 1000), st.integers(1, 3))  # seconds, or a step over an edge
EVENTS = st.one_of(
    st.tuples(st.just("sign"), st.integers(0, len(PEERS) - 1), MS.map(lambda ms: -ms), st.integers(1_000, 4_000)),
    st.tuples(st.sampled_from(["down", "up", "unprobed", "never-up", "remove", "add", "quarantine", "lift"]),
              st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("tick"), MS),
    st.tuples(st.just("set-back"), MS),
    st.tuples(st.just("freshness"), st.sampled_from([10.0, 60.0, 120.0])),
    # The orders kept, re-signed (as every offer is, to stay current); a bid added or changed; every order withdrawn.
    st.tuples(st.just("resign"), st.integers(0, len(PEERS) - 1), MS.map(lambda ms: -ms)),
    st.tuples(st.just("bid"), st.integers(0, len(PEERS) - 1), st.integers(500, 5_000), st.booleans()),
    st.tuples(st.just("withdraw"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("credit"), st.integers(0, len(PEERS) - 1), st.sampled_from([0, 10**3, 10**15])),
)


def _resign(market, clock: list[int], stamps: dict, identity: Identity, asks: tuple, bids: tuple, ms: int) -> None:
    p = identity.id
    stamps[p] = stamps.get(p, Stamp.seed()).event()
    market.receive([sign_commitment(identity, asks=asks, bids=bids, recognition={}, stamp=stamps[p],
                                    timestamp=clock[0] + ms).to_json()])


def _apply(market: market_service.MarketService, peers: _Peers, clock: list[int], stamps: dict, event: tuple) -> None:
    what, *args = event
    if what in ("tick", "set-back"):
        clock[0] += args[0] if what == "tick" else -args[0]
        return
    if what == "freshness":
        market.config.freshness = args[0]
        return
    identity = PEERS[args[0]]
    p = identity.id
    held = market.book.get(p)
    asks, bids = (held.asks, held.bids) if held is not None else ((), ())
    if what == "resign":
        _resign(market, clock, stamps, identity, asks, bids, args[1])
    elif what == "bid":
        _resign(market, clock, stamps, identity, asks, (bid(p, f"b-{p[:8]}", 10**6, args[1], end=HOUR,
                                                             group="put" if args[2] else None),), 0)
    elif what == "withdraw":
        _resign(market, clock, stamps, identity, (), (), 0)
    elif what == "credit":
        market.credit_lines.set_credit(p, args[1])
    elif what == "sign":
        stamps[p] = stamps.get(p, Stamp.seed()).event()
        market.receive([sign_commitment(identity, asks=(ask(p, f"s-{p[:8]}", 10**7, args[2], end=HOUR),), bids=(),
                                        recognition={}, stamp=stamps[p], timestamp=clock[0] + args[1]).to_json()])
    elif what in ("quarantine", "lift"):  # no new state version: a quarantine's start forgets the peer's offer
        if what == "quarantine":
            peers.quarantined.add(p)
            market.forget(p)
        else:  # ended, by the clock or the operator
            peers.quarantined.discard(p)
    else:
        if what == "remove":
            peers.directory.discard(p)
            market.forget(p)
        elif what == "add":
            peers.directory.add(p)
        else:
            peers.probed[p] = {"down": (False, 0.5), "up": (True, 1.0), "unprobed": (None, None),
                               "never-up": (True, 0.0)}[what]
        peers.version += 1


@settings(max_examples=40, deadline=None)
@given(events=st.lists(EVENTS, max_size=30))
# The one peer taking part re-signs its offer: the clock ends its part when its new offer goes stale.
@example(events=[("down", 1), ("down", 2), ("down", 3), ("down", 4), ("tick", 1_000), ("resign", 0, 0),
                 ("tick", 60_500)])
def test_those_kept_as_taking_part_are_those_the_rule_says_take_part_now(events) -> None:
    """After every event, the clearing shown (and those it leaves out), kept up with the commitments that changed, is
    the one made from scratch now."""
    clock = [START]
    peers = _Peers(directory={i.id for i in PEERS})
    real_now = clearing.now_ms, market_service.now_ms
    clearing.now_ms = market_service.now_ms = lambda: clock[0]  # (hypothesis runs many examples per fixture)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            market = _market(Path(tmp) / "db", peers, clock)
            market.credit_lines = TrustLines(market.db, stranger_credit=0, peer_credit=0, recognised=lambda peer: True)
            try:
                stamps: dict = {}
                start = [(what, i, 0, 1_000 + 500 * i)[:4 if what == "sign" else 2] for i in range(len(PEERS))
                         for what in ("up", "sign")]
                for event in start + events:
                    _apply(market, peers, clock, stamps, event)
                    left_out, clearings = fresh_clearing(market)
                    assert market.shown.taking_part.left_out() == left_out, event
                    assert market.clearings() == clearings, event
            finally:
                market.db.close()
    finally:
        clearing.now_ms, market_service.now_ms = real_now


def test_a_round_in_which_nothing_changed_looks_at_no_participant(tmp_path, monkeypatch) -> None:
    """The market round asks who takes part every second: with nothing changed it looks at the one offer that goes
    stale first, not at every participant's (10,000 a second in a book of 10,000)."""
    clock = [START]
    peers = _Peers(directory={i.id for i in PEERS})
    monkeypatch.setattr(clearing, "now_ms", lambda: clock[0])
    monkeypatch.setattr(market_service, "now_ms", lambda: clock[0])
    market = _market(tmp_path / "db", peers, clock)
    for n in range(len(PEERS)):
        _apply(market, peers, clock, {}, ("up", n))
        _apply(market, peers, clock, {}, ("sign", n, -1_000 * n, 2_000))
    shown = market.clearings()
    looked_at: list[str] = []
    active = market.active

    def counted(participant: str, within: float = 0.0) -> bool:
        looked_at.append(participant)
        return active(participant, within)

    monkeypatch.setattr(market, "active", counted)
    clock[0] += 1_000
    assert market.clearings() == shown
    assert len(looked_at) <= 1, looked_at  # the offer that goes stale first, still current
    clock[0] += 60_000 - 3_000  # the two oldest offers lapse
    assert market.shown.taking_part.left_out() == {PEERS[-1].id, PEERS[-2].id}
    market.db.close()


def test_a_changed_credit_line_shows_in_the_clearing_with_no_change_of_the_book(tmp_path, monkeypatch) -> None:
    """A peer's bids count as far as its trust line here backs them: the user giving it a credit line (no order of
    the book changed) moves the clearing `market book` and `market prices` show at once."""
    clock = [START]
    peers = _Peers(directory={i.id for i in PEERS})
    monkeypatch.setattr(clearing, "now_ms", lambda: clock[0])
    monkeypatch.setattr(market_service, "now_ms", lambda: clock[0])
    market = _market(tmp_path / "db", peers, clock)
    market.credit_lines = TrustLines(market.db, stranger_credit=0, peer_credit=0, recognised=lambda peer: True)
    seller, buyer = PEERS[0], PEERS[1]
    for n in (0, 1):
        _apply(market, peers, clock, {}, ("up", n))
    _apply(market, peers, clock, {}, ("sign", 0, 0, 2_000))  # 10**7 units at 2,000
    market.receive([sign_commitment(buyer, asks=(), bids=(bid(buyer.id, "b-buyer", 10**7, 4_000, end=HOUR),),
                                    recognition={}, stamp=Stamp.seed().event(), timestamp=clock[0]).to_json()])
    before = market.clearings()
    assert before == fresh_clearing(market)[1]  # the buyer's bid, backed by nothing, left out
    version = market.version
    market.credit_lines.set_credit(buyer.id, 10**15)
    assert market.version == version and fresh_clearing(market)[1] != before  # its bid counts now
    assert market.clearings() == fresh_clearing(market)[1]
    market.db.close()


def test_recognising_a_peer_shows_in_the_clearing_and_the_counted_bids_with_no_change_of_the_book(
        tmp_path, monkeypatch) -> None:
    """`xsc market recognize PEER W` with no --credit gives PEER the line of a recognised peer, and so backs its bids:
    the clearing shown and the bids that count move at once, as for a credit line set."""
    from xsc.ledger.trust import TrustLines

    clock = [START]
    peers = _Peers(directory={i.id for i in PEERS})
    monkeypatch.setattr(clearing, "now_ms", lambda: clock[0])
    monkeypatch.setattr(market_service, "now_ms", lambda: clock[0])
    market = _market(tmp_path / "db", peers, clock)
    market.credit_lines = TrustLines(market.db, stranger_credit=0, peer_credit=10**15,
                                     recognised=market.weights.recognised)
    counted = clearing.CountedBids(market)
    buyer = PEERS[1]
    for n in (0, 1):
        _apply(market, peers, clock, {}, ("up", n))
    _apply(market, peers, clock, {}, ("sign", 0, 0, 2_000))
    market.receive([sign_commitment(buyer, asks=(), bids=(bid(buyer.id, "b-buyer", 10**7, 4_000, end=HOUR),),
                                    recognition={}, stamp=Stamp.seed().event(), timestamp=clock[0]).to_json()])
    before, counted_before = market.clearings(), counted.version()
    assert before == fresh_clearing(market)[1]  # the stranger's bid, backed by nothing, left out
    for weight, backed in (("1", True), (None, False)):  # recognised, then back to the derived weight
        version = market.version
        market.recognize(buyer.id, weight)
        assert market.version == version and (fresh_clearing(market)[1] != before) == backed
        assert market.clearings() == fresh_clearing(market)[1]
        assert counted.version() != counted_before
        counted_before = counted.version()
    market.db.close()


def test_an_offer_re_signed_with_the_same_orders_keeps_the_clearing_and_looks_at_that_offer_alone(tmp_path,
                                                                                                   monkeypatch) -> None:
    """Every node re-signs its offer every third of `market.freshness`: in a book of N participants nearly every
    round follows such a change.  The round looks at the commitments that changed, not at the book, and clears
    nothing again while every order is as it was; a changed order clears it again."""
    clock = [START]
    peers = _Peers(directory={i.id for i in PEERS})
    monkeypatch.setattr(clearing, "now_ms", lambda: clock[0])
    monkeypatch.setattr(market_service, "now_ms", lambda: clock[0])
    market = _market(tmp_path / "db", peers, clock)
    stamps: dict = {}
    for n in range(len(PEERS)):
        _apply(market, peers, clock, stamps, ("up", n))
        _apply(market, peers, clock, stamps, ("sign", n, -1_000 * n, 2_000))
    shown = market.clearings()
    cleared, looked_at = [], []
    monkeypatch.setattr(clearing, "clear_orders", lambda *orders: cleared.append(orders) or clear_orders(*orders))
    active = market.active
    monkeypatch.setattr(market, "active", lambda p, within=0.0: looked_at.append(p) or active(p, within))
    clock[0] += 1_000
    _apply(market, peers, clock, stamps, ("resign", 1, 0))
    assert market.clearings() is shown and cleared == []
    assert len(looked_at) <= 2, looked_at  # the offer re-signed, and the one that goes stale first
    _apply(market, peers, clock, stamps, ("sign", 1, 0, 2_500))
    assert market.clearings() == fresh_clearing(market)[1] and len(cleared) == 1
    market.db.close()

"""Who this node subscribes to where (`MarketService.interests`), made of the commitments of the peers it recognises and
of those recognising it, kept with the book's changes: always what the rule makes of the whole book now."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.calls import python_lines

from xsc.allocation import Stamp
from xsc.allocation.core.subscriptions import interests
from xsc.config import MarketSection
from xsc.db import open_database
from xsc.identity import Identity
from xsc.market import service as market_service
from xsc.market import sign_commitment
from xsc.market.needs import NeedRegistry
from xsc.market.recognition import Recognition

PEERS = [Identity.generate() for _ in range(5)]


def _market(path: Path) -> market_service.MarketService:
    path.mkdir(parents=True, exist_ok=True)
    db = open_database(path / "db")
    me = Identity.generate()
    config = MarketSection(offer_storage=False, offer_compute=False)
    return market_service.MarketService(
        config=config, identity=me, db=db, peers=None, needs=NeedRegistry(db=db, me=me.id, config=config),
        weights=Recognition(db=db, me=me.id, peers=None), subscribers=None, compute_threads=1,
        storage_usage=lambda: (0, 0), gossip_interval=1.0)


def _sign(market, stamps: dict, identity: Identity, recognition: dict) -> None:
    p = identity.id
    stamps[p] = stamps.get(p, Stamp.seed()).event()
    market.receive([sign_commitment(identity, asks=(), bids=(), recognition=recognition, stamp=stamps[p],
                                    timestamp=market_service.now_ms()).to_json()])


def _whole(market) -> dict:
    """What the rule makes of the whole book now."""
    offered = frozenset(a.slot.kind for a in market.offer.own_asks())
    theirs = {p: w for p, w in market.book.recognition().items() if p != market.me}
    return interests(market.me, market.recognition(), theirs, offered, frozenset())


EVENTS = st.one_of(
    # a peer's commitment recognising this node, another peer, both, or no one
    st.tuples(st.just("sign"), st.integers(0, len(PEERS) - 1), st.booleans(), st.integers(-1, len(PEERS) - 1)),
    st.tuples(st.just("forget"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("recognise"), st.integers(0, len(PEERS) - 1), st.sampled_from([None, "0", "1", "3"])),
)


@settings(max_examples=40, deadline=None)
@given(events=st.lists(EVENTS, max_size=25))
def test_the_interests_kept_with_the_book_are_those_the_whole_book_makes(events) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        market = _market(Path(tmp))
        stamps: dict = {}
        try:
            for event in events:
                what, n, *args = event
                p = PEERS[n].id
                if what == "sign":
                    weights = {market.me: "1"} if args[0] else {}
                    if args[1] >= 0:
                        weights[PEERS[args[1]].id] = "2"
                    _sign(market, stamps, PEERS[n], weights)
                elif what == "forget":
                    market.forget(p)
                else:
                    market.recognize(p, args[0])
                assert market.interests() == _whole(market), event
        finally:
            market.db.close()


def _lines(root: Path, n: int) -> int:
    """The Python lines `interests()` runs after one peer's commitment changed, in a book of `n` participants."""
    market = _market(root)
    try:
        identities = [Identity.generate() for _ in range(n)]
        stamps: dict = {}
        for i, identity in enumerate(identities):
            _sign(market, stamps, identity, {market.me: "1"} if i < 3 else {})
        market.recognize(identities[1].id, "1")
        market.interests()
        _sign(market, stamps, identities[2], {identities[3].id: "1"})
        return python_lines(market.interests)
    finally:
        market.db.close()


def test_who_this_node_subscribes_to_costs_what_changed_not_the_book(tmp_path) -> None:
    """Asked three times a second, and the book of a large network changes at nearly every round: the answer after one
    commitment changed looks at that one and at the peers this node recognises or that recognise it."""
    small, large = _lines(tmp_path / "small", 100), _lines(tmp_path / "large", 1_000)
    assert large <= small + small // 4, (small, large)

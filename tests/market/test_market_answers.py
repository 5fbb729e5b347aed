"""What a peer answers a market push or pull with is read only as far as an honest answer goes, and an honest
answer to a digest stays within that however many commitments differ (the rest come at the next digest)."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from xsc.allocation import Stamp
from xsc.allocation.core.subscriptions import short_hash
from xsc.codec import dumps
from xsc.db import open_database
from xsc.errors import PeerRefused
from xsc.identity import Identity, public_id
from xsc.market import sign_commitment
from xsc.market.replication import BookReplication, pull_answer_bound
from xsc.market.store import MarketStore

from tests.support.peers import READ_AHEAD, lying_peer, metered_client


def _replication(tmp_path: Path, peers=None) -> BookReplication:
    return BookReplication(me=Identity.generate().id, store=MarketStore(open_database(tmp_path / "db")), peers=peers,
                           bucket_seconds=3600, interested=set, subscribers=None)


def test_a_digest_is_answered_with_what_an_answer_may_hold_and_the_rest_at_the_next(tmp_path: Path) -> None:
    answerer = _replication(tmp_path)
    participants = [Identity.generate() for _ in range(8)]
    now = int(time.time() * 1000)
    for participant in participants:  # ~300 KB each: 2.4 MB in all
        recognition = {public_id(os.urandom(32)): Decimal("0.5") for _ in range(5000)}
        answerer.book.receive(sign_commitment(participant, recognition=recognition, stamp=Stamp.seed().event(),
                                              timestamp=now))
    digest = {p.id: "" for p in participants}
    got: dict[str, dict] = {}
    for _ in range(len(participants)):
        answer = answerer.digest_answer("a-peer", {"commitments": digest})
        assert len(dumps(answer)) <= pull_answer_bound(len(digest))
        if not answer["commitments"]:
            break
        got.update({c["participant"]: c for c in answer["commitments"]})
        digest.update({p: short_hash(c["signature"]) for p, c in got.items()})
    assert set(got) == {p.id for p in participants}
    answerer.store.db.close()


async def test_a_pull_answered_with_megabytes_is_read_no_further_than_its_commitments_go(tmp_path: Path) -> None:
    async with lying_peer(("POST", "/v1/peer/market/digest"), ("POST", "/v1/peer/market")) as url, \
            metered_client() as (client, counted):
        peer = SimpleNamespace(id=Identity.generate().id, url=url)
        view = SimpleNamespace(request=client.request, known=lambda node: True, up_peers=lambda: [peer])
        puller = _replication(tmp_path, view)
        try:
            with pytest.raises(PeerRefused) as refused:
                await puller.pull(peer, [peer.id])
            assert refused.value.details["answer_limit"] == pull_answer_bound(1)
            assert counted.received < pull_answer_bound(1) + READ_AHEAD
        finally:
            puller.store.db.close()

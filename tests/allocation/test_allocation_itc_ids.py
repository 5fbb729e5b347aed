"""This node's ITC id against peers' stamps: what it folds into its own stamp keeps its own stamps readable."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

from xsc.allocation import Stamp
from xsc.allocation.core.records import MAX_STAMP_HEX, Held
from xsc.allocation.itc_ids import ItcIds
from xsc.db import open_database

# The largest event counter Stamp.decode reads (64-bit enc_n fields): a peer may send it.
_WIDEST = sum(1 << b for b in range(2, 64)) + (1 << 64) - 1


def _ids(db, held: Held) -> ItcIds:
    return ItcIds(me="me", db=db, peers=None, held=(held,), targets=lambda: [], joins=False, forks=None)


def test_a_peer_stamp_at_the_counter_bound_leaves_this_nodes_stamps_readable(tmp_path: Path) -> None:
    """Joining two stamps adds their counters along a path, and an event adds one: a peer's stamp at the widest
    counter decode reads, folded in, would make every stamp this node publishes (and the one it stores, read
    again at restart) one that decode refuses."""
    Stamp.decode(Stamp(0, _WIDEST).encode())  # the peer's stamps are readable ...
    db = open_database(tmp_path / "db")
    held = Held()
    for owner, event in (("peer-a", _WIDEST), ("peer-b", (_WIDEST, _WIDEST, 0)), ("peer-c", 3)):
        held.receive(SimpleNamespace(owner=owner, stamp=Stamp(0, event), timestamp=0, signature=b""))
    ids = _ids(db, held)
    ids.stamp = Stamp.seed()
    for _ in range(3):
        published = ids.event()
        assert Stamp.decode(published.encode()) == published  # ... and so are this node's
    assert Stamp(0, 3).leq(published)  # an ordinary peer's events are still folded in
    db.close()
    reopened = open_database(tmp_path / "db")
    assert _ids(reopened, Held()).retiring == published  # the node restarts
    reopened.close()


def _bushy(rnd: random.Random, depth: int):
    return rnd.randrange(1000) if depth == 0 else (rnd.randrange(3), _bushy(rnd, depth - 1), _bushy(rnd, depth - 1))


def test_a_peers_stamps_within_bounds_that_add_up_past_them_leave_this_nodes_stamps_within_bounds(tmp_path: Path) -> None:
    """Event trees join as unions: one peer's state and receipt, each with a stamp a record may carry, over disjoint
    halves of the interval, would add up to a stamp no peer accepts from this node."""
    rnd = random.Random(7)
    left, right = Stamp(0, (0, 0, (0, _bushy(rnd, 10), 0))), Stamp(0, (0, 0, (0, 0, _bushy(rnd, 10))))
    assert all(len(s.encode().hex()) <= MAX_STAMP_HEX for s in (left, right))
    assert len(left.join(right).encode().hex()) > MAX_STAMP_HEX
    db = open_database(tmp_path / "db")
    states, receipts, small = Held(), Held(), Stamp(0, 5)
    states.receive(SimpleNamespace(owner="peer", stamp=left, timestamp=0, signature=b""))
    receipts.receive(SimpleNamespace(owner="peer", stamp=right, timestamp=0, signature=b""))
    receipts.receive(SimpleNamespace(owner="other", stamp=small, timestamp=0, signature=b""))
    ids = ItcIds(me="me", db=db, peers=None, held=(states, receipts), targets=lambda: [], joins=False, forks=None)
    ids.stamp = Stamp.seed().fork_many(4)[0]  # the first quarter: the peer's trees are over the others
    for _ in range(3):
        published = ids.event()
        assert len(published.encode().hex()) <= MAX_STAMP_HEX
    assert small.leq(published)  # what fits is still folded in
    # a fork for that peer is after what we hold of it, within the same bound
    answer = ids.fork("peer", {})
    assert len(answer["stamp"]) <= MAX_STAMP_HEX and len(ids.stamp.encode().hex()) <= MAX_STAMP_HEX
    db.close()


async def test_a_fork_answered_with_a_stamp_too_large_to_publish_is_not_taken(tmp_path: Path) -> None:
    """The stamp a peer answers a fork with becomes this node's own, carried by every record it publishes."""
    answers = [Stamp(0, 0).join(Stamp((0, 1), (0, 0, (0, 0, _bushy(random.Random(3), 11))))),
               Stamp.seed().fork()[1]]
    assert len(answers[0].encode().hex()) > MAX_STAMP_HEX

    class Peers:
        async def request(self, url, method, path, **kwargs):
            return SimpleNamespace(json=lambda: {"stamp": answers.pop(0).encode().hex()})

    db = open_database(tmp_path / "db")
    peer = SimpleNamespace(url="https://peer", id="peer")
    ids = ItcIds(me="me", db=db, peers=Peers(), held=(Held(),), targets=lambda: [peer], joins=True, forks=None)
    assert not await ids.ensure() and ids.stamp is None  # refused: it asks again on its next try
    assert await ids.ensure() and ids.stamp == Stamp.seed().fork()[1] and ids.forked_from == "peer"
    db.close()


async def test_a_fork_answered_with_megabytes_is_read_no_further_than_a_stamp_goes(node_factory,
                                                                                 tmp_path: Path) -> None:
    """A fork's answer is a stamp of at most FOLD_HEX hex digits: one longer is refused after that much is read,
    not after the client's 16 MiB."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from tests.support.peers import answering_megabytes
    from xsc.allocation.itc_ids import FORK_ANSWER, FORK_PATH
    from xsc.identity import Identity
    from xsc.node.appkeys import NODE
    from xsc.peers import make_descriptor

    node = await node_factory("forker", health={"probe_interval": 3600},
                              peers={"gossip_interval": 3600, "tls": False})

    app = web.Application()
    app.router.add_post(FORK_PATH, answering_megabytes(b'{"stamp": "', b"0"))
    liar = TestServer(app, host="127.0.0.1")
    await liar.start_server()

    def received() -> float:  # bytes of peers' answers the node read (xsc_peer_bytes)
        return sum(sample.value for metric in node.app[NODE].metrics.peer_bytes.collect() for sample in metric.samples
                   if sample.name.endswith("_total") and sample.labels["direction"] == "received")
    db = open_database(tmp_path / "db")
    try:
        peer = make_descriptor(Identity.generate(), url=f"http://127.0.0.1:{liar.port}", capacity=1, free=1,
                               version="0", timestamp=1)
        ids = ItcIds(me="me", db=db, peers=node.app[NODE].peers, held=(Held(),), targets=lambda: [peer], joins=True,
                     forks=None)
        before = received()
        assert not await ids.ensure() and ids.stamp is None
        assert received() - before < FORK_ANSWER + 256 * 1024
    finally:
        db.close()
        await liar.close()

"""This node's ITC id against peers' stamps: what it folds into its own stamp keeps its own stamps readable."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.waiting import eventually_async
from xsc import keys
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


async def test_forks_asked_at_once_are_asked_once_and_their_answer_taken_once(tmp_path: Path) -> None:
    """The round's loop, a caller of ensure_id and `settle` may ask at the same time under one name; the peer
    answers it alike each time, and that answer is taken once (twice would join the half into the id again, and find
    its fork asked gone)."""
    given, release, names = Stamp.seed().fork()[1], asyncio.Event(), []

    class Peers:
        async def request(self, url, method, path, json, **kwargs):
            names.append(json["name"])
            await release.wait()
            return SimpleNamespace(json=lambda: {"stamp": given.encode().hex()})

    db = open_database(tmp_path / "db")
    peer = SimpleNamespace(url="https://peer", id="peer")
    ids = ItcIds(me="me", db=db, peers=Peers(), held=(Held(),), targets=lambda: [peer], joins=True, forks=None)
    asking = [asyncio.create_task(ids.ensure()) for _ in range(2)]
    while not names:  # the first ask is on its way
        await asyncio.sleep(0)
    settling = asyncio.create_task(ids.settle())
    release.set()
    assert await asyncio.gather(*asking, settling) == [True, True, None]
    assert ids.stamp == given and ids.asked == [] and len(set(names)) == 1  # one name, its answer taken once
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


async def test_a_fork_whose_answer_was_lost_is_given_again_and_the_ids_still_add_up(node_factory) -> None:
    """The peer forked its id and kept its half, and the answer never reached the joining node: asked again, it gives
    the same half, not another (then the half given first was nobody's, and the two ids never added up to the whole)."""
    from tests.support.allocation import FORK_WAIT, LosingForks, joining, whole
    from tests.support.waiting import eventually_async
    from xsc.node.appkeys import NODE

    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
             "market": {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT}}
    a = await node_factory("a", **quiet)
    b = await joining(node_factory, a, "b", **quiet)
    services = [n.app[NODE].allocation for n in (a, b)]
    await eventually_async(lambda: services[0].stamp is not None, "a to seed the ITC id")
    losing = services[1].ids.peers = LosingForks(services[1].ids.peers)  # b knows no peer yet: it has asked none
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    await eventually_async(lambda: services[1].stamp is not None, "b's ITC id, forked from a")
    assert losing.lost == 1 and services[1].ids.forked_from == services[0].me
    assert whole([s.stamp for s in services]), [str(s.stamp) for s in services]
    assert services[1].status()["forks_asked"] == []  # nothing left to ask again


class _Network:
    """ItcIds of a few nodes on real databases, asking each other for forks through `request`, which loses what the
    test says: a request before the peer reads it ("request"), the answer after the peer kept its half ("answer"),
    or a connection never made ("unreached"); or the peer refuses the request before its fork is read ("refused").
    Node 0 holds the seed; the others join, and never seed."""

    def __init__(self, dbs: list, seeds: int | None = None) -> None:
        from xsc.identity import Identity

        self.dbs, self.faults, self.up = dbs, [], set(range(len(dbs)))
        self.seeds = seeds  # a node without a stored id that seeds one alone (the first node of a network)
        self.names = [Identity.generate().id for _ in dbs]
        for db in dbs:  # (one database a node for all the examples: opening one is most of an example's time)
            with db.iterator(include_value=False) as held:
                for key in list(held):
                    db.delete(key)
        dbs[0].put(keys.MARKET_ALLOCATION, Stamp.seed().encode().hex().encode())
        self.ids = [self._ids(k) for k in range(len(dbs))]

    def _ids(self, k: int) -> ItcIds:
        def targets() -> list:
            return [SimpleNamespace(id=self.names[j], url=str(j)) for j in sorted(self.up) if j != k]

        return ItcIds(me=self.names[k], db=self.dbs[k], peers=self._Peers(self, k), held=(Held(),), targets=targets,
                      joins=k not in (0, self.seeds), forks=None, fork_wait=0 if k in (0, self.seeds) else 1e9)

    class _Peers:
        def __init__(self, net: "_Network", k: int) -> None:
            self.net, self.k = net, k

        async def request(self, url, method, path, *, json, **kwargs):
            from xsc.errors import PeerRefused, PeerUnreachable, XscError

            fault = self.net.faults.pop(0) if self.net.faults else None
            if fault in ("request", "unreached"):
                raise PeerUnreachable("lost", sent=fault == "request")
            if fault == "refused":  # by the peer's routes, before the fork is read: past its rate, or a stranger
                raise PeerRefused("rate", peer_status=429, peer_code="quota-exceeded")
            try:
                answer = self.net.ids[int(url)].fork(self.net.names[self.k], json)
            except XscError as err:
                raise PeerRefused(str(err), peer_status=400, peer_code=err.code) from None
            if fault == "answer":
                raise PeerUnreachable("lost", sent=True)
            return SimpleNamespace(json=lambda: answer)

    def restart(self, k: int) -> None:
        self.ids[k] = self._ids(k)  # what it kept in memory is gone; what it wrote is read again

    def held(self) -> list[Stamp]:
        """The ids the nodes hold: each its own, or its stored one while no peer it gave it back to may have it."""
        out = []
        for ids in self.ids:
            if ids.stamp is not None:
                out.append(ids.stamp)
            elif ids.retiring is not None and not ids.retire_asked():
                out.append(ids.retiring)
        return out



_STEPS = st.lists(st.tuples(st.sampled_from(("ensure", "ensure", "ensure", "settle", "restart", "restart", "down",
                                             "up")),
                            st.integers(0, 2),
                            st.lists(st.sampled_from((None, "request", "answer", "answer", "unreached", "refused")),
                                     max_size=3)),
                  max_size=16)


def test_after_any_forks_lost_answers_retries_and_restarts_the_ids_held_add_up_to_the_seed(tmp_path: Path) -> None:
    """The ids the nodes hold never overlap, whatever is lost and whoever restarts; once every node is up and nothing
    is lost, each node's forks asked are answered and the ids add up to the seed's, the whole interval."""
    dbs = [open_database(tmp_path / str(k)) for k in range(3)]
    try:
        _forks_lost_and_asked_again(dbs)
    finally:
        for db in dbs:
            db.close()


def _forks_lost_and_asked_again(dbs: list) -> None:
    import asyncio

    from tests.support.allocation import disjoint, whole

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=_STEPS)
    # node 0 gives its id back to node 1, whose answer is lost: node 0 must not go on with it (node 1 took it)
    @example(steps=[("ensure", 0, []), ("ensure", 1, []), ("restart", 0, []), ("ensure", 0, ["answer"])])
    # ... nor once node 1 refuses the request again, past its rate: that says nothing of the first
    @example(steps=[("ensure", 0, []), ("ensure", 1, []), ("restart", 0, []), ("ensure", 0, ["answer"]),
                    ("ensure", 0, ["refused"])])
    # node 1's answer from node 0 is lost, node 2 gives it one; restarted, node 1 gets node 0's answer and keeps both
    @example(steps=[("ensure", 0, []), ("ensure", 2, []), ("ensure", 1, ["answer"]), ("restart", 1, []),
                    ("ensure", 1, [])])
    def check(steps) -> None:
        asyncio.run(run(_Network(dbs), steps))

    async def run(net: _Network, steps) -> None:
        for step, k, faults in steps:
            net.faults = list(faults)
            if step == "ensure":
                await net.ids[k].ensure()
            elif step == "settle":
                await net.ids[k].settle()
            elif step == "restart":
                net.restart(k)
            else:
                (net.up.add if step == "up" else net.up.discard)(k)
            assert disjoint(net.held()), (step, k, faults, [str(s) for s in net.held()])
        net.faults, net.up = [], set(range(len(net.ids)))
        for _ in range(6):
            for ids in net.ids:
                await ids.ensure()
                await ids.settle()
        assert all(ids.stamp is not None and ids.asked == [] for ids in net.ids)
        assert whole([ids.stamp for ids in net.ids]), [str(ids.stamp) for ids in net.ids]

    check()


async def test_a_node_that_may_have_been_given_a_fork_seeds_no_id_of_its_own(tmp_path: Path) -> None:
    """A first node of a network seeds an id once no peer gave it one within its fork wait: not when a peer may have
    given it half of its own and the answer was lost (the seed would overlap that half), however long that peer is
    away; once back, it gives the same half again."""
    from tests.support.allocation import disjoint, whole

    dbs = [open_database(tmp_path / str(k)) for k in range(2)]
    try:
        net = _Network(dbs, seeds=1)
        assert await net.ids[0].ensure()
        net.faults = ["answer"]
        assert not await net.ids[1].ensure() and len(net.ids[1].asked) == 1
        net.up.discard(0)  # node 1 knows no peer now, and waited long enough: alone, it would seed
        assert not await net.ids[1].ensure() and net.ids[1].stamp is None
        net.ids[1] = net._ids(1)  # nor after a restart
        assert not await net.ids[1].ensure() and net.ids[1].stamp is None
        assert disjoint(net.held())
        net.up.add(0)
        assert await net.ids[1].ensure() and net.ids[1].asked == []
        assert whole([ids.stamp for ids in net.ids])
    finally:
        for db in dbs:
            db.close()


async def test_of_nodes_started_together_only_the_one_given_no_peer_to_join_seeds(tmp_path: Path) -> None:
    """The nodes of a devnet start at once, each but the first given the first to join, and learn of each other
    slower than their fork wait on a loaded machine: the first, knowing nobody yet, seeds; a joining node, the
    smallest of the peers it knows (none with an id yet), waits for a fork all the same (two seeds would overlap).
    The first, once it knows only peers that said they join, seeds however their node ids sort."""
    from tests.support.allocation import whole
    from xsc.errors import PeerRefused, XscError
    from xsc.identity import Identity

    low, mid, high = sorted(Identity.generate().id for _ in range(3))
    names = [high, low, mid]  # the first node's id sorts last
    known: dict[str, list[str]] = {name: [] for name in names}
    asked: list[dict] = []

    class Peers:
        def __init__(self, me: str) -> None:
            self.me = me

        async def request(self, url, method, path, *, json, **kwargs):
            asked.append(json)
            try:
                answer = nodes[url].fork(self.me, json)
            except XscError as err:
                raise PeerRefused(str(err), peer_status=400, peer_code=err.code) from None
            return SimpleNamespace(json=lambda: answer)

    dbs = [open_database(tmp_path / name) for name in names]
    try:
        nodes = {name: ItcIds(me=name, db=db, peers=Peers(name), held=(Held(),),
                              targets=lambda name=name: [SimpleNamespace(id=p, url=p) for p in known[name]],
                              joins=name != high, forks=None, fork_wait=0)
                 for name, db in zip(names, dbs)}
        first, one, two = (nodes[name] for name in names)
        known[low] = [high, mid]  # it sees the first and the other up; the first sees nobody yet
        assert not await one.ensure() and one.stamp is None  # the smallest it knows, none with an id: it waits
        assert asked and all(body["joins"] is True for body in asked)
        known[mid] = [high, low]
        assert not await two.ensure() and two.stamp is None
        known[high] = [low, mid]  # both sort before it, and said they join
        assert await first.ensure() and first.forked_from is None
        assert await one.ensure() and await two.ensure()
        assert one.forked_from == high and two.forked_from in (high, low)
        assert whole([first.stamp, one.stamp, two.stamp])
    finally:
        for db in dbs:
            db.close()


def test_a_request_named_again_gets_the_same_half_free_and_what_is_kept_of_forks_given_is_bounded(
        tmp_path: Path) -> None:
    """A peer naming its last request again gets what it was given, with no fork nor quota taken; a new name is a
    new fork, within the peer's quota; one fork is kept a peer, MAX_GIVEN peers at most, across restarts."""
    from xsc.allocation.itc_ids import FORK_BURST, FORK_RATE, MAX_GIVEN
    from xsc.errors import InvalidArgument, QuotaExceeded
    from xsc.identity import Identity
    from xsc.node.limits import RateLimiter

    db = open_database(tmp_path / "db")
    ids = ItcIds(me="me", db=db, peers=None, held=(Held(),), targets=lambda: [], joins=False,
                 forks=RateLimiter(FORK_RATE, FORK_BURST, "ITC forks"))
    ids.stamp = Stamp.seed()
    peer = Identity.generate().id
    first = ids.fork(peer, {"name": "1" * 32})
    kept = ids.stamp
    for _ in range(3):
        assert ids.fork(peer, {"name": "1" * 32}) == first and ids.stamp == kept
    assert ids.fork(peer, {"name": "2" * 32}) != first  # the second of its burst
    with pytest.raises(QuotaExceeded):
        ids.fork(peer, {"name": "3" * 32})
    assert ids.fork(peer, {"name": "2" * 32})["stamp"] != first["stamp"]  # only its latest is kept
    with pytest.raises(InvalidArgument, match="32 lower-case hex digits"):
        ids.fork(peer, {"name": "1" * 10_000})
    peers = [Identity.generate().id for _ in range(MAX_GIVEN + 3)]
    with db.write_batch() as batch:
        for k, p in enumerate(peers):
            ids.given.remember(batch, p, f"{k:032x}", first)
    with db.iterator(prefix=keys.MARKET_FORKS_GIVEN, include_value=False) as given:
        assert len(list(given)) == MAX_GIVEN
    again = ItcIds(me="me", db=db, peers=None, held=(Held(),), targets=lambda: [], joins=False, forks=None)
    assert again.fork(peers[-1], {"name": f"{len(peers) - 1:032x}"}) == first  # (this node has no id yet)
    # the oldest forgotten: `peer`'s and the first three of these
    assert again.given.answer(peer, "2" * 32) is None and again.given.answer(peers[2], f"{2:032x}") is None
    assert again.given.answer(peers[3], f"{3:032x}") == first
    db.close()


async def test_the_loop_asking_forks_again_sleeps_until_one_is_asked_then_asks_until_it_is_answered(
        tmp_path: Path) -> None:
    """`settling` sleeps while no fork asked is unanswered (a settled id gives it nothing to do), is woken as one is
    asked, and asks it again every `fork_wait` until it is answered: a node given its id by one peer while another's
    answer was lost joins that half into its id."""
    from xsc.errors import PeerError
    from xsc.tasks import stop

    kept, lost = Stamp.seed().fork()
    tries = []

    class Peers:
        async def request(self, url, method, path, **kwargs):
            tries.append(kwargs["json"]["name"])
            if len(tries) == 1:
                raise PeerError("the answer was lost on its way")  # it may have given it: asked again, by its name
            return SimpleNamespace(json=lambda: {"stamp": lost.encode().hex()})

    db = open_database(tmp_path / "db")
    peer = SimpleNamespace(url="https://peer", id="peer")
    ids = ItcIds(me="me", db=db, peers=Peers(), held=(Held(),), targets=lambda: [peer], joins=True, forks=None,
                 fork_wait=0.01)
    settling = asyncio.create_task(ids.settling()())
    try:
        assert not await ids.ensure() and len(ids.asked) == 1  # asked, unanswered
        ids.stamp = kept  # the other half, given meanwhile by another peer
        await eventually_async(lambda: not ids.asked, "the fork asked again and answered")
        assert ids.stamp == Stamp.seed() and len(set(tries)) == 1  # asked again under its name, its half joined
    finally:
        await stop(settling)
        db.close()

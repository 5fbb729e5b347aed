"""A restarted node rejoins by fork: it forks a fresh ITC id from a live peer and gives its stored one
back, so the network's ids still add up to the whole interval; its new stamp is after everything the peers hold of
it, so its records are taken at once even when its stored stamp lost events (a write lost in a crash); and the
allocation converges again.  Three in-process nodes; the restarted one runs again on its data dir and port."""

from __future__ import annotations

from decimal import Decimal

from tests.support.allocation import FORK_WAIT, whole
from tests.support.waiting import eventually_async
from tests.support.nodes import close_node, serve
from xsc import keys
from xsc.allocation import Stamp
from xsc.node.appkeys import NODE
from xsc.node.datadir import open_db

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600},
         "market": {"allocation_delay": 0.05, "allocation_fork_wait": FORK_WAIT}}
NEED = 1_000_000


def _received(node) -> dict[str, int]:
    """provider -> units, over this node's receipt."""
    out: dict[str, int] = {}
    for entry in (node.app[NODE].allocation.status()["received"] or {}).values():
        for p, units in entry["by_provider"].items():
            out[p] = out.get(p, 0) + units
    return out


async def test_a_restarted_node_rejoins_by_fork_gives_its_old_id_back_and_the_allocation_converges(make_config) -> None:
    # b is c's only provider (a offers no storage): what is checked is the rejoin, not how two providers share.
    # a alone seeds the id space: b and c, each alone until the test peers them, would seed their own too once
    # their fork wait passed (one whole id each, never to add up), so theirs outlasts the test and they fork from a.
    configs = {name: make_config(name, **{**QUIET, "market": {**QUIET["market"], "allocation_fork_wait": 600}})
               for name in "bc"}
    configs["a"] = make_config("a", **{**QUIET, "market": {**QUIET["market"], "offer_storage": False}})
    nodes = {"a": await serve(configs["a"])}
    try:
        await eventually_async(lambda: nodes["a"].app[NODE].allocation.stamp is not None, "a to seed the ITC id")
        nodes.update({name: await serve(configs[name]) for name in "bc"})
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        await a.app[NODE].peers.add(b.app[NODE].peers.url)
        await a.app[NODE].peers.add(c.app[NODE].peers.url)
        await b.app[NODE].peers.add(c.app[NODE].peers.url)
        ids = {name: n.app[NODE].peers.identity.id for name, n in nodes.items()}
        for name, n in nodes.items():
            await n.app[NODE].market.fill_book()
            for other, oid in ids.items():
                if other != name:
                    n.app[NODE].market.set_recognition(oid, Decimal(1))
        await eventually_async(lambda: all(n.app[NODE].allocation.stamp is not None for n in nodes.values()), "every ITC id")
        assert whole([n.app[NODE].allocation.stamp for n in nodes.values()])

        # c needs storage; b allocates to it.
        response = await c.post("/v1/allocation/needs", json={"kind": "storage", "quantity": NEED, "seconds": 600})
        assert response.status == 201
        await eventually_async(lambda: sum(_received(c).values()) == NEED and ids["b"] in _received(c), "c's need to be met")
        await eventually_async(lambda: all(n.app[NODE].allocation.states.get(ids["b"]) is not None for n in (a, c)),
                     "b's state at a and c")
        held_before = {name: nodes[name].app[NODE].allocation.states.seen(ids["b"]) for name in "ac"}
        # a's compute slots serve no storage need: c never waited for an answer from it (nor b for c's)
        assert all(n.app[NODE].allocation.status()["out_of_step"] == 0 for n in (b, c))

        # b stops; its stored stamp loses its events (a write lost in a crash: same id, nothing counted).
        old = b.app[NODE].allocation.stamp
        await close_node(b)
        db = open_db(configs["b"].data_dir)
        db.put(keys.MARKET_ALLOCATION, Stamp(old.id, 0).encode().hex().encode(), sync=True)
        db.close()
        assert Stamp(old.id, 0).event().leq(held_before["a"])  # kept, that stamp's next records would be stale

        b = nodes["b"] = await serve(configs["b"])
        service = b.app[NODE].allocation
        assert service.stamp is None and service.ids.retiring == Stamp(old.id, 0)  # publishes nothing before it rejoins
        await eventually_async(lambda: service.stamp is not None, "b to rejoin")
        status = service.status()
        assert status["rejoined"] is True and status["forked_from"] in (ids["a"], ids["c"])
        # A fresh fork, after everything the peers held of it; the old id was given back first (so when the peer
        # it forked from holds the other half of a pair, b gets the same half again): the ids still add up to the
        # whole interval, none twice.
        assert all(s.leq(service.stamp) for s in held_before.values())
        assert whole([n.app[NODE].allocation.stamp for n in nodes.values()])

        # Its records are taken at once (never stale), and the allocation converges again with it.
        await eventually_async(lambda: service.states.get(ids["b"]) is not None, "b to publish its state")
        await eventually_async(lambda: all(n.app[NODE].allocation.states.get(ids["b"]) is not None
                                 and n.app[NODE].allocation.states.get(ids["b"]).stamp == service.states.get(ids["b"]).stamp
                                 for n in (a, c)), "a and c to take b's new state")
        await eventually_async(lambda: sum(_received(c).values()) == NEED and c.app[NODE].allocation.status()["converged"]
                     and service.status()["converged"], "the allocation to converge again")
    finally:
        for n in nodes.values():
            await close_node(n)


async def test_a_node_with_no_peer_to_rejoin_through_keeps_its_stored_id(make_config) -> None:
    config = make_config("alone", **QUIET)
    node = await serve(config)
    try:
        first = await eventually_async(lambda: node.app[NODE].allocation.stamp, "the first node to seed its id")
        assert first.id == 1
    finally:
        await close_node(node)
    node = await serve(config)
    try:
        service = node.app[NODE].allocation
        await eventually_async(lambda: service.stamp is not None, "the id back")
        assert service.stamp == first and service.status()["rejoined"] is False and service.ids.forked_from is None
    finally:
        await close_node(node)

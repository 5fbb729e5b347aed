"""The simulator and live nodes give the same allocation for the same inputs.

The same network -- participants, recognition weights, capacity, needs -- runs on in-process nodes (live rounds:
records signed, pushed, ITC-stamped, debounced) and in the rounds simulator (`RoundSimulation`, the same
`provider_round` / `recipient_round`); the converged allocations agree per (provider, recipient, need slot) within
one unit.  Capacity is scarce, so the division itself is compared: tier 1 in proportion to mutual recognition and
need (with the largest-remainder rule), a capped recipient, tier 2 after tier 1; and a need two providers serve
(the gap is shared by the providers that ask in the same round: the nodes' rounds must be in step, as the
simulator's are, for the same split: docs/allocation.md, "Simulator and nodes").  No receipt shows an
over-allocated need at any check on the way."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.allocation import following, in_step
from tests.support.waiting import eventually_async
from xsc.allocation import Commitment, Stamp
from xsc.allocation.roundsim import RoundSimulation
from xsc.allocation.core.simulate import SimConfig
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
# Week-long market buckets: a need of 10 minutes meets one capacity slot of each provider (the current bucket's),
# except in the last 10 minutes of a week (then the next bucket's slot serves it too, on both sides alike).
MARKET_CONFIG = {"allocation_delay": 0.05, "offer_compute": False, "bucket_seconds": 7 * 86400}


class Network:
    """Providers' capacity, recipients' needs, raw recognition weights (every pair not named is 0) and, where it
    was worked by hand, the division (provider, recipient) -> units."""

    def __init__(self, capacity: dict, needs: dict, weights: dict, expected: dict | None = None) -> None:
        self.capacity, self.needs, self.weights, self.expected = capacity, needs, weights, expected


# p1: r1 and r2 mutual (MR 3/4 and 1/4), neither capped: p1's 500,000 are divided by MR x need, 450 : 225 (333,333.3
# and 166,666.7: the spare unit to the larger remainder).  p2: r3 mutual, capped at its need; r4 one-way (it
# recognises nobody), tier 2 gets the 200,000 left.
ONE_PROVIDER_EACH = Network(
    capacity={"p1": 500_000, "p2": 600_000},
    needs={"r1": 600_000, "r2": 900_000, "r3": 400_000, "r4": 400_000},
    weights={"p1": {"r1": 3, "r2": 1}, "p2": {"r3": 1, "r4": 1}, "r1": {"p1": 1}, "r2": {"p1": 1}, "r3": {"p2": 1},
             "r4": {}},
    expected={("p1", "r1"): 333_333, ("p1", "r2"): 166_667, ("p2", "r3"): 400_000, ("p2", "r4"): 200_000})
# Two providers serve r1's need, and p1 serves r2's as well: the simulator gives p1: r1 300,000, r2 200,000 and p2:
# r1 300,000 (r1's gap shared by both in one round); rounds out of step reached other fixed points, or cycled.
SHARED_NEED = Network(
    capacity={"p1": 500_000, "p2": 500_000},
    needs={"r1": 600_000, "r2": 300_000},
    weights={"p1": {"r1": 1, "r2": 1}, "p2": {"r1": 1}, "r1": {"p1": 1, "p2": 1}, "r2": {"p1": 1}})


def _node_allocation(net, nodes, ids) -> dict[tuple[str, str, str], int]:
    """(provider, recipient, need slot) -> units, from each provider node's own state (names, not node ids)."""
    names = {v: k for k, v in ids.items()}
    out: dict[tuple[str, str, str], int] = {}
    for name in net.capacity:
        mine = nodes[name].app[NODE].allocation.states.get(ids[name])
        for _c, recipient, need, units, _tier in (mine.allocations if mine else ()):
            key = (name, names[recipient], need)
            out[key] = out.get(key, 0) + units
    return out


def _needs_reached(net, nodes, ids) -> bool:
    """Every provider holds the needs its node publishes of every recipient it recognises (its subscriptions bring
    them; a provider that does not recognise a recipient does not follow its commitments)."""
    for p in net.capacity:
        book = nodes[p].app[NODE].market.book
        for r, weight in net.weights[p].items():
            theirs, own = book.get(ids[r]), nodes[r].app[NODE].market.book.get(ids[r])
            if weight and (theirs is None or own is None or theirs.bids != own.bids):
                return False
    return True


def _settled(net, nodes, ids) -> bool:
    """Every provider holds its recipients' needs, no node has a round due, every provider's state converged, and
    every recipient's receipt totals exactly what the providers' states give it."""
    if not _needs_reached(net, nodes, ids) or not all(n.app[NODE].allocation.idle for n in nodes.values()):
        return False  # a provider has not got its recipients' needs yet, or a node has a change to compute on
    given = _node_allocation(net, nodes, ids)
    states = [nodes[p].app[NODE].allocation.states.get(ids[p]) for p in net.capacity]
    if any(s is None or s.wanted or not s.converged for s in states):
        return False  # a provider has not computed, still asks for a larger grant, or moved its denominators
    for r in net.needs:
        receipt = nodes[r].app[NODE].allocation.receipts.get(ids[r])
        if receipt is None or any(e.wanting for e in receipt.needs.values()):
            return False
        parts = {(p, r, n): units for n, e in receipt.needs.items() for p_id, units in e.by_provider.items()
                 for p in net.capacity if ids[p] == p_id}
        if parts != {k: v for k, v in given.items() if k[1] == r and v}:
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("net", [ONE_PROVIDER_EACH, SHARED_NEED], ids=["one-provider-each", "shared-need"])
async def test_the_simulator_and_live_nodes_give_the_same_allocation(net, node_factory, monkeypatch) -> None:
    in_step(monkeypatch)  # a need two providers serve is split as the simulator splits it however late an ask comes
    nodes = {}
    for name in (*net.capacity, *net.needs):
        provider = name in net.capacity
        nodes[name] = await node_factory(name, **QUIET, storage={"capacity": net.capacity.get(name, 10_000_000)},
                                         market={**MARKET_CONFIG, "offer_storage": provider})
    ids = {name: n.app[NODE].peers.identity.id for name, n in nodes.items()}
    names = list(nodes)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            await nodes[name].app[NODE].peers.add(nodes[other].app[NODE].peers.url)
    for name, node in nodes.items():
        await node.app[NODE].market.fill_book()
        for other in names:
            if other != name:
                node.app[NODE].market.set_recognition(ids[other], Decimal(net.weights[name].get(other, 0)))
    for r in net.needs:  # a recipient's first receipt waits for every provider it then knows recognises it
        serving = [nodes[p] for p in net.capacity if net.weights[p].get(r)]
        await eventually_async(lambda: following(nodes[r], serving, "storage"), f"{r}'s providers to follow its needs")
    need_ids = {}
    for name, quantity in net.needs.items():
        response = await nodes[name].post("/v1/allocation/needs", json={"kind": "storage", "quantity": quantity,
                                                                         "seconds": 600})
        assert response.status == 201
        need_ids[name] = (await response.json())["id"]
    live: dict = {}

    over: list = []

    def settled_twice() -> bool:  # the same settled allocation at two checks in a row (nothing in flight changed it)
        nonlocal live
        for r in net.needs:  # and no need over-allocated at any check on the way
            receipt = nodes[r].app[NODE].allocation.receipts.get(ids[r])
            if receipt is not None and receipt.over_allocation:
                over.append((r, receipt.needs, {n: x.app[NODE].allocation.step.out_of_step for n, x in nodes.items()}))
        now = _node_allocation(net, nodes, ids) if _settled(net, nodes, ids) else None
        same, live = now is not None and now == live, now or {}
        return same

    await eventually_async(settled_twice, "the live allocation to converge", timeout=40)
    assert not over, over[0]

    # The same inputs for the simulator: each provider's capacity slots as its node offers them (ids and windows
    # are the node's; the quantity is the capacity declared above), each recipient's standing need, the weights --
    # each participant's commitment as its own node holds it (a provider that does not recognise a recipient does
    # not subscribe to its needs, so p1's copy of r3 may be older than r3's need).
    assert _needs_reached(net, nodes, ids)
    commitments = []
    for name in names:
        mc = nodes[name].app[NODE].market.book.get(ids[name])
        caps = tuple(a.slot for a in mc.asks)
        needs = tuple(b.slot for b in mc.bids)
        assert [c.quantity for c in caps] == ([net.capacity[name]] * 2 if name in net.capacity else [])
        assert [(n.id, n.quantity) for n in needs] == ([(need_ids[name], net.needs[name])] if name in net.needs else [])
        commitments.append(Commitment(participant=ids[name], capacity_slots=caps, need_slots=needs,
                                      recognition={ids[o]: Decimal(w) for o, w in net.weights[name].items()},
                                      damping_factor=Decimal(1), stamp=Stamp.seed(), timestamp=1))
    sim = RoundSimulation(SimConfig(participants=len(names), slots=1, seed=0, max_rounds=100), commitments)
    result = sim.run()
    assert result.quiet and result.over_allocation == 0
    by_id = {v: k for k, v in ids.items()}
    simulated: dict[tuple[str, str, str], int] = {}
    for p, state in sim.states.items():
        for a in state.slot_allocations:
            key = (by_id[p], by_id[a.recipient], a.need_slot)
            simulated[key] = simulated.get(key, 0) + a.quantity

    live = {k: v for k, v in live.items() if v}
    simulated = {k: v for k, v in simulated.items() if v}
    out_of_step = {name: n.app[NODE].allocation.step.out_of_step  # (rounds past the bound)
                   for name, n in nodes.items()}
    assert live.keys() == simulated.keys(), (live, simulated, out_of_step)
    assert all(abs(live[k] - simulated[k]) <= 1 for k in live), (live, simulated, out_of_step)
    # And both are the seed's division, worked by hand (see the weights), when each need meets one slot per provider.
    week = MARKET_CONFIG["bucket_seconds"]
    if net.expected is not None and all(b.slot.end <= (b.slot.start // week + 1) * week
                                        for name in net.needs for b in nodes[name].app[NODE].market.book.get(ids[name]).bids):
        assert {(p, r): v for (p, r, _), v in live.items()} == net.expected

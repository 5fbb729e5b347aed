"""The round protocol: grants from receipts, the provider's and the recipient's side, the race it
removes, the simulators running exactly these functions, and ITC receive rules on random schedules."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from tests.support.allocation import cap, commitment, need, networks
from hypothesis import given, settings
from hypothesis import strategies as st

import xsc.allocation.roundsim as roundsim
from xsc.allocation import (
    Commitment,
    Outcome,
    Receipt,
    ReceiptEntry,
    Stamp,
    addressed_to,
    compatible,
    compute_allocation,
    grant,
    normalized_weights,
    provider_round,
    receive,
    recipient_round,
    update_damping,
)
from xsc.allocation.core.divide import divide_capped
from xsc.allocation.core.rounds import answered
from xsc.allocation.roundsim import RoundSimulation, simulate_rounds
from xsc.allocation.core.simulate import SimConfig

PROPS = settings(max_examples=60, deadline=None)


def race(n_providers: int = 2, need_units: int = 60):
    providers = [commitment(p, caps=[cap(p, "c", 100)], recognition={"r": 1}) for p in "ab"[:n_providers]]
    r = commitment("r", needs=[need("r", "n", need_units)], recognition={p.participant: 1 for p in providers})
    return providers, r


def test_the_seeds_rule_races_two_providers_for_ever_and_damping_cannot_stop_it():
    """The mechanism behind 925 rounds at 100 x 5: each provider answers the whole residual need
    on the same view, x_a = N - x_b and x_b = N - x_a updated together."""
    providers, r = race()
    net = {c.participant: c for c in (*providers, r)}
    totals = []
    states = {}
    for t in range(8):
        received = {}
        for s in states.values():
            for a in s.slot_allocations:
                received[(a.recipient, a.need_slot)] = received.get((a.recipient, a.need_slot), 0) + a.quantity
        new = {}
        for p in providers:
            mine = sum(a.quantity for a in states[p.participant].slot_allocations) if states else 0
            others = {k: v - mine for k, v in received.items()}
            new[p.participant] = compute_allocation(net[p.participant], net, received=others, now_ms=t)
        states = new
        total = sum(a.quantity for s in states.values() for a in s.slot_allocations)
        totals.append(total)
        # The recipient damps itself: its factor drops, but it is alone in the slot, so its
        # share (and the cap, its whole residual need) does not change.
        net["r"] = update_damping(net["r"], {"n": total}, t * 1_000)
    assert totals == [120, 0, 120, 0, 120, 0, 120, 0]
    assert net["r"].damping_factor < 1


@pytest.mark.parametrize("n_providers", [1, 2])
def test_grants_share_the_gap_and_the_race_settles_at_once(n_providers):
    providers, r = race(n_providers)
    net = {c.participant: c for c in (*providers, r)}
    receipts: dict[str, Receipt] = {}
    states: dict = {}
    history = []
    for t in range(1, 6):
        states = {p.participant: provider_round(net[p.participant], net, receipts, previous=states.get(p.participant),
                                                now_ms=t * 1_000) for p in providers}
        received, wanted = addressed_to("r", states.values())
        net["r"], receipts["r"] = recipient_round(net["r"], received, wanted, t * 1_000, previous=receipts.get("r"))
        history.append(receipts["r"].needs["n"].total)
    # Round 1 only asks; round 2 gives the whole gap, shared; nothing moves after.
    assert history == [0, 60, 60, 60, 60]
    assert all(s.converged for s in states.values())
    assert net["r"].damping_factor == 1
    assert receipts["r"].needs["n"].by_provider == ({"a": 60} if n_providers == 1 else {"a": 30, "b": 30})


entries = st.builds(
    lambda q, parts, wanting: ReceiptEntry(quantity=q, total=sum(parts.values()), by_provider=parts,
                                           wanting=tuple(sorted(wanting))),
    st.integers(0, 200),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 120), max_size=5),
    st.sets(st.sampled_from("abcdefgh"), max_size=6),
)


@PROPS
@given(entries)
def test_grants_of_one_need_slot_never_add_up_beyond_its_quantity(entry):
    caps = {p: grant(p, entry)[1] for p in "abcdefghxyz"}
    if entry.total > entry.quantity:
        # Over-allocated: everybody sheds its proportional part of the excess.
        assert sum(caps.values()) <= entry.quantity
        assert all(caps[p] <= entry.by_provider.get(p, 0) for p in caps)
    else:
        expected = entry.quantity if entry.wanting else entry.total
        assert sum(caps.values()) == expected
        assert all(caps[p] >= entry.by_provider.get(p, 0) for p in caps)
    for p in "xyz":  # neither giving nor asking: no grant
        assert grant(p, entry) == (entry.total, 0)
    assert grant("a", None) == (0, 0)


@PROPS
@given(st.integers(0, 300), st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 80), st.integers(0, 80)),
                                     max_size=8))
def test_divide_capped_never_exceeds_a_cap_and_gives_min_of_total_and_caps(total, raw):
    ks = [k for k, _, _ in raw]
    ms = [m for _, m, _ in raw]
    caps = [min(c, m) for _, m, c in raw]
    units, d, cut = divide_capped(total, ks, ms, caps)
    assert d == sum(k * m for k, m in zip(ks, ms))
    assert all(0 <= u <= c for u, c in zip(units, caps))
    assert sum(units) == min(total, sum(caps))
    for u, c, m, is_cut in zip(units, caps, ms, cut):
        if is_cut:
            assert u == c < m


@PROPS
@given(networks(), st.data())
def test_compute_allocation_respects_caps_and_lists_what_it_wants(net, data):
    provider, peers = net
    keys = [(c.participant, n.id) for c in peers for n in c.need_slots]
    caps = {k: data.draw(st.integers(0, 50)) for k in keys}
    state = compute_allocation(provider, peers, caps=caps)
    got: dict = {}
    for a in state.slot_allocations:
        got[(a.recipient, a.need_slot)] = got.get((a.recipient, a.need_slot), 0) + a.quantity
    for k, units in got.items():
        assert units <= caps[k]
    for k in state.wanted:
        assert got.get(k, 0) == caps[k]  # asked only where the cap stopped it
    assert list(state.wanted) == sorted(state.wanted)
    # Without caps there are no requests (the seed's rule).
    assert compute_allocation(provider, peers).wanted == ()


def test_recipient_round_totals_per_provider_and_sheds_through_damping():
    r = commitment("r", needs=[need("r", "n1", 50), need("r", "n2", 10)])
    damped, receipt = recipient_round(r, {"a": {"n1": 40, "n2": 5}, "b": {"n1": 20}, "c": {"zz": 9}},
                                      {"c": ["n2"], "d": ["n2", "nope"]}, 1_000)
    assert receipt.recipient == "r" and receipt.over_allocation == 10
    assert receipt.needs["n1"] == ReceiptEntry(quantity=50, total=60, by_provider={"a": 40, "b": 20}, wanting=())
    assert receipt.needs["n2"] == ReceiptEntry(quantity=10, total=5, by_provider={"a": 5}, wanting=("c", "d"))
    assert damped.damping_history[-1].over_allocation == 10
    assert r.stamp.leq(receipt.stamp) and not receipt.stamp.leq(r.stamp)
    # Next receipt: after the previous one (receive keeps the newer).
    _, again = recipient_round(damped, {}, {}, 2_000, previous=receipt)
    assert receive(receipt, again) == (again, Outcome.NEW)
    assert receive(again, receipt) == (again, Outcome.STALE)
    # Over-allocated: a keeps 40 * 50 // 60, b 20 * 50 // 60.
    assert grant("a", receipt.needs["n1"]) == (20, 33)
    assert grant("b", receipt.needs["n1"]) == (40, 16)
    assert grant("c", receipt.needs["n2"]) == (5, 3) and grant("d", receipt.needs["n2"]) == (5, 2)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4), st.integers(0, 2**32))
def test_random_networks_never_over_allocate_in_any_round_and_converge_quickly(n, m, seed):
    sim = RoundSimulation(SimConfig(n, m, seed, max_rounds=200))
    result = sim.run()
    assert result.max_over_allocation == 0
    assert all(s.over_allocation == 0 for s in result.timeline)
    assert result.capacity_over_quantity == 0
    assert result.quiet and result.converged
    assert result.rounds_run <= 40  # worst seen: 15
    assert result.allocated + result.unmet_need == result.total_need
    # Quiet means settled: no provider keeps capacity back from a recipient it recognises whose
    # compatible need still has a gap (it would have asked, and been granted).
    for pid, state in sim.states.items():
        provider = sim.published[pid]
        recognised = normalized_weights(provider)
        for c in provider.capacity_slots:
            if not state.unallocated[c.id]:
                continue
            for r in recognised:
                other = sim.published.get(r)
                if other is None or r == pid:
                    continue
                for n in other.need_slots:
                    if compatible(c, n) and n.quantity:
                        entry = sim.receipts[r].needs[n.id]
                        assert entry.total >= entry.quantity, (pid, c.id, r, n.id)


def test_the_simulators_run_exactly_the_round_functions(monkeypatch):
    calls = {"provider": 0, "recipient": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(roundsim, "provider_round", counted("provider", roundsim.provider_round))
    monkeypatch.setattr(roundsim, "recipient_round", counted("recipient", roundsim.recipient_round))
    result = simulate_rounds(15, 3, 7)
    assert calls["provider"] == result.computations > 0
    assert calls["recipient"] > 0
    events = importlib.import_module("xsc.allocation.core.simulate")  # (the package's `simulate` is the function)
    monkeypatch.setattr(events, "provider_round", counted("provider", events.provider_round))
    before = calls["provider"]
    r = events.simulate(6, 2, 3)
    assert calls["provider"] - before == r.computations


@pytest.mark.slow
def test_a_process_pool_gives_the_same_run_as_one_process():
    sim_one = RoundSimulation(SimConfig(60, 4, 11, traffic=True))
    sim_two = RoundSimulation(SimConfig(60, 4, 11, traffic=True, workers=2))
    one, two = sim_one.run(), sim_two.run()
    key = [(s.round, s.converged_fraction, s.delta, s.delta_mean, s.over_allocation, s.changed, s.bytes_per_node)
           for s in one.timeline]
    assert key == [(s.round, s.converged_fraction, s.delta, s.delta_mean, s.over_allocation, s.changed,
                    s.bytes_per_node) for s in two.timeline]
    assert (one.allocated, one.rounds, one.unmet_need, one.recipients_mean) == \
        (two.allocated, two.rounds, two.unmet_need, two.recipients_mean)
    # The workers run the recipients too: the same receipts, stamps included, and commitments.
    assert {r: (x.needs, x.stamp, x.damping_factor) for r, x in sim_one.receipts.items()} == \
        {r: (x.needs, x.stamp, x.damping_factor) for r, x in sim_two.receipts.items()}
    assert sim_one.published == sim_two.published


def test_traffic_follows_recognised_peers_not_network_size():
    def bytes_first_round(n, peers):
        r = simulate_rounds(n, 4, 3, peers=peers, traffic=True, max_rounds=1)
        return r.timeline[0].bytes_per_node

    few, many = bytes_first_round(120, 2), bytes_first_round(120, 12)
    small, large = bytes_first_round(60, 6), bytes_first_round(240, 6)
    assert many > 2 * few
    assert 0.6 < large / small < 1.6


# --- ITC: receive() across random fork / event / join / delivery schedules ----------------------

ops = st.lists(st.tuples(st.sampled_from(["fork", "event", "join", "deliver"]), st.integers(0, 7), st.integers(0, 7)),
               min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_receive_follows_the_itc_rules_on_random_schedules(schedule):
    """Replicas of one participant fork, publish (event) and learn from each other (join); an
    observer gets published copies in any order.  Ground truth: the set of publication events
    each copy has seen.  receive() must call a copy stale when the held one saw all it saw,
    newer when it saw all the held one saw, and merge the others into a copy after both."""
    replicas = [(Stamp.seed(), frozenset())]  # (stamp, events seen)
    published: list[tuple[Commitment, frozenset]] = []
    held: tuple[Commitment, frozenset] | None = None
    counter = 0
    for op, i, j in schedule:
        i %= len(replicas)
        j %= len(replicas)
        stamp, seen = replicas[i]
        if op == "fork" and len(replicas) < 8:
            left, right = stamp.fork()
            replicas[i] = (left, seen)
            replicas.append((right, seen))
        elif op == "event":
            counter += 1
            stamp, seen = stamp.event(), seen | {counter}
            replicas[i] = (stamp, seen)
            published.append((Commitment(participant="a", stamp=stamp, timestamp=counter,
                                         recognition={"b": Decimal(counter)}), seen))
        elif op == "join" and i != j:
            other, other_seen = replicas[j]
            replicas[i] = (stamp.join(other.peek()), seen | other_seen)
        elif op == "deliver" and published:
            incoming, inc_seen = published[(i * 8 + j) % len(published)]
            if held is None:
                value, outcome = receive(None, incoming)
                assert outcome is Outcome.NEW and value is incoming
                held = (value, inc_seen)
                continue
            value, outcome = receive(held[0], incoming)
            if inc_seen <= held[1]:
                assert outcome is Outcome.STALE and value is held[0]
            elif held[1] <= inc_seen:
                assert outcome is Outcome.NEW and value is incoming
                held = (value, inc_seen)
            else:
                assert outcome is Outcome.MERGED
                winner = max((held[0], incoming), key=lambda v: (v.timestamp, v.stamp.encode()))
                assert value.recognition == winner.recognition
                assert held[0].stamp.leq(value.stamp) and incoming.stamp.leq(value.stamp)
                held = (value, held[1] | inc_seen)
                # Replaying either side afterwards is stale.
                assert receive(value, incoming)[1] is Outcome.STALE
        # The stamps tell causality exactly as the event sets do.
        for s1, e1 in replicas:
            for s2, e2 in replicas:
                assert s1.leq(s2) == (e1 <= e2)


def test_a_receipt_answers_the_provider_state_it_was_computed_from() -> None:
    """`answered`: a provider's state is answered by a receipt whose part and request of that provider are the
    state's (what a node waits for before its provider side computes again; docs/allocation.md, "Rounds in
    step")."""
    r = commitment("r", needs=[need("r", "n1", 50), need("r", "n2", 10)], recognition={"a": 1, "b": 1})
    state_1 = (("c", "r", "n1", 30, 1),), (("r", "n1"),)  # (allocations, wanted) of a
    state_2 = (("c", "r", "n1", 40, 1), ("c", "r", "n2", 5, 1)), ()

    def receipt_of(allocations, wanted, others=None):
        received, asks = {"a": {}}, {}
        for _c, _r, n, q, _t in allocations:
            received["a"][n] = received["a"].get(n, 0) + q
        if wanted:
            asks["a"] = [n for _r, n in wanted]
        received.update(others or {})
        return recipient_round(r, received, asks, 1_000)[1]

    assert answered("a", *state_1, {"r": receipt_of(*state_1)})
    assert answered("a", *state_2, {"r": receipt_of(*state_2, others={"b": {"n1": 10}})})  # others' parts: any
    assert not answered("a", *state_2, {"r": receipt_of(*state_1)})  # the receipt answers the state before
    assert not answered("a", *state_1, {"r": receipt_of(*state_2)})
    assert answered("a", *state_2, {})  # no receipt yet: nothing to wait for

"""Properties of compute_allocation over random networks (hypothesis)."""

from __future__ import annotations

import random
from decimal import Decimal

from tests.support.allocation import PEERS, cap, commitment, need, networks, weights
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import (
    compatible,
    compute_allocation,
    mutual_recognition,
    normalized_weights,
    water_fill,
)

PROPS = settings(max_examples=50, deadline=None)


def used_per_slot(state):
    used = {}
    for a in state.slot_allocations:
        used[a.capacity_slot] = used.get(a.capacity_slot, 0) + a.quantity
    return used


def per_need(state):
    got = {}
    for a in state.slot_allocations:
        got[(a.recipient, a.need_slot)] = got.get((a.recipient, a.need_slot), 0) + a.quantity
    return got


def residual_received(data, peers):
    """A random 'received from other providers' map over the peers' need slots."""
    return {(c.participant, n.id): data.draw(st.integers(0, n.quantity + 5)) for c in peers for n in c.need_slots}


@PROPS
@given(networks(), st.data())
def test_no_capacity_slot_is_allocated_beyond_its_quantity(net, data):
    provider, peers = net
    state = compute_allocation(provider, peers, received=residual_received(data, peers))
    used = used_per_slot(state)
    for c in provider.capacity_slots:
        assert used.get(c.id, 0) <= c.quantity
        # Every unit is either given or reported as open-tier capacity, exactly.
        assert used.get(c.id, 0) + state.unallocated[c.id] == c.quantity
    assert all(a.quantity > 0 for a in state.slot_allocations)


@PROPS
@given(networks(), st.data())
def test_a_provider_never_allocates_a_recipient_beyond_its_need(net, data):
    provider, peers = net
    received = residual_received(data, peers)
    state = compute_allocation(provider, peers, received=received)
    got = per_need(state)
    for c in peers:
        for n in c.need_slots:
            assert got.get((c.participant, n.id), 0) <= max(0, n.quantity - received[(c.participant, n.id)])
    for r, kinds in state.recipient_totals.items():
        for kind, units in kinds.items():
            assert units == sum(a.quantity for a in state.slot_allocations
                                if a.recipient == r and a.need_slot in
                                {n.id for c in peers if c.participant == r for n in c.need_slots if n.kind == kind})


@PROPS
@given(networks(max_caps=1), st.data())
def test_one_slot_allocates_min_of_capacity_and_compatible_recognised_needs(net, data):
    provider, peers = net
    received = residual_received(data, peers)
    state = compute_allocation(provider, peers, received=received)
    (c,) = provider.capacity_slots
    recognised = normalized_weights(provider)
    demand = sum(max(0, n.quantity - received[(r.participant, n.id)])
                 for r in peers if recognised.get(r.participant, 0) > 0
                 for n in r.need_slots if compatible(c, n))
    assert sum(a.quantity for a in state.slot_allocations) == min(c.quantity, demand)


@PROPS
@given(networks(simple=True, max_caps=3), st.data())
def test_one_provider_many_compatible_slots_allocates_min_of_capacity_and_needs(net, data):
    provider, peers = net
    state = compute_allocation(provider, peers)
    recognised = normalized_weights(provider)
    demand = sum(n.quantity for r in peers if recognised.get(r.participant, 0) > 0 for n in r.need_slots)
    capacity = sum(c.quantity for c in provider.capacity_slots)
    assert sum(a.quantity for a in state.slot_allocations) == min(capacity, demand)


@PROPS
@given(networks())
def test_tier_1_is_served_before_tier_2(net):
    provider, peers = net
    state = compute_allocation(provider, peers)
    remaining = {(r.participant, n.id): n.quantity for r in peers for n in r.need_slots}
    needs = {(r.participant, n.id): n for r in peers for n in r.need_slots}
    mutual = {r.participant for r in peers if mutual_recognition(provider, r) > 0}
    for c in sorted(provider.capacity_slots, key=lambda s: (s.kind, s.start, s.end, s.id)):
        mine = [a for a in state.slot_allocations if a.capacity_slot == c.id]
        for a in mine:
            assert a.tier == (1 if a.recipient in mutual else 2)
            remaining[(a.recipient, a.need_slot)] -= a.quantity
        if any(a.tier == 2 for a in mine):
            # Tier 2 got something from c: no mutual peer still needs anything c could serve.
            for key, n in needs.items():
                if key[0] in mutual and compatible(c, n):
                    assert remaining[key] == 0


@PROPS
@given(networks())
def test_zero_recognition_gets_nothing(net):
    provider, peers = net
    state = compute_allocation(provider, peers)
    recognised = normalized_weights(provider)
    for a in state.slot_allocations:
        assert recognised.get(a.recipient, 0) > 0


@PROPS
@given(weights, weights, st.sampled_from(PEERS))
def test_mutual_recognition_is_symmetric_and_the_min_of_normalised_weights(wa, wb, other):
    a = commitment("p", recognition=wa)
    b = commitment(other, recognition=wb)
    mr = mutual_recognition(a, b)
    assert mr == mutual_recognition(b, a)
    assert mr == min(normalized_weights(a).get(other, 0), normalized_weights(b).get("p", 0))
    assert 0 <= mr <= 1
    total = sum(normalized_weights(a).values())
    assert total in (0, 1)


@PROPS
@given(networks())
def test_incompatible_slots_never_match(net):
    provider, peers = net
    state = compute_allocation(provider, peers)
    caps = {c.id: c for c in provider.capacity_slots}
    needs = {(r.participant, n.id): n for r in peers for n in r.need_slots}
    for a in state.slot_allocations:
        assert compatible(caps[a.capacity_slot], needs[(a.recipient, a.need_slot)])


@PROPS
@given(networks(), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_input_order(net, rnd: random.Random):
    provider, peers = net
    first = compute_allocation(provider, peers)

    def shuffled(items):
        items = list(items)
        rnd.shuffle(items)
        return items

    provider2 = provider.model_copy(update={
        "capacity_slots": tuple(shuffled(provider.capacity_slots)),
        "recognition": dict(shuffled(provider.recognition.items())),
    })
    peers2 = [r.model_copy(update={"need_slots": tuple(shuffled(r.need_slots)),
                                   "recognition": dict(shuffled(r.recognition.items()))})
              for r in shuffled(peers)]
    second = compute_allocation(provider2, {r.participant: r for r in peers2})
    assert second.model_dump(mode="json") == first.model_dump(mode="json")


@PROPS
@given(st.integers(0, 500),
       st.lists(st.tuples(st.integers(1, 10**20), st.integers(1, 100)), min_size=1, max_size=8))
def test_water_fill_gives_min_of_total_and_needs_never_beyond_a_need(total, raw):
    claims = [(f"r{i}", k, m) for i, (k, m) in enumerate(raw)]
    given_, d = water_fill(total, claims)
    assert d == sum(k * m for _, k, m in claims)
    assert sum(given_.values()) == min(total, sum(m for _, _, m in claims))
    needs = {r: m for r, _, m in claims}
    assert all(0 < q <= needs[r] for r, q in given_.items())
    # Uncapped recipients are within one unit of their exact proportional share of what the
    # capped ones left.
    capped = {r for r, q in given_.items() if q == needs[r]}
    rest = [(r, k, m) for r, k, m in claims if r not in capped]
    left = total - sum(needs[r] for r in capped)
    denom = sum(k * m for _, k, m in rest)
    for r, k, m in rest:
        ideal = Decimal(left * k * m) / Decimal(denom)
        assert abs(given_.get(r, 0) - ideal) < 1


def test_capacity_slot_serves_a_recipient_across_its_need_slots_in_window_order():
    provider = commitment("p", caps=[cap("p", "c", 50)], recognition={"a": 1})
    a = commitment("a", needs=[need("a", "late", 40, start=5, end=9), need("a", "early", 40, start=0, end=4)],
                   recognition={"p": 1})
    state = compute_allocation(provider, [a])
    assert [(x.need_slot, x.quantity) for x in state.slot_allocations] == [("early", 40), ("late", 10)]

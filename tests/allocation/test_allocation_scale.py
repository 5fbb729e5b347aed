"""The speed work for scale changes how the rounds are computed, never what they give:
grants computed only for the need slots a provider matches equal the eager `provider_view`;
weights as integer ratios equal the normalised Fractions; an event on a one-interval ITC id
computed as a loop equals fill-then-grow; the recipient's side built without model_construct
equals the models pydantic builds."""

from __future__ import annotations

import gc
import hashlib
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import Stamp, compute_allocation, normalized_weights, provider_round, provider_view
from xsc.allocation import roundsim
from xsc.allocation.core.compute import next_stamp, stamped_after
from xsc.itc import _event_on_path, _fill, _grow, _path_of
from xsc.allocation.core.models import Commitment
from xsc.allocation.core.recognition import weight_ratios
from xsc.allocation.roundsim import RoundSimulation
from xsc.allocation.core.simulate import SimConfig

PROPS = settings(max_examples=25, deadline=None)


def _fields(state) -> dict:
    return {name: getattr(state, name) for name in type(state).model_fields}


@PROPS
@given(st.integers(3, 40), st.integers(1, 5), st.integers(0, 2**32), st.integers(1, 4))
def test_provider_round_gives_what_compute_allocation_gives_on_the_eager_view(n, m, seed, rounds):
    """On random networks after a few rounds (receipts with parts, requests, gaps): the lazy
    grants of provider_round give the same state, field by field, as compute_allocation on
    provider_view's two dicts."""
    sim = RoundSimulation(SimConfig(n, m, seed, max_rounds=rounds))
    sim.run()
    network, receipts = sim.published, sim.receipts
    for pid, previous in sim.states.items():
        provider = network[pid]
        lazy = provider_round(provider, network, receipts, previous=previous, now_ms=99_000)
        received, caps = provider_view(provider, network, receipts)
        eager = compute_allocation(provider, network, received=received, caps=caps, previous=previous, now_ms=99_000)
        assert _fields(lazy) == _fields(eager)
        assert lazy.model_dump(mode="json") == eager.model_dump(mode="json")


weights = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "me"]),
                          st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False), max_size=5)


@settings(max_examples=200, deadline=None)
@given(weights)
def test_weight_ratios_are_the_normalised_weights(raw):
    c = Commitment(participant="me", recognition=raw, stamp=Stamp.seed(), timestamp=0)
    ratios = weight_ratios(c)
    assert {r: Fraction(x, total) for r, (x, total) in ratios.items()} == normalized_weights(c)
    # Copies with a new damping factor share the recognition dict, and the ratios.
    assert weight_ratios(c.model_copy(update={"damping_factor": Decimal("0.5")})) is ratios


schedules = st.lists(st.tuples(st.sampled_from(["fork", "event", "join"]), st.integers(0, 15), st.integers(0, 15)),
                     max_size=60)


@settings(max_examples=200, deadline=None)
@given(schedules)
def test_an_event_on_a_path_id_is_fill_then_grow(schedule):
    stamps = [Stamp.seed()]
    for op, i, j in schedule:
        s = stamps[i % len(stamps)]
        if op == "fork" and len(stamps) < 16:
            stamps[i % len(stamps)], right = s.fork()
            stamps.append(right)
        elif op == "event":
            stamps[i % len(stamps)] = s.event()
        else:
            stamps[i % len(stamps)] = s.join(stamps[j % len(stamps)].peek())
        for t in stamps:
            path = _path_of(t.id)
            if path is None:
                continue
            filled = _fill(t.id, t.event_tree)
            expected = _grow(t.id, t.event_tree)[0] if filled is t.event_tree else filled
            assert _event_on_path(path, t.event_tree) == expected
            assert t.event().event_tree == expected


@settings(max_examples=200, deadline=None)
@given(schedules)
def test_a_record_after_the_same_own_stamp_is_stamped_as_the_join_would(schedule):
    """`next_stamp` skips the join when the previous record was made after the same own stamp
    (`stamped_after`): the stamp is what joining and then an event give, whatever happened to
    the own stamp and to the others' meanwhile."""
    stamps = [Stamp.seed()]
    previous: list = [None] * 16
    for op, i, j in schedule:
        k = i % len(stamps)
        s = stamps[k]
        if op == "fork" and len(stamps) < 16:
            stamps[k], right = s.fork()
            stamps.append(right)
        elif op == "event":
            stamps[k] = s.event()
        elif j % 3 == 0:  # a record stamped from elsewhere (not after this own stamp)
            previous[k] = _Record(s.join(stamps[j % len(stamps)].peek()).event())
        else:
            before = previous[k]
            expected = s.event() if before is None else s.join(before.stamp.peek()).event()
            record = _Record(next_stamp(s, before))
            assert record.stamp == expected
            assert record.stamp.encode() == expected.encode()
            stamped_after(record, s)
            previous[k] = record


class _Record:
    def __init__(self, stamp: Stamp) -> None:
        self.stamp = stamp


def test_the_rounds_make_no_reference_cycles(collector_paused):
    """The rounds simulator's workers run without the cyclic garbage collector (reference counting
    frees everything): one run leaves nothing for it to find."""
    gc.collect()
    gc.disable()
    try:
        RoundSimulation(SimConfig(60, 4, 3, max_rounds=30)).run()
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0


def _state_text(s) -> str:
    return repr((s.provider, sorted((k, str(v.mutual), str(v.non_mutual)) for k, v in s.slot_denominators.items()),
                 [(a.capacity_slot, a.need_slot, a.recipient, a.quantity, a.tier) for a in s.slot_allocations],
                 sorted(s.unallocated.items()), sorted((r, sorted(k.items())) for r, k in s.recipient_totals.items()),
                 s.converged, [(str(c.delta), c.timestamp) for c in s.convergence_history],
                 s.stamp.encode().hex(), s.timestamp, s.wanted))


def _receipt_text(c, r) -> str:
    return repr((c.participant, str(c.damping_factor), [(d.over_allocation, d.timestamp) for d in c.damping_history],
                 c.stamp.encode().hex(), r.recipient, str(r.damping_factor), r.over_allocation, r.stamp.encode().hex(),
                 r.timestamp, sorted((k, e.quantity, e.total, sorted(e.by_provider.items()), e.wanting)
                                     for k, e in r.needs.items())))


@pytest.mark.parametrize(("n", "m", "seed", "rounds", "digest"), [
    (40, 3, 1, 7, "b8cffc339238cda3d94ca0cf5873c50b"),
    (120, 5, 2, 18, "ac9694845121f4105c5b3be4c915835a"),
])
def test_every_state_and_receipt_of_seeded_runs_is_what_it_was_before_the_speed_work(monkeypatch, n, m, seed, rounds,
                                                                                       digest):
    """Each state and receipt of every round (allocations, requests, denominators, convergence, ITC stamps,
    damping) of two seeded runs, hashed, against the hashes the code gave before the second speed work
    (the cycle-free view, divide_capped sorting only when a claim is capped, the stamps' skipped joins)."""
    h = hashlib.sha256()
    provider_round, recipient_round = roundsim.provider_round, roundsim.recipient_round

    def hashed_provider_round(*args, **kwargs):
        state = provider_round(*args, **kwargs)
        h.update(_state_text(state).encode())
        return state

    def hashed_recipient_round(*args, **kwargs):
        commitment, receipt = recipient_round(*args, **kwargs)
        h.update(_receipt_text(commitment, receipt).encode())
        return commitment, receipt

    monkeypatch.setattr(roundsim, "provider_round", hashed_provider_round)
    monkeypatch.setattr(roundsim, "recipient_round", hashed_recipient_round)
    result = RoundSimulation(SimConfig(n, m, seed, max_rounds=200)).run()
    h.update(repr([(t.round, t.converged_fraction, t.delta, t.over_allocation, t.changed)
                   for t in result.timeline]).encode())
    assert (result.rounds_run, h.hexdigest()[:32]) == (rounds, digest)

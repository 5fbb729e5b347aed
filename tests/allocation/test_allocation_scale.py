"""The speed work for scale (issue 13) changes how the rounds are computed, never what they give:
grants computed only for the need slots a provider matches equal the eager `provider_view`;
weights as integer ratios equal the normalised Fractions; an event on a one-interval ITC id
computed as a loop equals fill-then-grow; the recipient's side built without model_construct
equals the models pydantic builds."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import Stamp, compute_allocation, normalized_weights, provider_round, provider_view
from xsc.allocation.itc import _event_on_path, _fill, _grow, _path_of
from xsc.allocation.models import Commitment
from xsc.allocation.recognition import weight_ratios
from xsc.allocation.roundsim import RoundSimulation
from xsc.allocation.simulate import SimConfig

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

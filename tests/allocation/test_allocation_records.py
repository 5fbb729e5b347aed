"""Held allocation records: whatever order a node receives one publisher's records in, it ends holding the same
record, and a replay of any of them is stale afterwards."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from xsc.allocation import AllocationState, Stamp
from xsc.allocation.core.causality import Outcome
from xsc.allocation.core.records import Held, sign_state
from xsc.identity import Identity

ME = Identity.generate()


def _records(schedule: list[int]) -> list:
    """Records of one publisher whose stamps follow `schedule`: 0 = an event on the main line, 1 = an event on a
    branch forked from it (a restarted node with an old copy of its id), joined back now and then."""
    main, branch = Stamp.seed().fork()
    out = []
    empty = AllocationState.model_construct(provider=ME.id, slot_allocations=(), wanted=(), converged=True,
                                            convergence_history=())
    for i, step in enumerate(schedule):
        if step == 0:
            main = main.event()
            stamp = main
        elif step == 1:
            branch = branch.event()
            stamp = branch
        else:
            main = main.join(branch.peek()).event()
            stamp = main
        out.append(sign_state(ME, empty, stamp=stamp, timestamp=1_000 + i))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_any_order_of_delivery_ends_with_the_same_record_and_replays_are_stale(schedule, rnd) -> None:
    records = _records(schedule)
    shuffled = records[:]
    rnd.shuffle(shuffled)
    a, b = Held(), Held()
    for r in records:
        a.receive(r)
    for r in shuffled:
        b.receive(r)
    assert a.get(ME.id) == b.get(ME.id)
    assert a.seen(ME.id).peek() == b.seen(ME.id).peek()
    for r in records:
        assert b.receive(r) is Outcome.STALE

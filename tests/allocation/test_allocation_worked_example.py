"""The worked example of docs/allocation.md, computed by hand there and by the code here."""

from __future__ import annotations

from decimal import Decimal

from tests.support.allocation import cap, need

from xsc.allocation import Commitment, Stamp, compute_allocation


def c(pid, **kw):
    return Commitment(participant=pid, stamp=Stamp.seed(), timestamp=0, **kw)


def test_worked_example_matches_the_docs():
    pat = c("pat", capacity_slots=[cap("pat", "s1", 100, 0, 10), cap("pat", "s2", 60, 10, 20)],
            recognition={"alice": 3, "bob": 1, "carol": 1, "erin": 1})
    alice = c("alice", need_slots=[need("alice", "a1", 40, 0, 10)], recognition={"pat": 1})
    bob = c("bob", need_slots=[need("bob", "b1", 100, 0, 10)], recognition={"pat": 2},
            damping_factor=Decimal("0.5"))
    erin = c("erin", need_slots=[need("erin", "e1", 50, 0, 10)], recognition={"pat": 1, "alice": 1})
    carol = c("carol", need_slots=[need("carol", "c1", 30, 5, 15)])
    frank = c("frank", need_slots=[need("frank", "f1", 50, 0, 20)], recognition={"pat": 5})
    state = compute_allocation(pat, [alice, bob, erin, carol, frank], received={("bob", "b1"): 20})

    got = [(a.capacity_slot, a.recipient, a.quantity, a.tier) for a in state.slot_allocations]
    assert got == [("s1", "alice", 40, 1), ("s1", "bob", 27, 1), ("s1", "erin", 33, 1), ("s2", "carol", 30, 2)]
    assert state.unallocated == {"s1": 0, "s2": 30}
    assert state.slot_denominators["s1"].mutual == Decimal(42)
    assert state.slot_denominators["s1"].non_mutual == Decimal(30)
    assert state.slot_denominators["s2"].mutual == 0
    assert state.slot_denominators["s2"].non_mutual == Decimal(30)
    assert "frank" not in state.recipient_totals

"""The allocator's models: what they refuse, and that they travel as JSON."""

from __future__ import annotations

import pytest
from tests.support.allocation import cap, commitment, need
from pydantic import ValidationError

from xsc.allocation import (
    AllocationState,
    Commitment,
    ReceivedIndex,
    compatible,
    compute_allocation,
    network_converged,
)
from xsc.allocation.core.models import SlotFilter
from xsc.errors import InvalidCommitment


@pytest.mark.parametrize("kwargs, message", [
    ({"start": 5, "end": 5}, "must end after it starts"),
    ({"quantity": -1}, "greater than or equal to 0"),
    ({"quantity": True}, "valid integer"),
    ({"quantity": 1.5}, "valid integer"),
    ({"location": ()}, "at least one"),
    ({"location": ""}, "non-empty"),
    ({"kind": "Storage!"}, "pattern"),
])
def test_bad_slots_are_refused(kwargs, message):
    fields = {"id": "n", "owner": "a", "kind": "storage", "quantity": 1, "start": 0, "end": 10, **kwargs}
    with pytest.raises(ValidationError, match=message):
        need(**{"owner": fields.pop("owner"), "sid": fields.pop("id"), "q": fields.pop("quantity"), **fields})


def test_commitments_only_hold_their_own_uniquely_named_slots():
    with pytest.raises(ValidationError, match="owned by 'b'"):
        commitment("a", needs=[need("b", "n", 1)])
    with pytest.raises(ValidationError, match="share the id"):
        commitment("a", caps=[cap("a", "c", 1), cap("a", "c", 2)])
    with pytest.raises(ValidationError):
        commitment("a", damping="0")
    with pytest.raises(ValidationError):
        commitment("a", recognition={"b": -1})


def test_commitment_and_state_round_trip_through_json():
    c = commitment("a", caps=[cap("a", "c", 7, location=("eu", "us"))], needs=[need("a", "n", 3)],
                   recognition={"b": 2}, damping="0.8")
    assert Commitment.model_validate_json(c.model_dump_json()) == c
    p = commitment("p", caps=[cap("p", "c", 10)], recognition={"a": 1})
    s = compute_allocation(p, [commitment("a", needs=[need("a", "n", 4)], recognition={"p": 1})])
    again = AllocationState.model_validate_json(s.model_dump_json())
    assert again == AllocationState.model_validate(s.model_dump())
    assert again.slot_allocations == s.slot_allocations and again.stamp == s.stamp


def test_network_snapshots_are_checked():
    p = commitment("p", caps=[cap("p", "c", 10)], recognition={"a": 1})
    a = commitment("a", needs=[need("a", "n", 4)])
    with pytest.raises(InvalidCommitment, match="two commitments"):
        compute_allocation(p, [a, a])
    with pytest.raises(InvalidCommitment, match="'b'.s commitment under 'a'"):
        compute_allocation(p, {"a": commitment("b", needs=[need("b", "n", 4)])})
    other = compute_allocation(commitment("q"), [])
    with pytest.raises(InvalidCommitment, match="previous state"):
        compute_allocation(p, [a], previous=other)


@pytest.mark.parametrize("c_kw, n_kw, ok", [
    ({}, {}, True),
    ({"kind": "compute"}, {}, False),
    ({"start": 10, "end": 20}, {"start": 0, "end": 10}, False),   # touching windows do not overlap
    ({"start": 9, "end": 20}, {"start": 0, "end": 10}, True),
    ({"location": "eu"}, {"location": "us"}, False),
    ({"location": "eu"}, {"location": ("us", "eu")}, True),
    ({"location": "eu"}, {"location": "any"}, True),
    ({"location": "any"}, {"location": "asia"}, True),
    ({}, {"filters": SlotFilter(allow=("q",))}, False),
    ({}, {"filters": SlotFilter(allow=("p",))}, True),
    ({}, {"filters": SlotFilter(deny=("p",))}, False),
    ({}, {"filters": SlotFilter(require_tags=("ssd",))}, False),
    ({"tags": ("ssd",)}, {"filters": SlotFilter(require_tags=("ssd",))}, True),
    ({"filters": SlotFilter(deny=("a",))}, {}, False),
    ({"filters": SlotFilter(require_tags=("gpu",))}, {"tags": ("gpu",)}, True),
])
def test_compatibility_rule(c_kw, n_kw, ok):
    assert compatible(cap("p", "c", 1, **c_kw), need("a", "n", 1, **n_kw)) is ok


def test_convergence_of_a_provider_and_of_the_network():
    p = commitment("p", caps=[cap("p", "c", 10), cap("p", "d", 10, kind="compute")], recognition={"a": 1, "b": 1})
    a = commitment("a", needs=[need("a", "n", 4)], recognition={"p": 1})
    b = commitment("b", needs=[need("b", "n", 30)])
    s1 = compute_allocation(p, [a, b])
    assert not s1.converged and s1.convergence_history == ()
    s2 = compute_allocation(p, [a, b], previous=s1, now_ms=2_000)
    assert s2.converged and s2.convergence_history[-1].delta == 0
    # b now recognises p: c's tier-1 denominator appears, tier 2 empties -> relative move 1.
    b2 = b.model_copy(update={"recognition": {"p": 1}})
    s3 = compute_allocation(p, [a, b2], previous=s2, now_ms=3_000)
    assert not s3.converged and s3.convergence_history[-1].delta == 1
    # A tiny change of need moves the denominator by less than 0.001: converged.
    b3 = b2.model_copy(update={"need_slots": (need("b", "n", 30_000),)})
    b4 = b2.model_copy(update={"need_slots": (need("b", "n", 30_001),)})
    s4 = compute_allocation(p, [a, b3], previous=s3)
    s5 = compute_allocation(p, [a, b4], previous=s4)
    assert s5.converged and 0 < s5.convergence_history[-1].delta <= 0.001
    history = s5
    for i in range(15):
        history = compute_allocation(p, [a, b4], previous=history, now_ms=i)
    assert len(history.convergence_history) == 10
    yes, no = s2, s1
    assert network_converged([yes, yes, yes, yes, no])          # 80%
    assert not network_converged([yes, yes, yes, no, no])       # 60%
    assert not network_converged({"p": yes, "q": None})
    assert not network_converged([])


def test_received_from_other_providers_shrinks_the_residual_need():
    p = commitment("p", caps=[cap("p", "c", 100)], recognition={"a": 1})
    q = commitment("q", caps=[cap("q", "c", 100)], recognition={"a": 1})
    a = commitment("a", needs=[need("a", "n", 50)], recognition={"p": 1, "q": 1})
    sp = compute_allocation(p, [a, q])
    sq = compute_allocation(q, [a, p], received=ReceivedIndex([sp]).excluding("q"))
    assert sum(x.quantity for x in sp.slot_allocations) == 50
    assert sq.slot_allocations == ()
    index = ReceivedIndex([sp, sq])
    assert index.excluding("p").get(("a", "n")) == 0
    assert index.of_recipient("a") == {"n": 50}
    # p, recomputing, does not count its own last answer against a's need.
    again = compute_allocation(p, [a, q], received=index.excluding("p"), previous=sp)
    assert again.slot_allocations == sp.slot_allocations and again.converged

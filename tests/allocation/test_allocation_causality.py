"""Accepting peers' commitments and states by their ITC stamps."""

from __future__ import annotations

import pytest
from tests.support.allocation import cap, commitment

from xsc.allocation import Commitment, Outcome, Stamp, compute_allocation, receive
from xsc.errors import InvalidCommitment


def test_newer_replaces_older_is_stale_equal_is_stale():
    first = commitment("a")
    second = first.model_copy(update={"stamp": first.stamp.event(), "timestamp": 2_000})
    assert receive(None, first) == (first, Outcome.NEW)
    assert receive(first, second) == (second, Outcome.NEW)
    assert receive(second, first) == (second, Outcome.STALE)      # overtaken in flight
    assert receive(second, second) == (second, Outcome.STALE)     # replayed


def test_concurrent_copies_merge_commutatively_and_later_replays_are_stale():
    x, y = Stamp.seed().fork()  # e.g. one participant on two devices
    left = Commitment(participant="a", stamp=x.event(), timestamp=5, recognition={"b": 1})
    right = Commitment(participant="a", stamp=y.event(), timestamp=7, recognition={"c": 1})
    assert left.stamp.concurrent(right.stamp)
    m1, o1 = receive(left, right)
    m2, o2 = receive(right, left)
    assert o1 is o2 is Outcome.MERGED
    assert m1 == m2
    assert m1.recognition == right.recognition  # the later timestamp wins the content
    assert left.stamp.leq(m1.stamp) and right.stamp.leq(m1.stamp)
    assert receive(m1, left)[1] is Outcome.STALE
    assert receive(m1, right)[1] is Outcome.STALE


def test_allocation_states_are_received_the_same_way():
    p = commitment("p", caps=[cap("p", "c", 5)])
    s1 = compute_allocation(p, [])
    s2 = compute_allocation(p, [], previous=s1)
    assert s1.stamp.leq(s2.stamp) and not s2.stamp.leq(s1.stamp)
    assert p.stamp.leq(s1.stamp) and not s1.stamp.leq(p.stamp)
    assert receive(s2, s1) == (s2, Outcome.STALE)
    assert receive(s1, s2) == (s2, Outcome.NEW)


def test_updates_of_another_participant_are_refused():
    with pytest.raises(InvalidCommitment):
        receive(commitment("a"), commitment("b"))

"""Accepting commitments and allocation states from peers by their Interval Tree Clock stamps.

A copy received from a peer is compared with the one already held for that peer:
  - incoming.stamp <= held.stamp (older or equal): stale, ignored;
  - held.stamp <= incoming.stamp: newer, replaces the held one;
  - concurrent: merged.  The value kept is the one with the larger (timestamp, encoded stamp) --
    a rule both sides apply alike, so merging is commutative -- and its stamp becomes
    join(kept.stamp, peek(other.stamp)): it is then after both, and a later replay of either is
    stale.  (peek drops the other's id, so the join never has to add two ids that overlap.)
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from ...errors import InvalidCommitment
from .models import AllocationState, Commitment
from .rounds import Receipt

T = TypeVar("T", Commitment, AllocationState, Receipt)


class Outcome(str, Enum):
    NEW = "new"
    STALE = "stale"
    MERGED = "merged"


def _owner(value: Commitment | AllocationState | Receipt) -> str:
    if isinstance(value, Commitment):
        return value.participant
    return value.recipient if isinstance(value, Receipt) else value.provider


def receive(held: T | None, incoming: T) -> tuple[T, Outcome]:
    """The value to hold after `incoming` arrives, and what happened to it."""
    if held is None:
        return incoming, Outcome.NEW
    if type(held) is not type(incoming) or _owner(held) != _owner(incoming):
        raise InvalidCommitment(f"cannot merge {_owner(incoming)!r}'s update into {_owner(held)!r}'s")
    if incoming.stamp.leq(held.stamp):
        return held, Outcome.STALE
    if held.stamp.leq(incoming.stamp):
        return incoming, Outcome.NEW
    keep, other = sorted((held, incoming), key=lambda v: (v.timestamp, v.stamp.encode()))[::-1]
    return keep.model_copy(update={"stamp": keep.stamp.join(other.stamp.peek())}), Outcome.MERGED

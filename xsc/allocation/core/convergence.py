"""When a provider, and the network, have stopped moving."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable, Mapping

from .models import AllocationState, SlotDenominator

CONVERGENCE_EPSILON = Decimal("0.001")
NETWORK_QUORUM = Decimal("0.8")
HISTORY_LENGTH = 10
"""Convergence samples kept in an AllocationState (the newest ones)."""


def _relative_move(old: Decimal, new: Decimal) -> Decimal:
    # Relative, not absolute: denominators are in the slot's unit (bytes, fuel), so a fixed
    # absolute threshold would mean something different for every kind.
    scale = max(abs(old), abs(new))
    return Decimal(0) if scale == 0 else abs(new - old) / scale


def denominator_delta(old: Mapping[str, SlotDenominator], new: Mapping[str, SlotDenominator]) -> Decimal:
    """max over slots and tiers of |D - D_prev| / max(|D|, |D_prev|) (0 when both are 0);
    1 for a slot present in only one of the two; 0 when neither has a slot."""
    delta = Decimal(0)
    for slot in old.keys() | new.keys():
        a, b = old.get(slot), new.get(slot)
        if a is None or b is None:
            return Decimal(1)
        delta = max(delta, _relative_move(a.mutual, b.mutual), _relative_move(a.non_mutual, b.non_mutual))
    return delta


def network_converged(states: Mapping[str, AllocationState | None] | Iterable[AllocationState]) -> bool:
    """True when at least 80% of the participants' latest states are converged.

    With a mapping, a participant whose state is None (not computed yet) counts as not converged."""
    values = list(states.values()) if isinstance(states, Mapping) else list(states)
    if not values:
        return False
    done = sum(1 for s in values if s is not None and s.converged)
    return Decimal(done) >= NETWORK_QUORUM * len(values)

"""Adaptive damping: a recipient that keeps being over-allocated shrinks its active need.

Each time a recipient totals what the providers give it, it records a sample
    over_allocation = sum over its need slots n of max(0, received(n) - n.quantity)
with the time.  Its history is the samples of the last 30 s, or the last 3 samples if the last
30 s hold fewer.  Runs of equal values are merged, then:
  - oscillation (some sample above both neighbours or below both: up-down-up or down-up-down)
    -> damping factor 0.5;
  - steady decrease (strictly decreasing, or never over-allocated: all zero) -> 1.0;
  - otherwise (stuck above zero, rising, a single over-allocated sample) -> 0.8.
Providers use it as active need = residual need x damping factor (see `compute_allocation`).
"""

from __future__ import annotations

from decimal import Decimal
from operator import attrgetter
from typing import Mapping, Sequence

from .models import MAX_QUANTITY, MAX_TIMESTAMP_MS, Commitment, DampingSample, built, replaced

HISTORY_WINDOW_MS = 30_000
HISTORY_MIN_SAMPLES = 3
OSCILLATING = Decimal("0.5")
STEADY = Decimal("1.0")
MODERATE = Decimal("0.8")


_timestamp = attrgetter("timestamp")


def recent_history(history: Sequence[DampingSample], now_ms: int) -> tuple[DampingSample, ...]:
    """The samples of the last 30 s (timestamp > now - 30 s), or the last 3 if that is fewer."""
    ordered = sorted(history, key=_timestamp)
    since = now_ms - HISTORY_WINDOW_MS
    recent = [s for s in ordered if s.timestamp > since]
    if len(recent) < HISTORY_MIN_SAMPLES:
        recent = ordered[-HISTORY_MIN_SAMPLES:]
    return tuple(recent)


def damping_factor(history: Sequence[DampingSample]) -> Decimal:
    """0.5 when the over-allocations oscillate, 1.0 when they decrease steadily (or are all 0),
    0.8 otherwise; 1.0 for an empty history.  `history` must already be the recent window."""
    values: list[int] = []
    for s in sorted(history, key=_timestamp):
        if not values or values[-1] != s.over_allocation:
            values.append(s.over_allocation)
    if not values or values == [0]:
        return STEADY
    for a, b, c in zip(values, values[1:], values[2:]):
        if (b > a and b > c) or (b < a and b < c):
            return OSCILLATING
    if len(values) >= 2 and all(a > b for a, b in zip(values, values[1:])):
        return STEADY
    return MODERATE


def over_allocation(commitment: Commitment, received: Mapping[str, int]) -> int:
    """sum over the commitment's need slots n of max(0, received[n.id] - n.quantity)."""
    return sum(max(0, received.get(n.id, 0) - n.quantity) for n in commitment.need_slots)


def update_damping(commitment: Commitment, received: Mapping[str, int], now_ms: int) -> Commitment:
    """The commitment with a new sample (what `received`, need slot id -> units from all providers,
    over-allocates), its history cut to the recent window and the damping factor recomputed.
    The stamp and timestamp are left alone: the caller stamps what it publishes."""
    return _damped(commitment, over_allocation(commitment, received), now_ms)


def _damped(commitment: Commitment, over: int, now_ms: int) -> Commitment:
    """`update_damping` with the over-allocation already computed."""
    if over.__class__ is int and 0 <= over <= MAX_QUANTITY and now_ms.__class__ is int and \
            0 <= now_ms <= MAX_TIMESTAMP_MS:
        sample = built(DampingSample, {"over_allocation": over, "timestamp": now_ms})
    else:
        sample = DampingSample(over_allocation=over, timestamp=now_ms)  # refused as before
    history = recent_history((*commitment.damping_history, sample), now_ms)
    return replaced(commitment, {"damping_history": history, "damping_factor": damping_factor(history)})

"""Recognition weights and mutual recognition, exactly (fractions, never floats)."""

from __future__ import annotations

from fractions import Fraction
from math import lcm
from typing import Mapping

from .models import Commitment


def normalized_weights(commitment: Commitment) -> dict[str, Fraction]:
    """w(p, r) = raw(p, r) / sum over r' != p of raw(p, r'); all zero when p recognises nobody.

    The entry of a participant for itself is dropped: nobody allocates to itself."""
    cached = _CACHE.get(id(commitment))
    if cached is not None and cached[0] is commitment:
        return cached[1]
    # On integers: raw weights are Decimals, so their ratios share a power-of-ten denominator
    # (Fraction arithmetic would normalise every partial sum).
    raw = {r: w.as_integer_ratio() for r, w in commitment.recognition.items()
           if r != commitment.participant and w > 0}
    if raw:
        scale = lcm(*(den for _, den in raw.values()))
        scaled = {r: num * (scale // den) for r, (num, den) in raw.items()}
        total = sum(scaled.values())
        weights = {r: Fraction(x, total) for r, x in scaled.items()}
    else:
        weights = {}
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[id(commitment)] = (commitment, weights)
    return weights


# Commitments are frozen, so their normalised weights can be kept while the object lives; the
# entry holds the object itself, which keeps its id from being reused for another one.
_CACHE: dict[int, tuple[Commitment, dict[str, Fraction]]] = {}


def mutual_recognition(a: Commitment, b: Commitment) -> Fraction:
    """MR(a, b) = min(w(a, b), w(b, a)), symmetric by construction; 0 between a participant and itself."""
    if a.participant == b.participant:
        return Fraction(0)
    return min(normalized_weights(a).get(b.participant, Fraction(0)),
               normalized_weights(b).get(a.participant, Fraction(0)))


def mutual_recognition_map(provider: Commitment, network: Mapping[str, Commitment]) -> dict[str, Fraction]:
    """MR(provider, r) for every r the provider recognises and whose commitment is known (> 0 only)."""
    out = {}
    for r in normalized_weights(provider):
        other = network.get(r)
        if other is not None:
            mr = mutual_recognition(provider, other)
            if mr > 0:
                out[r] = mr
    return out

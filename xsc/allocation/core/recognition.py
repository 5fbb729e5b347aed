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
    weights = {r: Fraction(x, total) for r, (x, total) in weight_ratios(commitment).items()}
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[id(commitment)] = (commitment, weights)
    return weights


# Commitments are frozen, so their normalised weights can be kept while the object lives; the
# entry holds the object itself, which keeps its id from being reused for another one.
_CACHE: dict[int, tuple[Commitment, dict[str, Fraction]]] = {}


def weight_ratios(commitment: Commitment) -> dict[str, tuple[int, int]]:
    """`normalized_weights` as integer pairs (x, total), w(p, r) = x / total, not reduced (every
    pair of a commitment shares its total): what the allocator computes with, where building
    and reducing a Fraction per weight would cost more than the rest of a provider's ranking.

    Kept per `recognition` dict while it is in use: a commitment copied with a new damping factor
    shares it, so a network of any size computes each participant's weights once."""
    recognition, me = commitment.recognition, commitment.participant
    cached = _RATIOS.get(id(recognition))
    if cached is not None and cached[0] is recognition and cached[1] == me:
        return cached[2]
    # On integers: raw weights are Decimals, so their ratios share a power-of-ten denominator
    # (Fraction arithmetic would normalise every partial sum).
    raw = {r: w.as_integer_ratio() for r, w in recognition.items() if r != me and w > 0}
    if raw:
        scale = lcm(*(den for _, den in raw.values()))
        scaled = {r: num * (scale // den) for r, (num, den) in raw.items()}
        total = sum(scaled.values())
        ratios = {r: (x, total) for r, x in scaled.items()}
    else:
        ratios = {}
    if len(_RATIOS) >= _RATIOS_KEPT:
        _RATIOS.clear()
    _RATIOS[id(recognition)] = (recognition, me, ratios)
    return ratios


_RATIOS: dict[int, tuple[dict, str, dict[str, tuple[int, int]]]] = {}
_RATIOS_KEPT = 1 << 16
"""Participants whose weights are kept (the rounds simulator goes to 20,000)."""


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

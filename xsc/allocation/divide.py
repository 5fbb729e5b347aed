"""Dividing T units among recipients in proportion to weight x need, capped at need (water-filling).

Exact integer arithmetic only.  Given T and, per recipient r, an integer weight k_r > 0 and a
remaining need m_r > 0 (integer units):

    D = sum over r of k_r * m_r
    ideal_r = T * k_r * m_r / D

r is *capped* when ideal_r >= m_r, that is when T * k_r >= D: it gets exactly m_r, leaves, and
T and D shrink by what it took; the others share again (water-filling).  Because the cap test
does not depend on m_r, the capped recipients are always those of highest k, so one pass over
the recipients in decreasing k finds them all.  The uncapped ones get floor(ideal_r), and the
T - sum(floor) units left over (fewer than their count) go one each in decreasing order of the
remainder T * k_r * m_r mod D, ties to the smaller recipient id: the largest-remainder rule.
Since an uncapped ideal_r < m_r, floor(ideal_r) + 1 <= m_r: nobody gets more than its need, and
the total given is exactly min(T, sum of m_r).
"""

from __future__ import annotations

from itertools import repeat
from operator import mul
from typing import Sequence


def divide(total: int, ks: Sequence[int], ms: Sequence[int]) -> tuple[list[int], int]:
    """Water-fill `total` over claims given as parallel lists of weights k and needs m.

    Returns (units per claim, in the same order; D).  Ties (equal k among the capped, equal
    remainders among the rest) go to the earlier claim, so callers list claims by recipient id.
    The allocator's inner step, on plain lists of ints: the per-claim products and divisions run
    in map() rather than in a Python loop."""
    n = len(ks)
    weighted = list(map(mul, ks, ms))
    denominator = sum(weighted)
    if total == 0 or not n:
        return [0] * n, denominator
    t, d = total, denominator
    units: list[int] | None = None
    rest: list[int] | None = None  # None: every claim
    if t * max(ks) >= d:
        # Someone is capped: take them out, highest weight first, until nobody else is.
        # (A stable sort on k, descending, keeps equal weights in claim order.)
        order = sorted(range(n), key=ks.__getitem__, reverse=True)
        units = [0] * n
        x = 0
        for j in order:
            k = ks[j]
            if t <= 0 or t * k < d:
                break
            units[j] = ms[j]
            t -= ms[j]
            d -= weighted[j]
            x += 1
        rest = sorted(order[x:])
        if t <= 0 or not rest:
            return units, denominator
        weighted = [weighted[j] for j in rest]
    # floor(t * k * m / d) each, then the largest-remainder rule.
    shares = list(map(divmod, map(mul, repeat(t), weighted), repeat(d)))
    qs = [q for q, _ in shares]
    leftover = t - sum(qs)
    if leftover:
        # Largest remainder first; a stable sort keeps ties in claim order.
        remainders = [rem for _, rem in shares]
        for y in sorted(range(len(qs)), key=remainders.__getitem__, reverse=True)[:leftover]:
            qs[y] += 1
    if rest is None:
        return qs, denominator
    for j, q in zip(rest, qs):
        units[j] = q
    return units, denominator


def water_fill(total: int, claims: Sequence[tuple[str, int, int]]) -> tuple[dict[str, int], int]:
    """Divide `total` among claims (recipient, k > 0, m > 0); returns ({recipient: units > 0}, D).

    D is sum(k * m) over all claims before any capping: the tier's denominator.  Ties go to the
    smaller recipient id, so the result does not depend on the order of `claims`."""
    if total < 0:
        raise ValueError("cannot divide a negative total")
    if any(k <= 0 or m <= 0 for _, k, m in claims):
        raise ValueError("every claim needs a weight k > 0 and a need m > 0")
    ordered = sorted(claims, key=lambda c: c[0])
    units, denominator = divide(total, [k for _, k, _ in ordered], [m for _, _, m in ordered])
    return {r: u for (r, _, _), u in zip(ordered, units) if u}, denominator

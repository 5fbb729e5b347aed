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

from typing import Sequence


def water_fill(total: int, claims: Sequence[tuple[str, int, int]]) -> tuple[dict[str, int], int]:
    """Divide `total` among claims (recipient, k, m); returns ({recipient: units > 0}, D).

    D is sum(k * m) over all claims before any capping: the tier's denominator."""
    if total < 0:
        raise ValueError("cannot divide a negative total")
    denominator = sum(k * m for _, k, m in claims)
    given: dict[str, int] = {}
    if total == 0 or not claims:
        return given, denominator
    t, d = total, denominator
    rest: Sequence[tuple[str, int, int]] = claims
    if t * max(k for _, k, _ in claims) >= d:
        # Someone is capped: take them out, highest weight first, until nobody else is.
        order = sorted(claims, key=lambda c: (-c[1], c[0]))
        i = 0
        while i < len(order) and t > 0:
            r, k, m = order[i]
            if t * k < d:
                break
            given[r] = m
            t -= m
            d -= k * m
            i += 1
        rest = order[i:]
    if t > 0 and rest:
        shares = []
        handed = 0
        for r, k, m in rest:
            q, rem = divmod(t * k * m, d)
            shares.append((-rem, r, q))
            handed += q
        leftover = t - handed
        if leftover:
            # Largest remainder first; ids break ties so the result does not depend on input order.
            shares.sort()
        for j, (_, r, q) in enumerate(shares):
            if j < leftover:
                q += 1
            if q:
                given[r] = q
    return given, denominator

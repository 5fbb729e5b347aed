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

from functools import cmp_to_key
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


def divide_capped(total: int, ks: Sequence[int], ms: Sequence[int],
                  caps: Sequence[int]) -> tuple[list[int], int, list[bool]]:
    """`divide` with a cap per claim below its need: proportions by k * m, each claim capped at c <= m.

    Returns (units per claim, D = sum of k * m, cut per claim).  A claim is *cut* when the cap,
    not its need, stopped it: its proportional share would have been more than c (c < m) -- the
    provider wants to give it at least one unit more than it is granted (see
    `xsc.allocation.core.rounds`).

    Water-filling as in `divide`, where claim j is capped when t * k_j * m_j >= c_j * d: the
    capped claims are those of highest k_j * m_j / c_j (a claim with c_j = 0 first), so one pass
    in that order finds them.  The others get floor(t * k_j * m_j / d), then the largest-remainder
    rule; an uncapped share is below c_j, so nobody gets more than its cap."""
    n = len(ks)
    weighted = list(map(mul, ks, ms))
    denominator = sum(weighted)
    cut = [False] * n
    if not n:
        return [], denominator, cut
    if total == 0:
        # Nothing to give, nothing to ask for.
        return [0] * n, denominator, cut

    def by_ratio(i: int, j: int) -> int:
        # Decreasing weighted / cap (cap 0 first), ties in claim order.
        a, b = weighted[i] * caps[j], weighted[j] * caps[i]
        return -1 if a > b else 1 if a < b else (i > j) - (i < j)

    t, d = total, denominator
    if 0 in weighted:
        # (Not from the allocator, whose weights are positive: the comparison is then no order,
        # so keep its sort as it is.)
        order = sorted(range(n), key=cmp_to_key(by_ratio))
    else:
        order = _capped_first(t, d, weighted, caps, by_ratio)
    units = [0] * n
    x = 0
    for j in order:
        c = caps[j]
        if t <= 0 or t * weighted[j] < c * d:
            break
        units[j] = c
        # Cut only when the share's whole part is beyond the cap (t * k * m / d >= c + 1): a share
        # the rounding alone takes past the cap is not a request (or the flag would flip).
        cut[j] = c < ms[j] and t * weighted[j] >= (c + 1) * d
        t -= c
        d -= weighted[j]
        x += 1
    if x == 0:
        rest = list(range(n))
    elif x == len(order):
        rest = sorted(set(range(n)).difference(order)) if x < n else []
    else:
        rest = sorted(set(range(n)).difference(order[:x]))
    if not rest and t > 0:
        # Everybody capped and units left over: every claim its cap stopped wants more.
        cut = [c < m for c, m in zip(caps, ms)]
    if t <= 0 or not rest or d <= 0:
        return units, denominator, cut
    shares = [divmod(t * weighted[j], d) for j in rest]
    qs = [q for q, _ in shares]
    leftover = t - sum(qs)
    if leftover:
        remainders = [rem for _, rem in shares]
        for y in sorted(range(len(qs)), key=remainders.__getitem__, reverse=True)[:leftover]:
            qs[y] += 1
    for j, q in zip(rest, qs):
        units[j] = q
    return units, denominator, cut


def _capped_first(t: int, d: int, weighted: list[int], caps: Sequence[int], by_ratio) -> list[int]:
    """The claims in the order `divide_capped` tries to cap them (decreasing weighted / cap, cap 0
    first, ties in claim order), or the beginning of it that holds every claim it caps: it stops
    at the first one that is not capped, and every claim after it in that order is not either.

    Weights are positive.  The cap-0 claims come first, in claim order.  The others are sorted
    only when one of them is capped right after them: the first of them in that order has the
    largest weighted / cap, so when it is not capped (t * weighted < cap * d with d less the cap-0
    claims' weights, t unchanged) none of them is, and about half of the allocator's calls
    sort nothing."""
    n = len(weighted)
    if 0 in caps:
        order = [j for j in range(n) if not caps[j]]
        d -= sum(weighted[j] for j in order)
        others = [j for j in range(n) if caps[j]]
    else:
        order, others = [], range(n)
    for j in others:
        if t * weighted[j] >= caps[j] * d:
            order.extend(sorted(others, key=cmp_to_key(by_ratio)))
            break
    return order


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

"""The allocator's fast paths give exactly what their plain definitions give (hypothesis).

compute_allocation matches need slots from the capacity side on cached plain rows, divides on
parallel integer lists, reports denominators through integer rounding and builds its records in
bulk; each is checked here against the straightforward version it replaces."""

from __future__ import annotations

import dataclasses
from decimal import Context, Decimal
from functools import cmp_to_key

import pytest
from tests.support.allocation import commitment, networks
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.allocation import SlotAllocation, compatible, water_fill
from xsc.allocation.core.compute import _to_decimal
from xsc.allocation.core.divide import divide, divide_capped
from xsc.allocation.core.matching import CapacityIndex, need_rows
from xsc.allocation.core.models import slot_allocations

PROPS = settings(max_examples=100, deadline=None)


class _AlwaysBuckets(CapacityIndex):
    _FEW = 0  # the bucketed path even for a handful of capacity slots


@PROPS
@given(networks(max_caps=12))
def test_the_capacity_index_matches_exactly_the_compatible_pairs(net):
    provider, peers = net
    caps = list(provider.capacity_slots)
    slots = [n for c in peers for n in c.need_slots]
    rows = [row for c in peers for row in need_rows(c.need_slots)]
    for index in (CapacityIndex(caps), _AlwaysBuckets(caps)):
        for c, positions in zip(caps, index.match(rows)):
            assert positions == [i for i, n in enumerate(slots) if compatible(c, n)]


@PROPS
@given(st.integers(0, 10**6) | st.integers(0, 10**25),
       st.lists(st.tuples(st.integers(1, 4) | st.integers(1, 10**20), st.integers(1, 40) | st.integers(1, 10**12)),
                max_size=12))
def test_divide_is_water_fill_on_claims_listed_by_recipient(total, raw):
    claims = [(f"r{i:02d}", k, m) for i, (k, m) in enumerate(raw)]
    units, d = divide(total, [k for _, k, _ in claims], [m for _, _, m in claims])
    given_, d2 = water_fill(total, list(reversed(claims)))
    assert d == d2
    assert {r: u for (r, _, _), u in zip(claims, units) if u} == given_


def _divide_capped_sorting_all(total, ks, ms, caps):
    """divide_capped as it was: every claim sorted by decreasing weighted / cap, then capped in that order."""
    n = len(ks)
    weighted = [k * m for k, m in zip(ks, ms)]
    denominator = sum(weighted)
    cut = [False] * n
    if not n:
        return [], denominator, cut
    if total == 0:
        return [0] * n, denominator, cut

    def by_ratio(i, j):
        a, b = weighted[i] * caps[j], weighted[j] * caps[i]
        return -1 if a > b else 1 if a < b else (i > j) - (i < j)

    order = sorted(range(n), key=cmp_to_key(by_ratio))
    units = [0] * n
    t, d = total, denominator
    x = 0
    for j in order:
        c = caps[j]
        if t <= 0 or t * weighted[j] < c * d:
            break
        units[j] = c
        cut[j] = c < ms[j] and t * weighted[j] >= (c + 1) * d
        t -= c
        d -= weighted[j]
        x += 1
    rest = sorted(order[x:])
    if not rest and t > 0:
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


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300) | st.integers(0, 10**12),
       st.lists(st.tuples(st.integers(0, 6) | st.integers(1, 10**20), st.integers(0, 80) | st.integers(1, 10**9),
                          st.integers(0, 80) | st.sampled_from([0, 1])), max_size=14))
def test_divide_capped_sorts_only_when_a_claim_is_capped_and_gives_what_sorting_all_gave(total, raw):
    ks = [k for k, _, _ in raw]
    ms = [m for _, m, _ in raw]
    caps = [min(c, m) for _, m, c in raw]
    assert divide_capped(total, ks, ms, caps) == _divide_capped_sorting_all(total, ks, ms, caps)


def test_water_fill_refuses_claims_without_weight_or_need():
    with pytest.raises(ValueError, match="k > 0 and a need m > 0"):
        water_fill(10, [("a", 1, 0)])
    with pytest.raises(ValueError, match="k > 0 and a need m > 0"):
        water_fill(10, [("a", 0, 5)])


def _reported(num: int, den: int) -> Decimal:
    """The definition: divide to 60 significant digits, then round half-even to 9 decimals."""
    ctx = Context(prec=60)
    return ctx.divide(Decimal(num), Decimal(den)).quantize(Decimal("1e-9"), context=ctx)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10**49) | st.integers(0, 10**12), st.integers(1, 10**40) | st.integers(1, 1000),
       st.integers(-1, 1))
def test_denominators_round_like_the_decimal_definition(num, den, nudge):
    # Also right next to the half-way points between two 9-decimal values.
    near_half = max(0, (2 * (num // den) + 1) * den // (2 * 10**9) + nudge)
    for n in (num, near_half):
        assert _to_decimal(n, den).as_tuple() == _reported(n, den).as_tuple()
    assert _to_decimal(0, 0).as_tuple() == Decimal("0E-9").as_tuple()


def test_denominators_beyond_the_integer_path_take_the_decimal_one():
    for num, den in ((10**50 + 7, 10**6 + 3), (10**52 - 1, 3 * 10**9)):
        assert _to_decimal(num, den).as_tuple() == _reported(num, den).as_tuple()


def test_bulk_records_are_the_dataclass_records():
    rows = [("c1", "n1", "a", 5, 1), ("c1", "n2", "b", 7, 2), ("c2", "n1", "a", 1, 1)]
    made = slot_allocations([x for row in rows for x in row])
    assert made == tuple(SlotAllocation(*row) for row in rows)
    assert [hash(a) for a in made] == [hash(SlotAllocation(*row)) for row in rows]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].quantity = 6
    assert slot_allocations([]) == ()


def test_need_rows_are_kept_per_need_slot_tuple_and_never_stale():
    from tests.support.allocation import need

    a = commitment("a", needs=[need("a", "n1", 4), need("a", "n2", 6, location=("eu", "us"))])
    rows = need_rows(a.need_slots)
    assert need_rows(a.need_slots) is rows
    # A damping update copies the commitment but shares its need slots: same rows.
    assert need_rows(a.model_copy(update={"damping_factor": Decimal("0.5")}).need_slots) is rows
    b = commitment("a", needs=[need("a", "n1", 5)])
    assert [r[6] for r in need_rows(b.need_slots)] == [5]
    assert [(r[5], r[6], r[7]) for r in rows] == [("n1", 4, ("a", "n1")), ("n2", 6, ("a", "n2"))]
    assert rows[0][3] is None and rows[1][3] == frozenset({"eu", "us"})

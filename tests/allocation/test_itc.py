"""Interval Tree Clocks: the paper's example run, reference encodings, algebraic properties, strict decoding.

Random stamps come from random fork/event/join/peek-join runs starting at the seed; every stamp
carries its causal history (the set of events it has seen), so leq can be checked against the
paper's correctness claim: e1 <= e2 exactly when history1 is a subset of history2.
"""

from __future__ import annotations

import copy
import pickle
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.support.calls import python_calls
from xsc.itc import (
    MAX_DEPTH,
    AnonymousStampEvent,
    ItcError,
    MalformedStamp,
    Stamp,
    StampTooDeep,
    _encode_bits,
)
from xsc.errors import BadRequest

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- random runs ---------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["fork", "event", "burst", "join", "rejoin", "peekjoin"]),
        st.integers(0, 10_000),
        st.integers(0, 10_000),
    ),
    max_size=40,
)


def run(ops) -> list[tuple[Stamp, frozenset]]:
    """Apply ops to a pool that starts as [seed]; returns (stamp, causal history) pairs."""
    fresh = count()
    pool: list[tuple[Stamp, frozenset]] = [(Stamp.seed(), frozenset())]
    for op, x, y in ops:
        k = x % len(pool)
        s, h = pool[k]
        if op == "fork":
            a, b = s.fork()
            pool[k] = (a, h)
            pool.append((b, h))
        elif op in ("event", "burst"):
            # bursts push counters past the enc_n width steps (4, 12, 28, 60, ...)
            for _ in range(1 if op == "event" else 1 + y % 70):
                s, h = s.event(), h | {next(fresh)}
            pool[k] = (s, h)
        elif len(pool) > 1:
            j = y % (len(pool) - 1)
            j += j >= k
            if op == "rejoin":  # the newest stamp is often k's sibling: ids merge back up
                k, j = (len(pool) - 2, len(pool) - 1) if k == len(pool) - 1 else (k, len(pool) - 1)
                s, h = pool[k]
            t, g = pool[j]
            if op in ("join", "rejoin"):  # j retires into k
                pool[k] = (s.join(t), h | g)
                del pool[j]
            else:  # k learns j's events; j keeps its id
                pool[k] = (s.join(t.peek()), h | g)
    return pool


runs = OPS.map(run)
stamps = runs.map(lambda pool: [s for s, _ in pool])


# Arbitrary normal stamps straight from random trees (the constructor normalizes): they reach
# shapes runs rarely produce, such as ids owning pieces of both halves.
id_trees = st.recursive(st.sampled_from([0, 1]), lambda sub: st.tuples(sub, sub), max_leaves=12)
event_trees = st.recursive(
    st.integers(0, 6) | st.integers(0, 1 << 34),
    lambda sub: st.tuples(st.integers(0, 4), sub, sub),
    max_leaves=16,
)
arbitrary_stamps = st.builds(Stamp, id_trees, event_trees)


@st.composite
def one_stamp(draw):
    pool = draw(stamps)
    return pool[draw(st.integers(0, len(pool) - 1))]


# --- oracles: trees as functions over 2**depth equal segments of [0, 1) ----------------


def depth(tree) -> int:
    if tree.__class__ is int:
        return 0
    return 1 + max(depth(t) for t in (tree[1:] if len(tree) == 3 else tree))


def id_fn(i, d: int) -> list[int]:
    if i.__class__ is int:
        return [i] * (1 << d)
    return id_fn(i[0], d - 1) + id_fn(i[1], d - 1)


def ev_fn(e, d: int) -> list[int]:
    if e.__class__ is int:
        return [e] * (1 << d)
    n, l, r = e
    return [n + v for v in ev_fn(l, d - 1) + ev_fn(r, d - 1)]


def is_normal_id(i) -> bool:
    if i.__class__ is int:
        return i in (0, 1)
    l, r = i
    return is_normal_id(l) and is_normal_id(r) and not (l.__class__ is int and l == r)


def base(e) -> int:
    return e if e.__class__ is int else e[0]


def is_normal_ev(e) -> bool:
    if e.__class__ is int:
        return e >= 0
    n, l, r = e
    return (
        n >= 0
        and is_normal_ev(l)
        and is_normal_ev(r)
        and min(base(l), base(r)) == 0
        and not (l.__class__ is int and r.__class__ is int and l == r)
    )


def assert_normal(s: Stamp) -> None:
    assert is_normal_id(s.id), s
    assert is_normal_ev(s.event_tree), s


# --- the paper's definitions, transcribed literally (slow, no shortcuts): the differential oracle


def spec_norm_ev(e):
    if e.__class__ is int:
        return e
    n, l, r = e
    if l.__class__ is int and r.__class__ is int and l == r:
        return n + l
    m = min(base(l), base(r))
    return (n + m, spec_lift(l, -m), spec_lift(r, -m))


def spec_lift(e, m):
    return e + m if e.__class__ is int else (e[0] + m, e[1], e[2])


def spec_height(e):
    return e if e.__class__ is int else e[0] + max(spec_height(e[1]), spec_height(e[2]))


def spec_join(a, b):
    if a.__class__ is int and b.__class__ is int:
        return max(a, b)
    if a.__class__ is int:
        return spec_join((a, 0, 0), b)
    if b.__class__ is int:
        return spec_join(a, (b, 0, 0))
    if a[0] > b[0]:
        return spec_join(b, a)
    d = b[0] - a[0]
    return spec_norm_ev((a[0], spec_join(a[1], spec_lift(b[1], d)), spec_join(a[2], spec_lift(b[2], d))))


def spec_leq(a, b):
    if a.__class__ is int:
        return a <= base(b)
    if b.__class__ is int:
        return a[0] <= b and spec_leq(spec_lift(a[1], a[0]), b) and spec_leq(spec_lift(a[2], a[0]), b)
    return (a[0] <= b[0] and spec_leq(spec_lift(a[1], a[0]), spec_lift(b[1], b[0]))
            and spec_leq(spec_lift(a[2], a[0]), spec_lift(b[2], b[0])))


def spec_fill(i, e):
    if i == 0:
        return e
    if i == 1:
        return spec_height(e)
    if e.__class__ is int:
        return e
    n, el, er = e
    if i[0] == 1:
        er2 = spec_fill(i[1], er)
        return spec_norm_ev((n, max(spec_height(el), base(er2)), er2))
    if i[1] == 1:
        el2 = spec_fill(i[0], el)
        return spec_norm_ev((n, el2, max(spec_height(er), base(el2))))
    return spec_norm_ev((n, spec_fill(i[0], el), spec_fill(i[1], er)))


def spec_grow(i, e):
    """(e', cost) with cost = (leaf expansions, steps): expanding costs more than any path."""
    if i == 1 and e.__class__ is int:
        return e + 1, (0, 0)
    if e.__class__ is int:
        e2, (x, c) = spec_grow(i, (e, 0, 0))
        return e2, (x + 1, c)
    n, el, er = e
    if i[0] == 0:
        er2, (x, c) = spec_grow(i[1], er)
        return (n, el, er2), (x, c + 1)
    if i[1] == 0:
        el2, (x, c) = spec_grow(i[0], el)
        return (n, el2, er), (x, c + 1)
    el2, (xl, cl) = spec_grow(i[0], el)
    er2, (xr, cr) = spec_grow(i[1], er)
    if (xl, cl) < (xr, cr):
        return (n, el2, er), (xl, cl + 1)
    return (n, el, er2), (xr, cr + 1)


def spec_event(i, e):
    filled = spec_fill(i, e)
    return filled if filled != e else spec_grow(i, e)[0]


def spec_split(i):
    if i == 0:
        return 0, 0
    if i == 1:
        return (1, 0), (0, 1)
    if i[0] == 0:
        a, b = spec_split(i[1])
        return (0, a), (0, b)
    if i[1] == 0:
        a, b = spec_split(i[0])
        return (a, 0), (b, 0)
    return (i[0], 0), (0, i[1])


def check_against_spec(pool: list[Stamp]) -> None:
    for s in pool:
        if not s.is_anonymous:
            assert s.event().event_tree == spec_event(s.id, s.event_tree), s
        assert tuple(f.id for f in s.fork()) == spec_split(s.id)
        for t in pool:
            assert s.join(t).event_tree == spec_join(s.event_tree, t.event_tree)
            assert s.leq(t) == spec_leq(s.event_tree, t.event_tree)


@SETTINGS
@given(stamps)
def test_operations_match_the_papers_definitions(pool):
    check_against_spec(pool)


@SETTINGS
@given(st.lists(arbitrary_stamps, min_size=1, max_size=4))
def test_operations_on_arbitrary_stamps_match_the_papers_definitions(pool):
    check_against_spec(pool)
    for s in pool:
        assert_normal(s)
        assert Stamp.decode(s.encode()) == s
        if not s.is_anonymous:
            assert_normal(s.event())
            assert s.leq(s.event()) and not s.event().leq(s)


# --- the paper's example run ------------------------------------------------------------


def test_paper_example_run():
    """The run of the paper's figure (also the reference README's demo, steps a-h)."""
    a = Stamp.seed()
    assert str(a) == "(1, 0)"
    a, b = a.fork()
    assert (str(a), str(b)) == ("((1, 0), 0)", "((0, 1), 0)")
    a, b = a.event(), b.event()
    assert (str(a), str(b)) == ("((1, 0), (0, 1, 0))", "((0, 1), (0, 0, 1))")
    a, c = a.fork()
    b = b.event()
    assert str(a) == "(((1, 0), 0), (0, 1, 0))"
    assert str(c) == "(((0, 1), 0), (0, 1, 0))"
    assert str(b) == "((0, 1), (0, 0, 2))"
    a = a.event()
    b = b.join(c)
    assert str(a) == "(((1, 0), 0), (0, (1, 1, 0), 0))"
    assert str(b) == "(((0, 1), 1), (1, 0, 1))"
    b, c = b.fork()
    assert (str(b), str(c)) == ("(((0, 1), 0), (1, 0, 1))", "((0, 1), (1, 0, 1))")
    a = a.join(b)
    assert str(a) == "((1, 0), (1, (0, 1, 0), 1))"
    a = a.event()
    assert str(a) == "((1, 0), 2)"
    assert a == Stamp((1, 0), 2) and c == Stamp((0, 1), (1, 0, 1))
    assert c.leq(a) and not a.leq(c)


# (stamp before, event tree after) -- each checked against the reference's itc:event/1
EVENT_CASES = [
    # grow tie: both halves cost the same, the paper (and the reference) grows the right one
    ((((1, 0), (1, 0)), 0), (0, 0, (0, 1, 0))),
    # fill raises the owned half to the *height* of what it already holds there
    (((1, 0), (0, (0, 0, 2), 1)), (1, 1, 0)),
    ((((1, 0), (0, 1)), (0, (0, 1, 0), (0, 0, 1))), (0, (0, 1, 0), (0, 0, 2))),
    ((((0, 1), (1, 0)), (1, (0, 0, 1), (0, 1, 0))), (1, (0, 0, 1), (0, 2, 0))),
    (((1, (1, 0)), (0, 0, (0, 0, 1))), 1),
    ((((0, 1), 1), (0, (0, 2, 0), 0)), 2),
]


@pytest.mark.parametrize(("before", "after"), EVENT_CASES)
def test_event_cases_from_the_reference(before, after):
    s = Stamp(*before)
    assert s.event() == Stamp(before[0], after)


def test_peek_and_concurrency():
    a, b = Stamp.seed().fork()
    a, b = a.event(), b.event()
    assert a.concurrent(b) and b.concurrent(a)
    p = a.peek()
    assert p.is_anonymous and p.event_tree == a.event_tree and p.leq(a) and a.leq(p)
    merged = b.join(p)
    assert merged.id == b.id and a.leq(merged) and b.leq(merged) and not merged.concurrent(a)
    with pytest.raises(AnonymousStampEvent):
        p.event()


# --- encoding: vectors produced by the authors' Erlang reference (itc:encode/1, zero-padded) --

REFERENCE_VECTORS = [
    ((1, 0), "30"),
    (((1, 0), 0), "8c00"),
    (((0, 1), 0), "4c00"),
    (((1, 0), (0, 1, 0)), "8990"),
    (((0, 1), (0, 0, 1)), "4890"),
    ((((1, 0), 0), (0, 1, 0)), "a264"),
    ((((0, 1), 0), (0, 1, 0)), "9264"),
    (((0, 1), (0, 0, 2)), "48a0"),
    ((((1, 0), 0), (0, (1, 1, 0), 0)), "a25b32"),
    ((((0, 1), 1), (1, 0, 1)), "d25932"),
    (((0, 1), (1, 0, 1)), "4b2640"),
    (((1, 0), (1, (0, 1, 0), 1)), "8bc999"),
    (((1, 0), 2), "8d00"),
    ((1, 1000), "3fef60"),
    ((0, 42), "1e70"),
    (((0, (1, 0)), (0, 0, (0, 0, 45))), "6207a2"),
    ((0, (0, (3, 0, 7), (0, 1 << 40, 0))), "099799fffffffffe0000000004"),
    (((1, (0, 1)), (5, (0, 3, 0), (2, 0, 1 << 20))), "ca5f136caffffe000040"),
]


@pytest.mark.parametrize(("trees", "hex_"), REFERENCE_VECTORS)
def test_reference_encodings(trees, hex_):
    s = Stamp(*trees)
    assert s.encode().hex() == hex_
    assert Stamp.decode(bytes.fromhex(hex_)) == s


def test_documented_worked_example():
    s = Stamp((0, 1), (1, 0, 1))
    assert _encode_bits(s.id, s.event_tree) == "01001" + "01100" + "1001" + "1001"
    assert s.encode() == bytes([0b01001011, 0b00100110, 0b01000000])


def test_bit_layout_pieces():
    # enc_n escalation: 42 = 4 + 8 + 16 + 14 -> 1 1 1 0 01110 after the leaf's 1
    assert _encode_bits(0, 42) == "000" + "1111001110"
    assert _encode_bits((1, (0, 1)), 0) == "11" + "001" + "01001" + "1000"
    assert _encode_bits(((0, 1), (1, 0)), 0) == "11" + "01001" + "10001" + "1000"


# --- properties ---------------------------------------------------------------------------


@SETTINGS
@given(runs)
def test_leq_matches_causal_histories(pool):
    for s, h in pool:
        assert_normal(s)
        for t, g in pool:
            assert s.leq(t) == (h <= g), (s, t)
            assert s.concurrent(t) == (not h <= g and not g <= h)


@SETTINGS
@given(runs)
def test_ids_stay_disjoint_and_cover_what_was_given_out(pool):
    d = max(depth(s.id) for s, _ in pool)
    total = [0] * (1 << d)
    for s, _ in pool:
        total = [a + b for a, b in zip(total, id_fn(s.id, d))]
    assert max(total) <= 1  # no slice of [0, 1) owned twice


@SETTINGS
@given(stamps, stamps, stamps)
def test_join_commutative_associative_idempotent(p, q, r):
    a, b, c = p[0], q[-1], r[len(r) // 2]  # from different runs: ids may overlap (union)
    assert a.join(b) == b.join(a)
    assert a.join(b).join(c) == a.join(b.join(c))
    assert a.join(a) == a
    for s in (a.join(b), a.join(b).join(c)):
        assert_normal(s)
        assert a.leq(s) and b.leq(s)


@SETTINGS
@given(stamps)
def test_join_is_pointwise_max_and_sum_is_union(pool):
    a, b = pool[0], pool[-1]
    j = a.join(b)
    d = max(depth(t) for t in (a.event_tree, b.event_tree, j.event_tree, a.id, b.id, j.id))
    if d <= 12:
        assert ev_fn(j.event_tree, d) == [max(x, y) for x, y in zip(ev_fn(a.event_tree, d), ev_fn(b.event_tree, d))]
        assert id_fn(j.id, d) == [max(x, y) for x, y in zip(id_fn(a.id, d), id_fn(b.id, d))]
        le = all(x <= y for x, y in zip(ev_fn(a.event_tree, d), ev_fn(b.event_tree, d)))
        assert a.leq(b) == le


@SETTINGS
@given(one_stamp())
def test_fork_then_join_restores_the_parent(s):
    l, r = s.fork()
    assert l.event_tree == r.event_tree == s.event_tree
    assert_normal(l)
    assert_normal(r)
    if not s.is_anonymous:
        assert l.id != r.id and not l.is_anonymous and not r.is_anonymous
    assert l.join(r) == s
    assert r.join(l) == s


@SETTINGS
@given(one_stamp(), one_stamp(), one_stamp())
def test_leq_is_a_partial_order(a, b, c):
    assert a.leq(a)
    if a.leq(b) and b.leq(a):
        assert a.event_tree == b.event_tree
    if a.leq(b) and b.leq(c):
        assert a.leq(c)


@SETTINGS
@given(one_stamp())
def test_event_strictly_increases_only_inside_the_id(s):
    if s.is_anonymous:
        with pytest.raises(AnonymousStampEvent):
            s.event()
        return
    e = s.event()
    assert_normal(e)
    assert e.id == s.id
    assert s.leq(e) and not e.leq(s)
    d = max(depth(t) for t in (s.id, s.event_tree, e.event_tree))
    if d <= 12:
        mine = id_fn(s.id, d)
        for own, old, new in zip(mine, ev_fn(s.event_tree, d), ev_fn(e.event_tree, d)):
            assert new == old or (own and new > old)


@SETTINGS
@given(one_stamp())
def test_encode_decode_round_trip(s):
    data = s.encode()
    assert Stamp.decode(data) == s
    assert len(data) == (len(_encode_bits(s.id, s.event_tree)) + 7) // 8
    assert Stamp.decode(bytearray(data)) == s
    assert Stamp.decode(memoryview(data)) == s


# --- strict decoding -----------------------------------------------------------------------


@SETTINGS
@given(one_stamp(), st.data())
def test_decode_rejects_truncation_trailing_bytes_and_padding(s, data):
    enc = s.encode()
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(MalformedStamp):
        Stamp.decode(enc[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=4))
    with pytest.raises(MalformedStamp, match="trailing"):
        Stamp.decode(enc + extra)
    pad = len(enc) * 8 - len(_encode_bits(s.id, s.event_tree))
    if pad:
        bit = data.draw(st.integers(0, pad - 1))
        bad = enc[:-1] + bytes([enc[-1] | (1 << bit)])
        with pytest.raises(MalformedStamp, match="padding"):
            Stamp.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_decode_of_arbitrary_bytes_is_a_stamp_or_a_clear_error(data):
    try:
        s = Stamp.decode(data)
    except MalformedStamp as err:
        assert str(err)
        return
    assert_normal(s)
    assert Stamp.decode(s.encode()) == s


def bits_to_bytes(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (bits_to_bytes("001" + "0111" + "0"), "invalid tag"),  # a node base not in leaf form
        (bits_to_bytes("001" + "1" + "1" * 70 + "0"), "wider than 64 bits"),
        (bits_to_bytes("01" * (MAX_DEPTH + 1) + "001" + "1000"), "deeper"),
        (bits_to_bytes("001" + "010" * (MAX_DEPTH + 1)), "deeper"),
        (bits_to_bytes("11" + "001"), "truncated"),
        (bits_to_bytes("001" + "1" + "1111"), "truncated"),
        (bytes.fromhex("30") + b"\x00", "1 trailing byte after"),  # counted as a user reads a count
        (bytes.fromhex("30") + b"\x00\x00", "2 trailing bytes after"),
        (bytes.fromhex("31"), "padding"),
        ("30", "bytes"),
    ],
)
def test_decode_errors_are_clear(data, match):
    with pytest.raises(MalformedStamp, match=match) as info:
        Stamp.decode(data)
    assert isinstance(info.value, ValueError) and isinstance(info.value, BadRequest)
    assert info.value.code == "malformed-stamp"


def test_decode_normalizes_lax_encodings():
    # (1, 1) id and (0, 2, 2) event are not normal; other encoders might still send them
    assert Stamp.decode(bits_to_bytes("11" + "001" + "001" + "010" + "1010" + "1010")) == Stamp(1, 2)
    # (3, 0, 0) in the full node form, and (0, 0, 0)
    assert Stamp.decode(bits_to_bytes("001" + "0111" + "1011" + "1000" + "1000")) == Stamp(1, 3)
    assert Stamp.decode(bits_to_bytes("001" + "000" + "1000")) == Stamp(1, 0)
    # (0, (0, 1, 1), 0): the inner node collapses to 1, then the outer is (0, 1, 0)
    assert Stamp.decode(bits_to_bytes("001" + "001" + "010" + "1001" + "1001")) == Stamp(1, (0, 1, 0))


# --- construction, limits, value semantics -----------------------------------------------


def test_constructor_checks_and_normalizes():
    assert Stamp() == Stamp.seed() == Stamp(1, 0)
    assert Stamp((1, 1), (0, 2, 2)) == Stamp(1, 2)
    assert Stamp([0, [1, 0]], [1, [0, 3, 3], 1]).event_tree == (2, 2, 0)
    assert Stamp((0, 1), (0, 1, 1)).event_tree == 1
    assert Stamp((0, 1), (2, (1, 0, 3), 1)).event_tree == (3, (0, 0, 3), 0)
    for bad_id, bad_ev in [(2, 0), ((1,), 0), (1, -1), (1, (0, 1)), (1, (-1, 0, 1)), (1, 1.5), (True, 0)]:
        with pytest.raises(ItcError):
            Stamp(bad_id, bad_ev)


def test_fork_depth_limit_and_balanced_fork_many():
    s = Stamp.seed()
    for _ in range(MAX_DEPTH):
        s, _ = s.fork()
    assert depth(s.id) == MAX_DEPTH
    assert Stamp.decode(s.event().encode()) == s.event()
    with pytest.raises(StampTooDeep):
        s.fork()
    many = Stamp.seed().fork_many(1000)
    assert len(many) == 1000 and max(depth(m.id) for m in many) == 10
    assert len({m.id for m in many}) == 1000
    joined = many[0]
    for m in many[1:]:
        joined = joined.join(m)
    assert joined == Stamp.seed()


@SETTINGS
@given(st.lists(arbitrary_stamps, min_size=1, max_size=4))
def test_height_is_the_most_events_and_bounds_what_join_and_event_make(pool):
    """What a node's own stamp may reach, so what it may fold in (allocation/itc_ids.py): a join is no higher than
    the highest stamp joined, an event one higher at most, and no counter of a normal tree exceeds its height."""
    for s in pool:
        d = max(depth(s.event_tree), depth(s.id))
        assert s.height == max(ev_fn(s.event_tree, d))
    joined = pool[0]
    for s in pool[1:]:
        joined = joined.join(s)
    assert joined.height == max(s.height for s in pool)
    if not joined.is_anonymous:
        assert joined.height <= joined.event().height <= joined.height + 1

    def counters(e):
        return [e] if e.__class__ is int else [e[0], *counters(e[1]), *counters(e[2])]

    assert max(counters(joined.event_tree)) <= joined.height


def _comb_over(depth_: int, bottom):
    """A path of `depth_` nodes, each with a leaf on one side, down to `bottom`."""
    tree = bottom
    for k in range(depth_):
        tree = (1, tree, 7 + k % 5) if k % 2 else (1, 7 + k % 5, tree)
    return tree


def _bushy(depth_: int, k: int = 0):
    return 3 + k % 97 if depth_ == 0 else (k % 3, _bushy(depth_ - 1, 2 * k), _bushy(depth_ - 1, 2 * k + 1))


def _nodes(e) -> int:
    return 0 if isinstance(e, int) else 1 + _nodes(e[1]) + _nodes(e[2])


def test_join_and_leq_work_in_proportion_to_the_trees_a_peer_sends():
    """A peer's stamp may be any tree within MAX_DEPTH levels: a long path over a bushy bottom, joined with a
    bushy tree, meets a leaf at every level of the path; work per level proportional to what lies below would
    be quadratic.  Counted in Python calls, which do not depend on the machine's speed."""
    deep, wide = Stamp(0, _comb_over(MAX_DEPTH - 12, _bushy(9))), Stamp(0, _bushy(10))
    assert max(len(deep.encode()), len(wide.encode())) <= 4096  # what a record's stamp may be
    size = _nodes(deep.event_tree) + _nodes(wide.event_tree)
    joined = deep.join(wide)
    calls = python_calls(lambda: (deep.join(wide), deep.leq(wide), wide.leq(deep), deep.leq(joined),
                                  wide.leq(joined)))
    assert deep.leq(joined) and wide.leq(joined)
    assert calls <= 8 * size, (calls, size)


def test_value_semantics():
    a, b = Stamp.seed().fork()
    a2 = Stamp((1, 0), 0)
    assert a == a2 and hash(a) == hash(a2) and a != b and len({a, a2, b}) == 2
    assert a != "((1, 0), 0)" and a != ((1, 0), 0)
    with pytest.raises(AttributeError):
        a._ev = 5
    with pytest.raises(AttributeError):
        a.foo = 1
    assert pickle.loads(pickle.dumps(a.event())) == a.event()
    assert copy.deepcopy(a) is a
    assert repr(a) == "Stamp((1, 0), 0)" and eval(repr(a)) == a


def test_pydantic_field_round_trip():
    class Holder(BaseModel):
        stamp: Stamp

    s = Stamp.seed().fork()[1].event()
    h = Holder(stamp=s)
    dumped = h.model_dump_json()
    assert s.encode().hex() in dumped
    assert Holder.model_validate_json(dumped).stamp == s
    assert Holder(stamp=s.encode()).stamp == s
    assert Holder.model_json_schema()["properties"]["stamp"]["type"] == "string"
    with pytest.raises(ValueError):
        Holder(stamp="zz")
    with pytest.raises(ValueError):
        Holder(stamp="3000")


# --- a seeded run replayed by the authors' Erlang reference (itc.erl, via a small driver) ---


def reference_ops(seed: int, n_ops: int = 60) -> list[tuple]:
    """The op sequence fed to the reference; uses only Random.random(), stable across Pythons."""
    import random

    rng, n, ops = random.Random(seed), 1, []
    for _ in range(n_ops):
        x = rng.random()
        k = int(rng.random() * n)
        y = rng.random()
        if n < 2 or x < 0.25:
            ops.append(("fork", k))
            n += 1
        elif x < 0.7:
            ops.extend([("event", k)] * (1 + int(y * 3) if y < 0.9 else 40))
        else:
            j = int(y * (n - 1))
            j += j >= k
            ops.append(("join" if x < 0.8 else "peekjoin", k, j))
            n -= x < 0.8
    return ops


REFERENCE_RUNS = {
    11: ["5f29958bd504f5e60b2d9c00", "566a21948f9c5e7024d0", "59aa2f54106d364c96ce00", "56a21940b670",
         "62f54a506d4b2640", "5992f54106d4b26c", "56921940b670", "565886502c906c", "5664865032",
         "552f5400c0", "565521940b24007cd0", "59ad25ea827af30b664b6700", "56692f541e5e7cc328e160",
         "8bd58028"],
    12: ["621b5880", "d5a2d141972ca6d1b0", "96890cb6cc80", "954a0cb648c59540", "99890db1e700",
         "9e8b345e99289a6490da9140", "9a624580", "95962432d924328c80", "a2f5219588", "598a16ca6d03e600",
         "594a16ca6d0180", "d662a5e99289a6cc865620", "9a524580", "97532a5e99289a79648b22c500",
         "95992f4c90c921b52280", "99490db1e700"],
    13: ["a8a2dc704dc0092280", "6a20b70360", "d3a6a2868b0268", "a628e29b80328d48", "598856436a80",
         "69a20b700640", "5a6a21604b289360", "5a521604d0", "69620b705624", "a528e270", "69920b70059340",
         "5e6494714dc01946a4", "5968856450", "5a6921604d00", "59521590ca12", "5964856450", "69520b705624"],
}


@pytest.mark.parametrize("seed", sorted(REFERENCE_RUNS))
def test_seeded_run_matches_the_reference_implementation(seed):
    pool = [Stamp.seed()]
    for op in reference_ops(seed):
        if op[0] == "fork":
            pool[op[1]], new = pool[op[1]].fork()
            pool.append(new)
        elif op[0] == "event":
            pool[op[1]] = pool[op[1]].event()
        elif op[0] == "join":
            pool[op[1]] = pool[op[1]].join(pool[op[2]])
            del pool[op[2]]
        else:
            pool[op[1]] = pool[op[1]].join(pool[op[2]].peek())
    assert [s.encode().hex() for s in pool] == REFERENCE_RUNS[seed]

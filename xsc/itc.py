"""Interval Tree Clocks (Almeida, Baquero and Fonte, 2008): causality stamps for a dynamic set of peers.

A `Stamp` is an immutable pair (id, event) in the paper's normal form:

- id trees:    ``0`` | ``1`` | ``(i1, i2)``          never ``(0, 0)`` nor ``(1, 1)``
- event trees: ``n`` | ``(n, e1, e2)`` with n >= 0   ``min(base(e1), base(e2)) == 0`` and never
  two equal integer leaves (those collapse to one leaf).

Trees are nested tuples and ints, so equality and hashing are structural (and run at C speed).
`str(stamp)` is the paper's notation, ``((1, 0), (0, 1, 0))``.

Operations (each returns new stamps; nothing is mutated):

- ``seed() = (1, 0)``; ``fork((i, e)) = ((i1, e), (i2, e))`` with ``(i1, i2) = split(i)``;
  ``peek((i, e)) = (0, e)``; ``join((i1, e1), (i2, e2)) = (sum(i1, i2), join(e1, e2))``.
- ``event((i, e))`` is ``(i, fill(i, e))`` when fill inflates e, otherwise ``(i, e')`` with
  ``(e', c) = grow(i, e)``: grow increments one integer in the region the id owns and picks, at
  every id branch, the side with the smaller cost, where expanding a leaf ``n`` into ``(n, 0, 0)``
  costs a large constant (``_EXPAND``) and every level costs 1; ties go right, as in the paper and
  the reference implementations.  An anonymous stamp (id 0) cannot register events.
- ``leq`` compares event components only: ``e1 <= e2`` pointwise over [0, 1).
- ``split``, ``sum``, ``fill``, ``grow``, ``norm`` are the paper's definitions.  One extension:
  ``sum`` is the *union* of the two ids.  For disjoint ids, the only case the paper defines, that
  is exactly the paper's sum; for overlapping ids (two versions of the same participant's stamp)
  it keeps ``join`` idempotent instead of failing.

Depth limit: ids deeper than `MAX_DEPTH` levels are refused (`StampTooDeep`) by `fork` and
`decode`.  Event trees only grow along id paths, so every tree stays within the bound and the
recursive algorithms stay far from Python's recursion limit.  Forking the same stamp over and over
deepens its id by one level each time; `fork_many(n)` hands out n balanced ids (depth
ceil(log2 n)) instead.

Binary encoding
---------------
The bit layout of the authors' reference implementation (Erlang ``itc:encode/1``, the same
fields as the paper's section on encoding), id first, then event, every field written most
significant bit first, the whole padded with zero bits to a byte boundary:

    id:    0        -> 00 0            event: n          -> 1 enc_n(n, 2)
           1        -> 00 1                   (0, 0, r)  -> 0 00 ev(r)
           (0, i)   -> 01 id(i)               (0, l, 0)  -> 0 01 ev(l)
           (i, 0)   -> 10 id(i)               (0, l, r)  -> 0 10 ev(l) ev(r)
           (l, r)   -> 11 id(l) id(r)         (n, 0, r)  -> 0 11 0 0 ev(n) ev(r)
                                              (n, l, 0)  -> 0 11 0 1 ev(n) ev(l)
                                              (n, l, r)  -> 0 11 1 ev(n) ev(l) ev(r)

    enc_n(n, B) = 0 <n in B bits>              if n < 2**B
                = 1 enc_n(n - 2**B, B + 1)     otherwise

(`ev(n)` of a number is the leaf form ``1 enc_n(n, 2)``; "0" children are integer leaves 0.)

Worked example, the stamp ``((0, 1), (1, 0, 1))``::

    id (0, 1)        01 001                          -> 01001
    event (1, 0, 1)  0 11 0 0, ev(1), ev(1)          -> 01100 1001 1001
                     ev(1) = 1 enc_n(1, 2) = 1 0 01
    bits  01001011 00100110 01  + 000000 padding    -> bytes 4B 26 40

The Java and C reference implementations lay the same fields into little-endian words with the
least significant bit of each field first, behind a length header; their raw buffers therefore
differ from these bytes, though the fields and their order are the same.

Decoding is strict: empty or truncated input, whole bytes after the stamp, nonzero padding bits,
event counters wider than 64 bits and trees deeper than `MAX_DEPTH` raise `MalformedStamp` (a
`ValueError` and an `xsc.errors.BadRequest`).  Non-normal trees that other implementations might
send are normalized.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Union

from .errors import BadRequest
from .units import counted

__all__ = [
    "MAX_DEPTH",
    "AnonymousStampEvent",
    "ItcError",
    "MalformedStamp",
    "Stamp",
    "StampTooDeep",
]

IdTree = Union[int, tuple]
EventTree = Union[int, tuple]

MAX_DEPTH = 256
"""Deepest id (and so event) tree accepted: a 2**-256 slice of the interval is far below need."""

_EXPAND = 1 << 20
"""grow's cost of expanding a leaf: larger than any path length, so expanding always loses."""

_MAX_COUNTER_BITS = 64
"""enc_n escalates B bit by bit; refusing B beyond this bounds decode work on hostile input."""


class ItcError(BadRequest, ValueError):
    code = "itc-error"


class MalformedStamp(ItcError):
    code = "malformed-stamp"


class StampTooDeep(ItcError):
    code = "stamp-too-deep"


class AnonymousStampEvent(ItcError):
    code = "anonymous-stamp-event"


# --- event trees -----------------------------------------------------------------


def _height(e: EventTree) -> int:
    """max(e): the highest point of the event function."""
    if e.__class__ is int:
        return e
    n, l, r = e
    hl = _height(l)
    hr = _height(r)
    return n + (hl if hl > hr else hr)


def _drop(e: EventTree, m: int) -> EventTree:
    return e - m if e.__class__ is int else (e[0] - m, e[1], e[2])


def _norm_ev(n: int, l: EventTree, r: EventTree) -> EventTree:
    """norm((n, l, r)) for normal children: push the common minimum up, collapse equal leaves."""
    if l.__class__ is int:
        if r.__class__ is int:
            if l == r:
                return n + l
            if l < r:
                return (n + l, 0, r - l) if l else (n, 0, r)
            return (n + r, l - r, 0) if r else (n, l, 0)
        bl, br = l, r[0]
    else:
        bl = l[0]
        br = r if r.__class__ is int else r[0]
    m = bl if bl < br else br
    if m:
        return (n + m, _drop(l, m), _drop(r, m))
    return (n, l, r)


def _join_ev(a: EventTree, b: EventTree, d: int) -> EventTree:
    """join(a, lift(b, d)) for d >= 0: the pointwise maximum, in normal form.

    Lifts travel as the offset d instead of new tuples, so subtrees shared by both sides stay the
    same objects and are skipped by identity.  The work is split by the kinds of the two trees
    (`_join_nodes`, `_join_leaf`), so that each node pays for the type tests once.
    """
    if a.__class__ is int:
        if b.__class__ is int:
            b += d
            return a if a >= b else b
        return _join_leaf(b, d, a)
    if b.__class__ is int:
        return _join_leaf(a, 0, b + d)
    return _join_nodes(a, b, d)


def _join_leaf(e: tuple, d: int, x: int) -> EventTree:
    """join(lift(e, d), x) for a node e and a leaf x."""
    n, l, r = e
    n += d
    if x <= n:  # a leaf at or below e's minimum is covered by e ...
        return (n, l, r) if d else e
    if x >= _height(e) + d:  # ... and one at or above e's maximum covers e
        return x
    x -= n
    l = (l if l >= x else x) if l.__class__ is int else _raise(l, x)
    r = (r if r >= x else x) if r.__class__ is int else _raise(r, x)
    return _norm_ev(n, l, r)


def _raise(e: tuple, x: int) -> EventTree:
    """join(e, x) for a node e, below the one `_join_leaf` measured: measuring the height again at every level
    would cost the subtree's size per level (a deep tree over a bushy one, from a peer, is quadratic)."""
    n, l, r = e
    if x <= n:
        return e
    x -= n
    l = (l if l >= x else x) if l.__class__ is int else _raise(l, x)
    r = (r if r >= x else x) if r.__class__ is int else _raise(r, x)
    return _norm_ev(n, l, r)


def _join_nodes(a: tuple, b: tuple, d: int) -> EventTree:
    """join(a, lift(b, d)) for two nodes: the hot path of join, one call per pair of nodes.

    norm is inlined, and what joining the children found out about them is reused for it: ml / mr
    is the child itself when it is a leaf, None when it is a node."""
    n, al, ar = a
    bn, bl, br = b
    if d:
        bn += d
    elif a is b:
        return a
    if bn < n:  # the side with the lower base is the frame of the result
        n, bn, al, ar, bl, br = bn, n, bl, br, al, ar
    k = bn - n
    if al.__class__ is int:
        if bl.__class__ is int:
            bl += k
            l = ml = al if al >= bl else bl
        else:
            l = _join_leaf(bl, k, al)
            ml = l if l.__class__ is int else None
    elif bl.__class__ is int:
        l = _join_leaf(al, 0, bl + k)
        ml = l if l.__class__ is int else None
    else:
        l = _join_nodes(al, bl, k)
        ml = l if l.__class__ is int else None
    if ar.__class__ is int:
        if br.__class__ is int:
            br += k
            r = mr = ar if ar >= br else br
        else:
            r = _join_leaf(br, k, ar)
            mr = r if r.__class__ is int else None
    elif br.__class__ is int:
        r = _join_leaf(ar, 0, br + k)
        mr = r if r.__class__ is int else None
    else:
        r = _join_nodes(ar, br, k)
        mr = r if r.__class__ is int else None
    if not k and l is al and r is ar:
        return a
    # norm((n, l, r)); ml / mr is the child itself when it is a leaf, None when a node
    if ml is not None:
        if mr is not None:
            if l == r:
                return n + l
            if l < r:
                return (n + l, 0, r - l) if l else (n, 0, r)
            return (n + r, l - r, 0) if r else (n, l, 0)
        m = r[0]
        if not l or not m:
            return (n, l, r)
        if l <= m:
            return (n + l, 0, (m - l, r[1], r[2]))
        return (n + m, l - m, (0, r[1], r[2]))
    ml = l[0]
    if mr is not None:
        if not r or not ml:
            return (n, l, r)
        if r <= ml:
            return (n + r, (ml - r, l[1], l[2]), 0)
        return (n + ml, (0, l[1], l[2]), r - ml)
    mr = r[0]
    if not ml or not mr:
        return (n, l, r)
    m = ml if ml < mr else mr
    return (n + m, (ml - m, l[1], l[2]), (mr - m, r[1], r[2]))


def _leq_ev(a: EventTree, b: EventTree, k: int) -> bool:
    """a <= b + k pointwise (k carries the difference of the bases lifted so far)."""
    if a.__class__ is int:
        # In normal form a tree's minimum is its base.
        return a <= (b if b.__class__ is int else b[0]) + k
    if a is b:
        return k >= 0
    n1, l1, r1 = a
    if b.__class__ is int:
        return _height(a) <= b + k
    n2, l2, r2 = b
    if n1 > n2 + k:
        return False
    k += n2 - n1
    return _leq_ev(l1, l2, k) and _leq_ev(r1, r2, k)


# --- id trees --------------------------------------------------------------------


def _split(i: IdTree, depth: int) -> tuple[IdTree, IdTree]:
    if i.__class__ is int:
        if not i:
            return 0, 0
        if depth >= MAX_DEPTH:
            raise StampTooDeep(
                f"forking would make an id deeper than {MAX_DEPTH} levels",
                hint="fork a shallower stamp, hand out ids with Stamp.fork_many, or join retired ids back",
            )
        return (1, 0), (0, 1)
    l, r = i
    if l.__class__ is int and not l:
        a, b = _split(r, depth + 1)
        return (0, a), (0, b)
    if r.__class__ is int and not r:
        a, b = _split(l, depth + 1)
        return (a, 0), (b, 0)
    return (l, 0), (0, r)


def _sum(a: IdTree, b: IdTree) -> IdTree:
    """Union of two ids (the paper's sum when they are disjoint)."""
    if a.__class__ is int:
        return b if not a else 1
    if b.__class__ is int:
        return a if not b else 1
    if a is b:
        return a
    l = _sum(a[0], b[0])
    r = _sum(a[1], b[1])
    if l.__class__ is int and l == r:
        return l
    return (l, r)


# --- event = fill, else grow -----------------------------------------------------


def _fill(i: IdTree, e: EventTree) -> EventTree:
    """Raise the parts of e the id owns as far as possible without exceeding what e already knows.

    Returns e itself (the same object) when nothing changes, so event() can test with `is`.
    """
    if i.__class__ is int:
        if not i or e.__class__ is int:
            return e
        return _height(e)
    if e.__class__ is int:
        return e
    il, ir = i
    n, el, er = e
    if il.__class__ is int and il:  # (1, ir): the whole left half is ours
        er2 = _fill(ir, er)
        hl = _height(el)
        br = er2 if er2.__class__ is int else er2[0]
        el2 = hl if hl > br else br
        if er2 is er and el2 == el and el.__class__ is int:
            return e
        return _norm_ev(n, el2, er2)
    if ir.__class__ is int and ir:  # (il, 1)
        el2 = _fill(il, el)
        hr = _height(er)
        bl = el2 if el2.__class__ is int else el2[0]
        er2 = hr if hr > bl else bl
        if el2 is el and er2 == er and er.__class__ is int:
            return e
        return _norm_ev(n, el2, er2)
    el2 = _fill(il, el)
    er2 = _fill(ir, er)
    if el2 is el and er2 is er:
        return e
    return _norm_ev(n, el2, er2)


def _grow(i: IdTree, e: EventTree) -> tuple[EventTree, int]:
    """(e', cost): increment one integer of e inside the id's region, the cheapest way."""
    cost = 0
    if e.__class__ is int:
        if i.__class__ is int:  # i == 1 here: event() never grows id 0
            return e + 1, 0
        # Expanding the leaf into (n, 0, 0) inline keeps one frame per level.
        n, el, er = e, 0, 0
        cost = _EXPAND
    else:
        n, el, er = e
    # After fill changed nothing, id 1 only ever sits over integer leaves, so i is a pair here.
    il, ir = i
    if il.__class__ is int and not il:
        er2, c = _grow(ir, er)
        return (n, el, er2), cost + c + 1
    if ir.__class__ is int and not ir:
        el2, c = _grow(il, el)
        return (n, el2, er), cost + c + 1
    el2, cl = _grow(il, el)
    er2, cr = _grow(ir, er)
    if cl < cr:
        return (n, el2, er), cost + cl + 1
    return (n, el, er2), cost + cr + 1


# --- event on a path id -------------------------------------------------------------
#
# Most ids are one interval: a forked id is a path of (0, x) / (x, 0) nodes down to a 1.  Along
# such an id, fill and grow never branch, so `_event_on_path` runs them as loops over the path (the
# same cases of `_fill` and `_grow`, in the same order, so the same trees): what every published
# allocation state and receipt pays for its stamp.


def _path_of(i: IdTree) -> tuple[int, ...] | None:
    """The directions (0 left, 1 right) from the root of id `i` down to its only 1, or None when
    `i` is not one interval of that shape (0, or several leaves 1).  Kept per id object."""
    cached = _PATHS.get(id(i))
    if cached is not None and cached[0] is i:
        return cached[1]
    path: list[int] | None = []
    node = i
    while node.__class__ is not int:
        l, r = node
        if l.__class__ is int and not l:
            path.append(1)
            node = r
        elif r.__class__ is int and not r:
            path.append(0)
            node = l
        else:
            path = None
            break
    result = tuple(path) if path is not None and node else None
    if len(_PATHS) >= 1 << 16:
        _PATHS.clear()
    _PATHS[id(i)] = (i, result)  # the entry holds the id, so its object id is not reused meanwhile
    return result


_PATHS: dict[int, tuple[IdTree, tuple[int, ...] | None]] = {}


def _event_on_path(path: tuple[int, ...], e: EventTree) -> EventTree:
    """event's new event tree for an id given by its path (see `_path_of`): fill, else grow."""
    if not path:  # id 1
        if e.__class__ is int:
            return e + 1  # fill(1, n) = n, then grow
        return _height(e)
    # fill: down the path; at the last level the id is (1, 0) or (0, 1).
    above: list[tuple] = []
    node = e
    last = len(path) - 1
    filled = None
    for level, d in enumerate(path):
        if node.__class__ is int:
            break  # fill(i, n) = n: nothing changes
        n, l, r = node
        if level < last:
            above.append((n, l, r, d))
            node = r if d else l
            continue
        if d == 0:  # (1, 0): raise the left side to max(height(l), base(r))
            hl = _height(l)
            br = r if r.__class__ is int else r[0]
            l2 = hl if hl > br else br
            if not (l2 == l and l.__class__ is int):
                filled = _norm_ev(n, l2, r)
        else:  # (0, 1)
            hr = _height(r)
            bl = l if l.__class__ is int else l[0]
            r2 = hr if hr > bl else bl
            if not (r2 == r and r.__class__ is int):
                filled = _norm_ev(n, l, r2)
        break
    if filled is not None:
        for n, l, r, d in reversed(above):
            filled = _norm_ev(n, l, filled) if d else _norm_ev(n, filled, r)
        return filled
    # grow: expand integer leaves on the way down, add 1 at the end.
    down: list[tuple] = []
    node = e
    for d in path:
        if node.__class__ is int:
            n, l, r = node, 0, 0
        else:
            n, l, r = node
        down.append((n, l, r, d))
        node = r if d else l
    if node.__class__ is not int:  # (not reached: after fill changed nothing, 1 sits over a leaf)
        return _grow(_id_of_path(path), e)[0]
    grown: EventTree = node + 1
    for n, l, r, d in reversed(down):
        grown = (n, l, grown) if d else (n, grown, r)
    return grown


def _id_of_path(path: tuple[int, ...]) -> IdTree:
    i: IdTree = 1
    for d in reversed(path):
        i = (0, i) if d else (i, 0)
    return i


# --- binary encoding -------------------------------------------------------------


def _enc_n_bits(n: int, b: int = 2) -> str:
    prefix = []
    while n >= 1 << b:
        prefix.append("1")
        n -= 1 << b
        b += 1
    return "".join(prefix) + "0" + format(n, f"0{b}b")


def _leaf(n: int) -> str:
    return "1" + _enc_n_bits(n)


# Bit strings by value, as lists for the values small enough to be common (indexing a list is the
# cheapest lookup there is): the leaf form, and the three node headers by which child is the
# leaf 0 (a nonzero base n is written after the header in the leaf form).  Larger values are
# rare enough to be formatted each time (see `_encode_bits`).
_TABLE_SIZE = 1024
_LB = [_leaf(n) for n in range(_TABLE_SIZE)]
_HEAD_L0 = ["000"] + ["01100" + _leaf(n) for n in range(1, _TABLE_SIZE)]  # (n, 0, r)
_HEAD_R0 = ["001"] + ["01101" + _leaf(n) for n in range(1, _TABLE_SIZE)]  # (n, l, 0)
_HEAD_LR = ["010"] + ["0111" + _leaf(n) for n in range(1, _TABLE_SIZE)]  # (n, l, r)


def _enc_id(i: IdTree, out: list) -> None:
    if i.__class__ is int:
        out.append("001" if i else "000")
        return
    l, r = i
    if not l:  # (0, r): a node is never falsy, so this is the leaf 0
        out.append("01")
        _enc_id(r, out)
    elif not r:
        out.append("10")
        _enc_id(l, out)
    else:
        out.append("11")
        _enc_id(l, out)
        _enc_id(r, out)


def _enc_ev(e: tuple, out: list) -> None:
    """Preorder over inner nodes; integer children are written inline (one call per inner node).

    Values index the bit tables directly: one beyond them raises IndexError, and `_encode_bits`
    then formats the stamp on the general path."""
    n, l, r = e
    if not l:  # (n, 0, r): nodes are never falsy, so this is the leaf 0
        if r.__class__ is int:
            out.append(_HEAD_L0[n] + _LB[r])
        else:
            out.append(_HEAD_L0[n])
            _enc_ev(r, out)
    elif not r:  # (n, l, 0)
        if l.__class__ is int:
            out.append(_HEAD_R0[n] + _LB[l])
        else:
            out.append(_HEAD_R0[n])
            _enc_ev(l, out)
    elif l.__class__ is int:
        if r.__class__ is int:
            out.append(_HEAD_LR[n] + _LB[l] + _LB[r])
        else:
            out.append(_HEAD_LR[n] + _LB[l])
            _enc_ev(r, out)
    else:
        out.append(_HEAD_LR[n])
        _enc_ev(l, out)
        if r.__class__ is int:
            out.append(_LB[r])
        else:
            _enc_ev(r, out)


def _enc_ev_any(e: EventTree, out: list) -> None:
    """`_enc_ev` for values of any size (and for a leaf alone)."""
    if e.__class__ is int:
        out.append(_leaf(e))
        return
    n, l, r = e
    if not l:
        out.append("01100" + _leaf(n) if n else "000")
    elif not r:
        out.append("01101" + _leaf(n) if n else "001")
    else:
        out.append("0111" + _leaf(n) if n else "010")
    if l:
        _enc_ev_any(l, out)
    if r:
        _enc_ev_any(r, out)


def _encode_bits(i: IdTree, e: EventTree) -> str:
    """The stamp's bit string, unpadded ('0'/'1' characters)."""
    out: list[str] = []
    _enc_id(i, out)
    start = len(out)
    try:
        if e.__class__ is int:
            out.append(_LB[e])
        else:
            _enc_ev(e, out)
    except IndexError:  # a value beyond the tables
        del out[start:]
        _enc_ev_any(e, out)
    return "".join(out)


# Decoding reads a '0'/'1' string followed by _END; any read reaching into _END is truncation.
_END = "x" * 8


def _event_heads() -> dict[str, tuple[int, int, int]]:
    """5-character peek -> (kind, characters consumed, value) for every event-tree token start.

    kind 0: leaf n < 4 ('1 0 bb', value n); 1: longer leaf (enc_n continues after the '1');
    2-7: nodes (0,0,r), (0,l,0), (0,l,r), (n,l,r), (n,0,r), (n,l,0).
    """
    from itertools import product

    table = {}
    for chars in product("01x", repeat=5):
        s = "".join(chars)

        def clean(k: int) -> bool:
            return "x" not in s[:k]

        if s[0] == "1":
            if s[1] == "0" and clean(4):
                table[s] = (0, 4, int(s[2:4], 2))
            elif s[1] == "1":
                table[s] = (1, 1, 0)
        elif s[0] == "0" and clean(3):
            tag = s[1:3]
            if tag != "11":
                table[s] = ({"00": 2, "01": 3, "10": 4}[tag], 3, 0)
            elif clean(4) and s[3] == "1":
                table[s] = (5, 4, 0)
            elif clean(5):
                table[s] = (6 if s[4] == "0" else 7, 5, 0)
    return table


_EV_HEADS = _event_heads()


def _truncated() -> MalformedStamp:
    return MalformedStamp("truncated stamp encoding", hint="send the whole encoded stamp")


def _too_deep() -> MalformedStamp:
    return MalformedStamp(f"encoded stamp nests deeper than {MAX_DEPTH} levels")


def _dec_id(bits: str, p: int, depth: int) -> tuple[IdTree, int]:
    tag = bits[p : p + 2]
    if tag == "00":
        v = bits[p + 2]
        if v == "x":
            raise _truncated()
        return (1 if v == "1" else 0), p + 3
    if depth >= MAX_DEPTH:
        raise _too_deep()
    if tag == "01":
        r, p = _dec_id(bits, p + 2, depth + 1)
        return (0 if r == 0 else (0, r)), p
    if tag == "10":
        l, p = _dec_id(bits, p + 2, depth + 1)
        return (0 if l == 0 else (l, 0)), p
    if tag != "11":
        raise _truncated()
    l, p = _dec_id(bits, p + 2, depth + 1)
    r, p = _dec_id(bits, p, depth + 1)
    return (l if l.__class__ is int and l == r else (l, r)), p


def _dec_n(bits: str, p: int) -> tuple[int, int]:
    """enc_n(., 2) from p, just after a leaf's '1'."""
    acc, b = 0, 2
    while bits[p] == "1":
        acc += 1 << b
        b += 1
        p += 1
        if b > _MAX_COUNTER_BITS:
            raise MalformedStamp(f"event counter wider than {_MAX_COUNTER_BITS} bits")
    p += 1
    try:
        return acc + int(bits[p : p + b], 2), p + b
    except ValueError:  # the field runs into _END
        raise _truncated() from None


def _dec_ev(bits: str, p: int, depth: int) -> tuple[EventTree, int]:
    head = _EV_HEADS.get(bits[p : p + 5])
    if head is None:
        raise _truncated()
    kind, k, v = head
    if kind == 0:
        return v, p + k
    if kind == 1:
        return _dec_n(bits, p + 1)
    return _dec_node(bits, p + k, depth, kind)


def _dec_node(bits: str, p: int, depth: int, kind: int) -> tuple[EventTree, int]:
    if depth >= MAX_DEPTH:
        raise _too_deep()
    depth += 1
    if kind == 2:
        n = l = 0
        r, p = _dec_ev(bits, p, depth)
    elif kind == 3:
        n = r = 0
        l, p = _dec_ev(bits, p, depth)
    elif kind == 4:
        n = 0
        l, p = _dec_ev(bits, p, depth)
        r, p = _dec_ev(bits, p, depth)
    else:
        if bits[p] != "1":  # a node's base is written in the leaf form
            if bits[p] == "x":
                raise _truncated()
            raise MalformedStamp("invalid tag: a node's base must be encoded as a leaf")
        n, p = _dec_ev(bits, p, depth)
        if kind == 5:
            l, p = _dec_ev(bits, p, depth)
            r, p = _dec_ev(bits, p, depth)
        elif kind == 6:
            l = 0
            r, p = _dec_ev(bits, p, depth)
        else:
            r = 0
            l, p = _dec_ev(bits, p, depth)
    # Normalizing bottom-up accepts the non-normal trees a lax encoder might send.
    bl = l if l.__class__ is int else l[0]
    br = r if r.__class__ is int else r[0]
    if (bl and br) or (l.__class__ is int and l == r):
        return _norm_ev(n, l, r), p
    return (n, l, r), p


# --- validation of trees given by callers ----------------------------------------


def _check_id(i: Any, depth: int = 0) -> IdTree:
    if i.__class__ is int:
        if i in (0, 1):
            return i
        raise MalformedStamp(f"id leaf must be 0 or 1, got {i!r}")
    if not isinstance(i, (tuple, list)) or len(i) != 2:
        raise MalformedStamp(f"id tree must be 0, 1 or a pair, got {i!r}")
    if depth >= MAX_DEPTH:
        raise StampTooDeep(f"id tree deeper than {MAX_DEPTH} levels")
    l = _check_id(i[0], depth + 1)
    r = _check_id(i[1], depth + 1)
    if l.__class__ is int and l == r:
        return l
    return (l, r)


def _check_ev(e: Any, depth: int = 0) -> EventTree:
    if e.__class__ is int:
        if e >= 0:
            return e
        raise MalformedStamp(f"event counters are non-negative, got {e!r}")
    if not isinstance(e, (tuple, list)) or len(e) != 3:
        raise MalformedStamp(f"event tree must be n or (n, e1, e2), got {e!r}")
    if depth >= MAX_DEPTH:
        raise StampTooDeep(f"event tree deeper than {MAX_DEPTH} levels")
    n = e[0]
    if n.__class__ is not int or n < 0:
        raise MalformedStamp(f"event node base must be a non-negative int, got {n!r}")
    return _norm_ev(n, _check_ev(e[1], depth + 1), _check_ev(e[2], depth + 1))


# --- the stamp -------------------------------------------------------------------


class Stamp:
    """An immutable ITC stamp (id, event) in normal form; see the module docstring."""

    __slots__ = ("_id", "_ev", "_hash")

    def __init__(self, id: Any = 1, event: Any = 0) -> None:
        """Build from paper-notation trees (tuples/lists and ints); they are checked and normalized."""
        _set_id(self, _check_id(id))
        _set_ev(self, _check_ev(event))
        _set_hash(self, None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Stamp is immutable")

    # construction ------------------------------------------------------------------
    @classmethod
    def seed(cls) -> Stamp:
        return _SEED

    def fork(self) -> tuple[Stamp, Stamp]:
        i1, i2 = _split(self._id, 0)
        e = self._ev
        return _make(i1, e), _make(i2, e)

    def fork_many(self, n: int) -> tuple[Stamp, ...]:
        """n stamps by repeated forks, breadth first, so their ids are balanced (depth ~log2 n)."""
        if n < 1:
            raise ItcError(f"fork_many needs n >= 1, got {n}")
        queue = deque([self])
        while len(queue) < n:
            queue.extend(queue.popleft().fork())
        return tuple(queue)

    def peek(self) -> Stamp:
        """The anonymous copy (0, e): carries causal information, cannot register events."""
        return _make(0, self._ev)

    def event(self) -> Stamp:
        i = self._id
        if i.__class__ is int and not i:
            raise AnonymousStampEvent(
                "an anonymous stamp (id 0) cannot register events",
                hint="register events on a stamp that owns an id (from seed or fork), not on a peek",
            )
        e = self._ev
        path = _path_of(i)
        if path is not None:
            return _make(i, _event_on_path(path, e))
        filled = _fill(i, e)
        if filled is e:
            filled = _grow(i, e)[0]
        return _make(i, filled)

    def join(self, other: Stamp) -> Stamp:
        return _make(_sum(self._id, other._id), _join_ev(self._ev, other._ev, 0))

    def joined_under(self, later: Stamp) -> Stamp:
        """`self.join(later.peek())` for a `later` known to be after self (`self.leq(later)`, not
        checked): self's id with later's event tree, without walking the trees (the join of two
        event trees one of which is above the other is the upper one, in its unique normal form)."""
        return _make(self._id, later._ev)

    # comparison ---------------------------------------------------------------------
    def leq(self, other: Stamp) -> bool:
        """True when every event known to self is known to other (ids are not compared)."""
        return _leq_ev(self._ev, other._ev, 0)

    def concurrent(self, other: Stamp) -> bool:
        return not _leq_ev(self._ev, other._ev, 0) and not _leq_ev(other._ev, self._ev, 0)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Stamp:
            return NotImplemented
        return self is other or (self._id == other._id and self._ev == other._ev)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self._id, self._ev))
            _set_hash(self, h)
        return h

    # views --------------------------------------------------------------------------
    @property
    def id(self) -> IdTree:
        return self._id

    @property
    def event_tree(self) -> EventTree:
        return self._ev

    @property
    def is_anonymous(self) -> bool:
        return self._id == 0

    @property
    def height(self) -> int:
        """The most events known anywhere in the interval (the paper's ``max(e)``)."""
        return _height(self._ev)

    def __str__(self) -> str:
        return str((self._id, self._ev))

    def __repr__(self) -> str:
        return f"Stamp({self._id!r}, {self._ev!r})"

    def __reduce__(self):
        # The trees are in normal form already: a copy (pickle, a process pool) skips the checks.
        return (_make, (self._id, self._ev))

    def __copy__(self) -> Stamp:
        return self

    def __deepcopy__(self, memo: dict) -> Stamp:
        return self

    # bytes --------------------------------------------------------------------------
    def encode(self) -> bytes:
        bits = _encode_bits(self._id, self._ev)
        nbytes = (len(bits) + 7) >> 3
        return (int(bits, 2) << (nbytes * 8 - len(bits))).to_bytes(nbytes, "big")

    @classmethod
    def decode(cls, data: bytes) -> Stamp:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedStamp(f"an encoded stamp is bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise MalformedStamp("empty stamp encoding")
        total = len(data) * 8
        bits = format(int.from_bytes(data, "big"), f"0{total}b") + _END
        i, p = _dec_id(bits, 0, 0)
        e, p = _dec_ev(bits, p, 0)
        if total - p >= 8:
            raise MalformedStamp(f"{counted((total - p) // 8, 'trailing byte')} after the encoded stamp")
        if "1" in bits[p:total]:
            raise MalformedStamp("nonzero padding bits after the encoded stamp")
        return _make(i, e)

    # pydantic: a Stamp field validates Stamp, bytes or hex text, and dumps to hex in JSON
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def validate(value: Any) -> Stamp:
            if isinstance(value, Stamp):
                return value
            if isinstance(value, str):
                try:
                    value = bytes.fromhex(value)
                except ValueError:
                    raise MalformedStamp("a stamp in text form is the hex of its encoding") from None
            return cls.decode(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: s.encode().hex(), when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict:
        return {"type": "string", "pattern": "^([0-9a-fA-F]{2})+$", "description": "ITC stamp, hex of its encoding"}


_set_id = Stamp._id.__set__  # type: ignore[attr-defined]
_set_ev = Stamp._ev.__set__  # type: ignore[attr-defined]
_set_hash = Stamp._hash.__set__  # type: ignore[attr-defined]
_new = object.__new__


def _make(i: IdTree, e: EventTree) -> Stamp:
    """Trusted constructor for trees already in normal form."""
    s = _new(Stamp)
    _set_id(s, i)
    _set_ev(s, e)
    _set_hash(s, None)
    return s


_SEED = _make(1, 0)

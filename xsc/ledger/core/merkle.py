"""Merkle trees over byte strings: a root that commits to a list and its length, and proofs that one item is
at one place in it.

Pure.  Leaves and inner nodes are hashed with distinct prefixes (0x00, 0x01), so no inner node can
pass for a leaf; an odd node at the end of a level is carried up unchanged.  The tree's top alone does not
say how many items it holds (the top of 3 items is the top of 4 whose last two hash to the third), so a
proof of item 0 of 3 would also pass as item 0 of 4: the root is the top hashed once more with the count
(prefix 0x02), and `verify` walks exactly the path that (index, count) fixes.  Used for the provenance ids an
aggregated ledger transfer covers and for provenance records signed in batches.

`unsized_root` and `verify_unsized` are the rule without the count, which provenance records signed
under the first batch rule were checked by; nothing new is made with it (docs/compute.md, "Provenance").
"""

from __future__ import annotations

import hashlib
import struct
from typing import Sequence

_LEAF, _NODE, _SIZED = b"\x00", b"\x01", b"\x02"
HASH_BYTES = 32
MAX_COUNT = 2**64 - 1  # the count is hashed in 8 bytes


def leaf_hash(item: bytes) -> bytes:
    return hashlib.sha256(_LEAF + item).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _sized(top: bytes, count: int) -> bytes:
    return hashlib.sha256(_SIZED + struct.pack(">Q", count) + top).digest()


def _levels(items: Sequence[bytes]) -> list[list[bytes]]:
    if not items:
        raise ValueError("a Merkle tree needs at least one item")
    level = [leaf_hash(item) for item in items]
    levels = [level]
    while len(level) > 1:
        level = [_node(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def root(items: Sequence[bytes]) -> bytes:
    """The root of `items`: their tree's top and their count."""
    return _sized(_levels(items)[-1][0], len(items))


def unsized_root(items: Sequence[bytes]) -> bytes:
    """The tree's top alone, which does not pin the count: what `verify_unsized` checks against."""
    return _levels(items)[-1][0]


def tree(items: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and, per item, its inclusion proof: the sibling hashes from the leaf up (None-free).  A proof
    is the same under `root` and `unsized_root`."""
    levels = _levels(items)
    proofs = []
    for index in range(len(items)):
        proof, i = [], index
        for level in levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            i //= 2
        proofs.append(proof)
    return _sized(levels[-1][0], len(items)), proofs


def _top(item: bytes, index: int, count: int, proof: Sequence[bytes]) -> bytes | None:
    """The top that `proof` leads `item` to from place `index` of `count`, or None when the proof is not
    exactly the siblings that place has: one 32-byte hash per level where it has a sibling, no more, no fewer."""
    if type(index) is not int or type(count) is not int or not 0 <= index < count <= MAX_COUNT:
        return None
    proof = list(proof)
    if any(type(p) is not bytes or len(p) != HASH_BYTES for p in proof):
        return None
    digest, i, width, used = leaf_hash(item), index, count, 0
    while width > 1:
        if i ^ 1 < width:
            if used == len(proof):
                return None
            other = proof[used]
            used += 1
            digest = _node(other, digest) if i & 1 else _node(digest, other)
        i, width = i // 2, (width + 1) // 2
    return digest if used == len(proof) else None


def verify(item: bytes, index: int, count: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """Whether `item` is the `index`-th of `count` items under `expected_root` (a `root`), by `proof`."""
    top = _top(item, index, count, proof)
    return top is not None and _sized(top, count) == expected_root


def verify_unsized(item: bytes, index: int, count: int, proof: Sequence[bytes], expected_top: bytes) -> bool:
    """Whether `item` is under `expected_top` (an `unsized_root`) by `proof`.  The place it proves is not the
    only one: the same proof can pass for another (index, count) under the same top."""
    top = _top(item, index, count, proof)
    return top is not None and top == expected_top


__all__ = ["HASH_BYTES", "leaf_hash", "root", "tree", "unsized_root", "verify", "verify_unsized"]

"""Merkle trees over byte strings: a root that commits to a list, and proofs that one item is in it.

Pure.  Leaves and inner nodes are hashed with distinct prefixes (0x00, 0x01), so no inner node can
pass for a leaf; an odd node at the end of a level is carried up unchanged.  Used for the provenance
ids an aggregated ledger transfer covers and for provenance records signed in batches.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

_LEAF, _NODE = b"\x00", b"\x01"


def leaf_hash(item: bytes) -> bytes:
    return hashlib.sha256(_LEAF + item).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


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
    return _levels(items)[-1][0]


def tree(items: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and, per item, its inclusion proof: the sibling hashes from the leaf up (None-free)."""
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
    return levels[-1][0], proofs


def verify(item: bytes, index: int, count: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """Whether `item` is the `index`-th of `count` items under `expected_root`, by `proof`."""
    if not 0 <= index < count:
        return False
    digest, i, width, proof = leaf_hash(item), index, count, list(proof)
    while width > 1:
        sibling = i ^ 1
        if sibling < width:
            if not proof:
                return False
            other = proof.pop(0)
            digest = _node(other, digest) if i & 1 else _node(digest, other)
        i, width = i // 2, (width + 1) // 2
    return not proof and digest == expected_root


__all__ = ["leaf_hash", "root", "tree", "verify"]

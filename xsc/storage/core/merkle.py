"""Block hashes and the per-share Merkle tree over them.

Leaves and inner nodes are hashed with distinct one-byte prefixes so a leaf can
never pass for an inner node (second-preimage safety); an odd node is promoted
unchanged to the next level.
"""

from __future__ import annotations

import hashlib

HASH_BYTES = 32


def block_hash(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()


def _leaf(h: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + h).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(block_hashes: list[bytes]) -> bytes:
    if not block_hashes:
        raise ValueError("a share has at least one block")
    level = [_leaf(h) for h in block_hashes]
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def proof(block_hashes: list[bytes], index: int) -> list[tuple[bool, bytes]]:
    """Sibling path from leaf `index` to the root: (sibling is on the left, sibling hash)."""
    level = [_leaf(h) for h in block_hashes]
    path: list[tuple[bool, bytes]] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append((sibling < index, level[sibling]))
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level, index = nxt, index // 2
    return path


def verify_proof(block_hash_: bytes, path: list[tuple[bool, bytes]], expected_root: bytes) -> bool:
    h = _leaf(block_hash_)
    for left, sibling in path:
        h = _node(sibling, h) if left else _node(h, sibling)
    return h == expected_root

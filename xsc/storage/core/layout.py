"""Exact sizes of a stored file: segments, ciphertext, blocks, and the bytes a store must hold.

A file of `size` bytes is cut into `segment_count` segments of `segment_size`
bytes (the last may be shorter; an empty file is one empty segment).  Each
segment's ciphertext is its plaintext plus a 16-byte GCM tag, padded up to a
multiple of k and split into N equal blocks.
"""

from __future__ import annotations

from .crypto import TAG_BYTES
from .erasure import N, block_length


def segment_count(size: int, segment_size: int) -> int:
    return max(1, -(-size // segment_size))


def plaintext_length(size: int, segment_size: int, segment: int) -> int:
    if segment < segment_count(size, segment_size) - 1:
        return segment_size
    return size - segment * segment_size


def ciphertext_length(plaintext_length_: int) -> int:
    return plaintext_length_ + TAG_BYTES


def segment_block_length(plaintext_length_: int) -> int:
    return block_length(ciphertext_length(plaintext_length_))


def share_bytes(size: int, segment_size: int) -> int:
    """Bytes of block data in one share of the file."""
    count = segment_count(size, segment_size)
    full = segment_block_length(segment_size) * (count - 1)
    return full + segment_block_length(plaintext_length(size, segment_size, count - 1))


def stored_bytes(size: int, segment_size: int) -> int:
    """Bytes of block data all N shares of the file hold together."""
    return N * share_bytes(size, segment_size)

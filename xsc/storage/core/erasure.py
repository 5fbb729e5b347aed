"""Reed-Solomon RS(k=4, m=2) over one segment, with zfec.

zfec counts shares its own way: our RS(k=4, m=2) is `zfec.Encoder(4, 6)`.  A
segment is zero-padded to a multiple of k and cut into k primary blocks; zfec
adds m parity blocks.  Any k of the k+m blocks rebuild the padded segment.

zfec's code is the definition: where Intel's ISA-L is installed, it computes the same parity blocks from zfec's
coefficients (isal.py), at about a twentieth of zfec's CPU; decoding stays with zfec.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a coder is made: what only needs K and M (a capability's parser) goes without
    import zfec  # it and the argparse it pulls in (~2 ms of `xsc store get`'s start)

K = 4
M = 2
N = K + M
_PARITY = tuple(range(K, N))
_local = threading.local()


def _encoder() -> zfec.Encoder:
    # One per thread: zfec objects are used from the CPU pool's threads.
    enc = getattr(_local, "encoder", None)
    if enc is None:
        import zfec

        enc = _local.encoder = zfec.Encoder(K, N)
    return enc


def block_length(segment_length: int) -> int:
    """Length of each of the N blocks of a segment of `segment_length` bytes."""
    return max(1, -(-segment_length // K))


def encode(segment: bytes | bytearray | memoryview) -> list[bytes]:
    """The N blocks of a segment: blocks 0..K-1 are the (padded) segment itself, K..N-1 parity.  Each block is a
    copy: nothing returned refers to `segment` (a buffer its caller reuses: SegmentCipher.encrypt_pieces)."""
    size = block_length(len(segment))
    view = memoryview(segment)
    if len(view) != size * K:  # padded in a copy: at 1 MiB segments (and a tag of 16 bytes), only a file's last
        view = memoryview(b"".join((view, bytes(size * K - len(view)))))
    primary = tuple(bytes(view[i * size:(i + 1) * size]) for i in range(K))
    return [*primary, *_parity()(primary, size)]


ParityCoder = Callable[[Sequence[bytes], int], "list[bytes]"]  # (K data blocks, their length) -> the M parity blocks
_coder: list[ParityCoder] = []  # this process's, once chosen


def _parity() -> ParityCoder:
    if not _coder:
        _coder.append(parity_coder())
    return _coder[0]


def parity_coder(library: str | None = None) -> ParityCoder:
    """What computes the parity blocks: ISA-L with zfec's coefficients where its library (`library`, else ISA-L's
    own) is installed, else zfec."""
    from . import isal

    coder = isal.load(parity_rows(), library or isal.LIBRARY)
    if coder is not None:
        return coder
    return lambda data, size: list(_encoder().encode(tuple(data), _PARITY))


def parity_rows() -> list[list[int]]:
    """zfec's parity coefficients: row r, column j is what data block j is multiplied by (in GF(2^8)) in parity block
    K + r, read off zfec by encoding one-byte blocks all zero but one."""
    rows = [[0] * K for _ in range(M)]
    for j in range(K):
        unit = tuple(bytes([i == j]) for i in range(K))
        for r, block in enumerate(_encoder().encode(unit, _PARITY)):
            rows[r][j] = block[0]
    return rows


def pieces(blocks: Mapping[int, bytes], segment_length: int) -> list[bytes | memoryview]:
    """The segment as the pieces it is made of, in order: with the K data blocks, those blocks cut to its length
    (nothing copied: a reader that takes pieces, as SegmentCipher.decrypt does, needs no concatenation);
    otherwise the segment rebuilt by `decode`."""
    if not all(i in blocks for i in range(K)):
        return [decode(blocks, segment_length)]
    out: list[bytes | memoryview] = []
    left = segment_length
    for i in range(K):
        block = blocks[i]
        if len(block) > left:  # the padding, in the last block (or the last few, for a segment of a few bytes)
            block = memoryview(block)[:left]
        if len(block):
            out.append(block)
        left -= len(block)
    return out


def decode(blocks: Mapping[int, bytes], segment_length: int) -> bytes:
    """Rebuild a segment from any K of its blocks (block number -> block).

    With the K data blocks the answer is a concatenation; otherwise zfec solves for
    the missing ones."""
    if all(i in blocks for i in range(K)):
        data = b"".join(blocks[i] for i in range(K))
    else:
        if len(blocks) < K:
            raise ValueError(f"need {K} blocks to decode, got {len(blocks)}")
        nums = tuple(sorted(blocks)[:K])
        import zfec

        # Decoder.decode reorders the sequences it is given: always pass fresh tuples.
        parts = zfec.Decoder(K, N).decode(tuple(blocks[i] for i in nums), nums)
        data = b"".join(parts)
    return data[:segment_length]

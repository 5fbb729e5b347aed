"""Reed-Solomon RS(k=4, m=2) over one segment, with zfec.

zfec counts shares its own way: our RS(k=4, m=2) is `zfec.Encoder(4, 6)`.  A
segment is zero-padded to a multiple of k and cut into k primary blocks; zfec
adds m parity blocks.  Any k of the k+m blocks rebuild the padded segment.

zfec's code is the definition: where Intel's ISA-L is installed, it computes the same blocks from zfec's coefficients
(isal.py): a put's parity blocks at about a twentieth of zfec's CPU, and the data blocks a get or a repair rebuilds
when one is missing at about a quarter (docs/storage.md, Speed).
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
# (K block numbers, their blocks, their length) -> the K data blocks
DataCoder = Callable[[Sequence[int], Sequence[bytes], int], "list[bytes]"]
_chosen: dict[str, Callable] = {}  # this process's coders, once chosen


def _parity() -> ParityCoder:
    if "parity" not in _chosen:
        _chosen["parity"] = parity_coder()
    return _chosen["parity"]


def _data() -> DataCoder:
    if "data" not in _chosen:
        _chosen["data"] = data_coder()
    return _chosen["data"]


def parity_coder(library: str | None = None) -> ParityCoder:
    """What computes the parity blocks: ISA-L with zfec's coefficients where its library (`library`, else ISA-L's
    own) is installed, else zfec."""
    from . import isal

    coder = isal.load(parity_rows(), library or isal.LIBRARY)
    if coder is not None:
        return coder
    return lambda data, size: list(_encoder().encode(tuple(data), _PARITY))


def data_coder(library: str | None = None) -> DataCoder:
    """What rebuilds the data blocks from any K blocks: ISA-L with zfec's coefficients where its library (`library`,
    else ISA-L's own) is installed, else zfec."""
    from . import isal

    coder = isal.load_data(parity_rows(), library or isal.LIBRARY)
    if coder is not None:
        return coder

    def zfec_data(present: Sequence[int], blocks: Sequence[bytes], size: int) -> list[bytes]:
        import zfec

        # Decoder.decode reorders the sequences it is given: always pass fresh tuples.
        return list(zfec.Decoder(K, N).decode(tuple(blocks), tuple(present)))

    return zfec_data


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
    """The segment as the pieces it is made of, in order: its K data blocks (those missing rebuilt from any K blocks
    of `blocks`, block number -> block) cut to its length, nothing else copied (a reader that takes pieces, as
    SegmentCipher.decrypt does, needs no concatenation)."""
    out: list[bytes | memoryview] = []
    left = segment_length
    for block in _data_blocks(blocks):
        if len(block) > left:  # the padding, in the last block (or the last few, for a segment of a few bytes)
            block = memoryview(block)[:left]
        if len(block):
            out.append(block)
        left -= len(block)
    return out


def decode(blocks: Mapping[int, bytes], segment_length: int) -> bytes:
    """Rebuild a segment from any K of its blocks (block number -> block)."""
    return b"".join(pieces(blocks, segment_length))


def _data_blocks(blocks: Mapping[int, bytes]) -> list[bytes]:
    if all(i in blocks for i in range(K)):
        return [blocks[i] for i in range(K)]
    if len(blocks) < K:
        raise ValueError(f"need {K} blocks to decode, got {len(blocks)}")
    present = sorted(blocks)[:K]
    if not all(type(i) is int and 0 <= i < N for i in present):
        raise ValueError(f"block numbers are 0..{N - 1}, got {present}")
    chosen = [blocks[i] for i in present]
    size = len(chosen[0])
    if any(len(block) != size for block in chosen):  # ISA-L would read past the end of a shorter one
        raise ValueError(f"the blocks of a segment are of one length, got {[len(block) for block in chosen]}")
    return _data()(present, chosen, size)

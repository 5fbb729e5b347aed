"""The blocks ISA-L computes are zfec's, byte for byte, from any thread: a put's parity blocks, and the data blocks
rebuilt from any four of the six; without ISA-L zfec computes them."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Callable, TypeVar

import pytest
import zfec
from hypothesis import given, settings
from hypothesis import strategies as st

from xsc.storage.core import erasure, isal


def _zfec_blocks(segment: bytes) -> list[bytes]:
    size = erasure.block_length(len(segment))
    padded = segment + bytes(size * erasure.K - len(segment))
    primary = tuple(padded[i * size:(i + 1) * size] for i in range(erasure.K))
    return list(zfec.Encoder(erasure.K, erasure.N).encode(primary))


Coder = TypeVar("Coder")


def _installed(coder: Coder | None) -> Coder:
    if coder is None:
        pytest.skip(f"ISA-L ({isal.LIBRARY}, Debian's libisal2) is not installed here")
    return coder


def _isal() -> isal.Parity:
    return _installed(isal.load(erasure.parity_rows()))


def _isal_data() -> isal.Data:
    return _installed(isal.load_data(erasure.parity_rows()))


def _on_threads(work: Callable[[int], list], threads: int = 4) -> dict[int, list]:
    """`work(t)` for each t below `threads`, on as many threads started at once; what each gave, by t."""
    start = threading.Barrier(threads)
    got: dict[int, list] = {}

    def run(t: int) -> None:
        start.wait()
        got[t] = work(t)

    running = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return got


@settings(max_examples=200, deadline=None)
@given(segment=st.binary(min_size=0, max_size=5000))
def test_isal_makes_zfecs_parity_blocks(segment: bytes) -> None:
    isal = _isal()
    blocks = _zfec_blocks(segment)
    assert isal(blocks[:erasure.K], len(blocks[0])) == blocks[erasure.K:]


def test_isal_makes_zfecs_parity_blocks_from_threads_at_once() -> None:
    isal = _isal()
    # Each thread encodes segments of sizes going up and down, so its buffers grow while the others use theirs.
    sizes = [1024 * 1024 + 16, 5, 4 * 1024 * 1024, 1000, 1024 * 1024 + 16]
    segments = {t: [os.urandom(n) for n in sizes] for t in range(4)}

    def work(t: int) -> list[list[bytes]]:
        out = []
        for segment in segments[t]:
            size = erasure.block_length(len(segment))
            padded = segment + bytes(size * erasure.K - len(segment))
            out.append(isal([padded[i * size:(i + 1) * size] for i in range(erasure.K)], size))
        return out

    got = _on_threads(work, len(segments))
    for t, mine in segments.items():
        assert got[t] == [_zfec_blocks(segment)[erasure.K:] for segment in mine]


def test_without_isal_zfec_makes_the_blocks() -> None:
    coder = erasure.parity_coder("libisal-not-installed.so.0")
    assert not isinstance(coder, isal.Parity)
    blocks = _zfec_blocks(os.urandom(1024 * 1024 + 16))
    assert coder(blocks[:erasure.K], len(blocks[0])) == blocks[erasure.K:]


def test_the_coder_is_isal_where_it_is_installed() -> None:
    _isal()
    assert isinstance(erasure.parity_coder(), isal.Parity)
    segment = os.urandom(1024 * 1024 + 16)
    assert erasure.encode(segment) == _zfec_blocks(segment)


SUBSETS = list(itertools.combinations(range(erasure.N), erasure.K))


def _zfec_data(blocks: list[bytes], present: tuple[int, ...]) -> list[bytes]:
    return list(zfec.Decoder(erasure.K, erasure.N).decode(tuple(blocks[i] for i in present), present))


@settings(max_examples=300, deadline=None)
@given(segment=st.binary(min_size=0, max_size=5000), present=st.sampled_from(SUBSETS))
def test_isal_rebuilds_zfecs_data_blocks_from_any_four(segment: bytes, present: tuple[int, ...]) -> None:
    data = _isal_data()
    blocks = _zfec_blocks(segment)
    got = data(present, [blocks[i] for i in present], len(blocks[0]))
    assert got == _zfec_data(blocks, present) == blocks[:erasure.K]


def test_isal_rebuilds_zfecs_data_blocks_from_threads_at_once() -> None:
    data = _isal_data()
    # Each thread rebuilds segments of sizes going up and down from every set of blocks, so its buffers grow while
    # the others use theirs, and the tables of each set are made by whichever thread comes first.
    sizes = [1024 * 1024 + 16, 5, 4 * 1024 * 1024, 1000, 1024 * 1024 + 16]
    segments = {t: [_zfec_blocks(os.urandom(n)) for n in sizes] for t in range(4)}
    got = _on_threads(lambda t: [data(present, [blocks[i] for i in present], len(blocks[0]))
                                 for blocks in segments[t] for present in SUBSETS], len(segments))
    for t, mine in segments.items():
        assert got[t] == [blocks[:erasure.K] for blocks in mine for _ in SUBSETS]


def test_without_isal_zfec_rebuilds_the_data_blocks() -> None:
    coder = erasure.data_coder("libisal-not-installed.so.0")
    assert not isinstance(coder, isal.Data)
    blocks = _zfec_blocks(os.urandom(1024 * 1024 + 16))
    for present in SUBSETS:
        assert coder(present, [blocks[i] for i in present], len(blocks[0])) == blocks[:erasure.K]


def test_the_decoder_is_isal_where_it_is_installed() -> None:
    _isal_data()
    assert isinstance(erasure.data_coder(), isal.Data)
    segment = os.urandom(1024 * 1024 + 16)
    blocks = erasure.encode(segment)
    assert erasure.decode({1: blocks[1], 3: blocks[3], 4: blocks[4], 5: blocks[5]}, len(segment)) == segment
    # Blocks from other nodes come as views of the bodies they came in, or buffers of their own.
    body = b"".join(blocks)
    size = len(blocks[0])
    views = {s: memoryview(body)[s * size:(s + 1) * size] for s in (0, 2, 5)} | {4: bytearray(blocks[4])}
    assert erasure.decode(views, len(segment)) == segment


def test_blocks_that_cannot_be_decoded_are_refused() -> None:
    blocks = erasure.encode(os.urandom(1000))
    with pytest.raises(ValueError, match="need 4 blocks"):
        erasure.decode({0: blocks[0], 4: blocks[4], 5: blocks[5]}, 1000)
    with pytest.raises(ValueError, match="of one length"):
        erasure.decode({0: blocks[0], 1: blocks[1], 4: blocks[4], 5: blocks[5][:-1]}, 1000)
    with pytest.raises(ValueError, match="block numbers are 0..5"):
        erasure.decode({0: blocks[0], 1: blocks[1], 5: blocks[5], 6: blocks[4]}, 1000)
    with pytest.raises(ValueError, match="block numbers are 0..5"):
        erasure.decode({-1: blocks[2], 0: blocks[0], 1: blocks[1], 5: blocks[5]}, 1000)

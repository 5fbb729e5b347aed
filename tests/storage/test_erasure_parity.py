"""The parity blocks ISA-L computes are zfec's, byte for byte, from any thread; without ISA-L zfec computes them."""

from __future__ import annotations

import os
import threading

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


def _isal() -> isal.Parity:
    coder = isal.load(erasure.parity_rows())
    if coder is None:
        pytest.skip(f"ISA-L ({isal.LIBRARY}, Debian's libisal2) is not installed here")
    return coder


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
    start = threading.Barrier(len(segments))
    got: dict[int, list[list[bytes]]] = {}

    def run(t: int) -> None:
        start.wait()
        got[t] = []
        for segment in segments[t]:
            size = erasure.block_length(len(segment))
            padded = segment + bytes(size * erasure.K - len(segment))
            got[t].append(isal([padded[i * size:(i + 1) * size] for i in range(erasure.K)], size))

    threads = [threading.Thread(target=run, args=(t,)) for t in segments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
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

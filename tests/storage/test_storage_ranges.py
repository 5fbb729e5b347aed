"""Ranged reads: `Range:` on GET /v1/store/files/{cap} reads only the segments covering the range."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from xsc.errors import RangeNotSatisfiable
from xsc.node.appkeys import NODE
from xsc.storage.core import erasure
from xsc.storage.core.crypto import TAG_BYTES
from xsc.storage.core.ranges import parse_range

SEG = 4096
SIZE = 10 * SEG + 123
PIECE = erasure.block_length(SEG + TAG_BYTES)  # plaintext bytes of a segment's block


@pytest.fixture
async def ranged(node_factory):
    client = await node_factory(storage={"segment_size": SEG, "capacity": 8 * 1024 * 1024})
    data = os.urandom(SIZE)
    resp = await client.post("/v1/store/files", data=data, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    cap = (await resp.json())["capability"]
    store = client.app[NODE].gateway.store
    reads: list[int] = []
    real = store.get_block

    def counting(si, share, segment):
        reads.append(segment)
        return real(si, share, segment)

    def counting_reader(si):  # a get passed on reads through one (share_store.BlockReader)
        reader = real_reader(si)
        get = reader.get

        def counted(share, segment):
            reads.append(segment)
            return get(share, segment)

        reader.get = counted
        return reader

    real_reader = store.block_reader
    store.get_block = counting
    store.block_reader = counting_reader
    return client, cap, data, reads


@pytest.mark.parametrize("first,last", [(0, 0), (0, SEG - 1), (SEG - 1, SEG), (SEG, 2 * SEG - 1),
                                        (3 * SEG - 5, 5 * SEG + 5), (10 * SEG, SIZE - 1), (SIZE - 1, SIZE - 1),
                                        # about the bounds of the pieces a segment is decrypted into, one per block
                                        (PIECE - 1, PIECE), (PIECE, PIECE), (PIECE + 1, 3 * PIECE + 2),
                                        (SEG + 2 * PIECE, 2 * SEG + PIECE - 1)])
async def test_a_range_reads_only_the_segments_covering_it(ranged, first: int, last: int) -> None:
    client, cap, data, reads = ranged
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes={first}-{last}"})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert await resp.read() == data[first:last + 1]
    assert set(reads) == set(range(first // SEG, last // SEG + 1))
    assert len(reads) == 4 * len(set(reads))  # the 4 data shares of each segment, nothing else


async def test_open_and_suffix_ranges_and_no_range(ranged) -> None:
    client, cap, data, _ = ranged
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": "bytes=-100"})
    assert resp.status == 206 and await resp.read() == data[-100:]
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes={SEG * 4}-"})
    assert resp.status == 206 and await resp.read() == data[SEG * 4:]
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes=5-{SIZE * 9}"})
    assert resp.status == 206 and await resp.read() == data[5:]
    resp = await client.get(f"/v1/store/files/{cap}")
    assert resp.status == 200 and resp.headers["Accept-Ranges"] == "bytes" and await resp.read() == data


async def test_a_range_past_the_end_is_416(ranged) -> None:
    client, cap, _, reads = ranged
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes={SIZE}-"})
    assert resp.status == 416
    assert (await resp.json())["code"] == "range-not-satisfiable"
    assert reads == []


async def test_a_range_of_more_digits_than_int_reads_is_read_as_the_number_it_is(ranged) -> None:
    """A header holds 8,190 bytes, and int() raises past 4,300 digits: such a range was a 500."""
    client, cap, data, _ = ranged
    for header, expected in ((f"bytes={'0' * 5000}5-", data[5:]), (f"bytes=5-{'9' * 5000}", data[5:]),
                             (f"bytes=-{'9' * 5000}", data)):
        resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": header})
        assert resp.status == 206 and await resp.read() == expected, header[:12]
    resp = await client.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes={'9' * 5000}-"})
    assert resp.status == 416 and (await resp.json())["code"] == "range-not-satisfiable"


@settings(deadline=None)  # pure, but the machine may be loaded
@given(size=st.integers(0, 10_000), a=st.integers(0, 12_000), b=st.integers(0, 12_000))
def test_parse_range_selects_what_python_slicing_selects(size: int, a: int, b: int) -> None:
    data = range(size)
    for header, expected in ((f"bytes={a}-{b}", data[a:b + 1] if a <= b else None),
                             (f"bytes={a}-", data[a:]), (f"bytes=-{b}", data[-b:] if b else None)):
        try:
            got = parse_range(header, size)
        except RangeNotSatisfiable:
            assert expected is None or len(expected) == 0
            continue
        if got is None:
            assert a > b and header == f"bytes={a}-{b}"
            continue
        assert data[got[0]:got[1] + 1] == expected


def test_malformed_or_multiple_ranges_are_ignored() -> None:
    for header in (None, "", "items=0-1", "bytes=0-1,5-6", "bytes=-", "bytes=x-3"):
        assert parse_range(header, 100) is None


async def test_a_remote_share_reader_asks_its_holder_only_for_the_range() -> None:
    from xsc.storage.core import layout
    from xsc.storage.core.manifest import Manifest
    from xsc.storage.remote import READ_BATCH, RemoteShareReader

    size = 100 * SEG + 5
    manifest = Manifest(size=size, segment_size=SEG, k=4, m=2, segment_count=layout.segment_count(size, SEG),
                        share_roots=tuple("00" * 32 for _ in range(6)), ciphertext_hash="00" * 32)
    asked: list[tuple[int, int]] = []

    class Holder:
        round_trip = None  # a short path: one range asked ahead

        async def blocks(self, si, share, first, count, lengths, timeout=None):
            asked.append((first, count))
            return [bytes([i % 256]) for i in range(first, first + count)]

    wanted = range(40, 43)
    reader = RemoteShareReader(Holder(), b"\0" * 32, 1, manifest, 5.0, wanted)
    assert [await reader.get(i) for i in wanted] == [bytes([i]) for i in wanted]
    await reader.close()
    assert asked == [(40, 3)]  # one batch, from the range's first segment, no read-ahead past its last
    whole = RemoteShareReader(Holder(), b"\0" * 32, 1, manifest, 5.0)
    asked.clear()
    assert await whole.get(0) == b"\0"
    await whole.close()
    assert asked[0] == (0, READ_BATCH)

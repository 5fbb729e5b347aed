"""A get: the file's plaintext in order, whole or a byte range, `depth` segments fetched, decoded and decrypted at
once from K verified shares (here, or on the holders given)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping

from ..errors import RangeNotSatisfiable
from .core import erasure
from .core.capability import Capability
from .core.crypto import SegmentCipher
from .gateway_core import GatewayCore
from .core.manifest import Manifest
from .remote import Holder, RemoteShareReader


def _segments_of(manifest: Manifest, byte_range: tuple[int, int] | None) -> tuple[range, int, int]:
    """The segments covering `byte_range` (all without one), the bytes to skip in the first, the bytes wanted."""
    if byte_range is None:
        return range(manifest.segment_count), 0, manifest.size
    first, last = byte_range
    if not 0 <= first <= last < manifest.size:
        raise RangeNotSatisfiable(f"bytes {first}-{last} are not within the file's {manifest.size} bytes")
    seg = manifest.segment_size
    return range(first // seg, last // seg + 1), first % seg, last - first + 1


async def open_file(gateway: GatewayCore, cap: Capability, holders: Mapping[int, Holder] | None = None,
                    names: list[str] | None = None, rank: Mapping[int, float] | None = None,
                    byte_range: tuple[int, int] | None = None, manifest: bytes | None = None
                    ) -> tuple[int, Plaintext]:
    """Check the file can be read, then return its size and its plaintext (`Plaintext`: iterate, then close).

    `holders` gives the holder of each share on another node (`names` their node ids, `rank`
    lower-is-faster hints); the other shares are read here.  With `byte_range` (first and last
    byte, inclusive, within the file: see ranges.parse_range) only the segments covering it are
    fetched, decoded and decrypted, and the iterator yields just those bytes.  `manifest`: as another node
    sent it, when this node holds none (see `GatewayCore.load`)."""
    holders = dict(holders or {})
    names = names or ["this node"] * erasure.N
    si = cap.storage_index
    readers: dict[int, RemoteShareReader] = {}

    def start_reading(manifest: Manifest) -> None:
        # The data shares (read first whenever they are intact) are asked for their first ranges while their
        # metadata is on its way: a round trip less before the first block on a long path.  A share whose
        # metadata then fails is dropped and its ranges stopped: none of its blocks is used.
        segments = _segments_of(manifest, byte_range)[0]
        for s, h in holders.items():
            readers[s] = RemoteShareReader(h, si, s, manifest, gateway.remote_timeout, segments)
            if s < erasure.K:
                readers[s].ask()

    try:
        manifest, metas, order, _ = await gateway.usable(cap, holders, names, rank or {}, manifest, start_reading)
    except BaseException:
        await asyncio.gather(*(r.close() for r in readers.values()))
        raise
    await asyncio.gather(*(readers.pop(s).close() for s in list(readers) if s not in metas))
    cipher = SegmentCipher(cap.key)
    bad: list[tuple[int, int]] = []
    segments, skip, length = _segments_of(manifest, byte_range)
    segment = gateway.segment_source(si, manifest, metas, order, readers, names, bad, cipher.decrypt)

    async def stream() -> AsyncIterator[bytes]:
        in_flight: deque[asyncio.Future] = deque()
        next_index, end = segments.start, segments.stop
        cut, left = skip, length
        try:
            while next_index < end or in_flight:
                while next_index < end and len(in_flight) < gateway.depth:
                    in_flight.append(asyncio.ensure_future(segment(next_index)))
                    next_index += 1
                segment_text = await in_flight.popleft()  # the plaintext, or the pieces it was decrypted into
                for data in segment_text if isinstance(segment_text, list) else (segment_text,):
                    if cut >= len(data):  # a piece wholly before a range's first byte
                        cut -= len(data)
                        continue
                    if cut or len(data) > left:
                        data = data[cut:cut + left]
                        cut = 0
                    if data:
                        left -= len(data)
                        yield data
        finally:
            for fut in in_flight:
                fut.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await asyncio.gather(*(r.close() for r in readers.values()))
            if bad:
                await gateway.run(gateway.record_damage, si, bad)

    return manifest.size, Plaintext(stream(), readers.values())


class Plaintext:
    """An opened file's plaintext, piece by piece (`async for`).  `aclose()` stops whatever its holders were asked,
    whether or not a piece was ever read: the data shares' first ranges are asked as the file opens, and a get
    abandoned before its first piece (its client gone) must not leave them running to their timeout."""

    def __init__(self, pieces: AsyncGenerator[bytes, None], readers: Iterable[RemoteShareReader]) -> None:
        self._pieces, self._readers = pieces, readers

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces

    async def aclose(self) -> None:
        await self._pieces.aclose()  # a started iteration ends in its own `finally`
        await asyncio.gather(*(r.close() for r in self._readers))

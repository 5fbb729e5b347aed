"""A get: the file's plaintext in order, whole or a byte range, `depth` segments fetched, decoded and decrypted at
once from K verified shares (here, or on the holders given)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from functools import partial

from ..errors import RangeNotSatisfiable
from ..heap import give_back
from ..tasks import in_threads
from .core import erasure
from .core.capability import Capability
from .core.crypto import SegmentCipher
from .gateway_core import GatewayCore
from .core.manifest import Manifest
from .remote import Holder, RemoteShareReader
from .share_store import BlockReader


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

    async def finish() -> None:
        await asyncio.gather(*(r.close() for r in readers.values()))
        if bad:
            await gateway.run(gateway.record_damage, si, bad, {s: names[s] for s in holders})

    segment = gateway.segment_source(si, manifest, metas, order, readers, names, bad, cipher.decrypt)

    async def stream() -> AsyncIterator[bytes]:
        in_flight: deque[asyncio.Future] = deque()
        next_index, end = segments.start, segments.stop
        window = _Window(skip, length)
        try:
            while next_index < end or in_flight:
                while next_index < end and len(in_flight) < gateway.depth:
                    in_flight.append(asyncio.ensure_future(segment(next_index)))
                    next_index += 1
                for data in window.cut(await in_flight.popleft()):
                    yield data
        finally:
            for fut in in_flight:
                fut.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await finish()

    local = None
    if not holders and len(segments) > 1:  # every share is here: the segments can be read off the event loop
        buffers = _Buffers()
        read = gateway.segment_reader(si, manifest, metas, bad, partial(cipher.decrypt, buffer=buffers.take))
        stored = gateway.store.block_reader(si)
        local = _Local(lambda index: read(index, order, {}, stored), segments, _Window(skip, length), gateway.depth,
                       finish, gateway, buffers, stored)
    return manifest.size, Plaintext(stream(), readers.values(), local, gateway)


PASSED_ON_AT_ONCE = 4  # gets passed on by two threads each at once; the others iterate on the loop as remote gets do


class _Window:
    """The bytes of a get's range among its segments' plaintexts: `skip` bytes of the first left out, `length`
    bytes in all."""

    def __init__(self, skip: int, length: int) -> None:
        self.skip, self.left = skip, length

    def cut(self, segment_text: bytes | list) -> list:
        """The pieces of one segment's plaintext (whole, or the pieces it was decrypted into) within the range."""
        out = []
        for data in segment_text if isinstance(segment_text, list) else (segment_text,):
            if self.skip >= len(data):  # a piece wholly before a range's first byte
                self.skip -= len(data)
                continue
            if self.skip or len(data) > self.left:
                data = data[self.skip:self.skip + self.left]
                self.skip = 0
            if data:
                self.left -= len(data)
                out.append(data)
        return out


class _Buffers:
    """The buffers a get passed on decrypts its segments into, each taken again once its piece is passed on: a
    fresh bytearray for every block is zeroed first (7% of the reading thread's CPU), one taken again is not.  As
    many are made as pieces are in flight at once: K a segment, for the groups of segments (`GROUPED`) queued, the one
    being read and the one being written."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()

    def take(self, size: int) -> bytearray:
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            return bytearray(size)
        return buffer if len(buffer) >= size else bytearray(size)

    def reuse(self, pieces: list) -> None:
        """The buffers of `pieces` (views of them, as `SegmentCipher.decrypt` made them), passed on: free again."""
        for piece in pieces:
            if isinstance(piece, memoryview) and isinstance(piece.obj, bytearray):
                self._free.put(piece.obj)


class _Local:
    """A get of shares all held here, passed on (`Plaintext.pass_on`): its segments read and decrypted on a thread of
    its own and handed, GROUPED at a time, to a second that passes them on, `depth` segments at most ahead of it (in
    whole groups, one at least).  Neither the event loop nor the pool is woken for a segment, and the two threads take
    the GIL in long turns: iterated on the loop, each segment read in the pool and written by the loop, the same get
    costs about 1.7x the CPU, much of it in the switches between threads (docs/storage.md, "Speed").

    The reading thread reads the blocks through one iterator (`stored`, a share_store.BlockReader: a copy of each
    block fewer than a get of it), held across segments: released whenever that thread would wait for the writing
    one, after every HELD_FOR segments (a reopen of the database waits for it) and when the get ends."""

    def __init__(self, read: Callable[[int], bytes | list], segments: range, window: _Window, depth: int,
                 finish: Callable[[], Awaitable[None]], gateway: GatewayCore, buffers: _Buffers,
                 stored: BlockReader) -> None:
        self.read, self.segments, self.window, self.depth, self.finish = read, segments, window, depth, finish
        self.gateway, self.buffers, self.stored = gateway, buffers, stored
        self.holds_slot = False  # one of the gateway's `passing_on` slots, taken by `take_slot`, until `release`

    def take_slot(self) -> bool:
        if self.holds_slot or self.gateway.passing_on >= PASSED_ON_AT_ONCE:
            return self.holds_slot
        self.gateway.passing_on += 1
        self.holds_slot = True
        return True

    def release(self) -> None:
        if self.holds_slot:
            self.gateway.passing_on -= 1
            self.holds_slot = False

    async def pass_on(self, write: Callable[[list, threading.Event], None]) -> int:
        # Decrypted segments' pieces in order, GROUPED segments an item (the last may hold fewer); None after the last.
        ready: queue.Queue = queue.Queue(max(1, self.depth // GROUPED))
        stop = threading.Event()
        passed = 0

        def put(item: list | None) -> None:
            while not stop.is_set():
                try:
                    return ready.put(item, timeout=_STOP_CHECK)
                except queue.Full:
                    continue

        def hand_off(group: list, n: int) -> None:
            if n % HELD_FOR == 0:
                self.stored.release()
            try:
                ready.put_nowait(group)
            except queue.Full:
                self.stored.release()  # a client that takes nothing would keep it as long as it stays connected
                put(group)

        def reader() -> None:
            try:
                group: list = []
                for n, index in enumerate(self.segments, 1):
                    if stop.is_set():
                        return
                    group += self.window.cut(self.read(index))
                    if n % GROUPED == 0 or n == len(self.segments):
                        hand_off(group, n)
                        group = []
            except BaseException:
                stop.set()  # the sender passes on nothing more
                raise
            finally:
                self.stored.release()
            put(None)

        def sender() -> None:
            nonlocal passed
            # The reading thread allocates in a malloc arena of its own (glibc gives each new thread one no other
            # thread uses): what the pool's arenas keep free for the next segments (heap.KEEP_FREE_UP_TO each, a
            # put's blocks) would stay beside it until the next trim, ~20 MiB more at a large put's end, so it goes
            # back now, from this thread, which has nothing to write before the first segment is read.
            give_back()
            while not stop.is_set():
                try:
                    pieces = ready.get(timeout=_STOP_CHECK)
                except queue.Empty:
                    continue
                if pieces is None:
                    return
                write(pieces, stop)
                passed += sum(len(p) for p in pieces)
                self.buffers.reuse(pieces)

        try:
            await in_threads(stop, reader, sender)
        finally:
            await self.finish()
        return passed


# Segments a get passed on hands from its reading thread to its writing thread at once: each hand-off wakes the writer,
# which then takes the GIL from the reader, and one a segment cost the node about a quarter more CPU a get; eight were
# slower than four (docs/storage.md, "Speed").
GROUPED = 4
# Segments a get passed on reads through one iterator at most (`_Local`): a reopen of the database waits that long.
HELD_FOR = 4 * GROUPED
_STOP_CHECK = 0.2  # seconds a thread of a get passed on waits before it looks whether the get was stopped


class Plaintext:
    """An opened file's plaintext, piece by piece (`async for`), or passed on whole from threads (`pass_on`, where
    `take_threads`).  `aclose()` stops whatever its holders were asked, whether or not a piece was ever read: the data
    shares' first ranges are asked as the file opens, and a get abandoned before its first piece (its client gone)
    must not leave them running to their timeout."""

    def __init__(self, pieces: AsyncGenerator[bytes, None], readers: Iterable[RemoteShareReader],
                 local: _Local | None = None, gateway: GatewayCore | None = None) -> None:
        self._pieces, self._readers, self._local = pieces, readers, local
        self._gateway = gateway  # counts it in `gets_open` until it closes
        if gateway is not None:
            gateway.gets_open += 1

    def take_threads(self) -> bool:
        """Whether `pass_on` may be used, its threads counted against the gateway's PASSED_ON_AT_ONCE until this
        closes: every share is read here, there is more than one segment, and a slot is free."""
        return self._local is not None and self._local.take_slot()

    async def pass_on(self, write: Callable[[list, threading.Event], None]) -> int:
        """Every piece, in order, handed to `write(pieces, stop)` on a thread of its own while the next segments are
        read and decrypted on another; the bytes passed.  `write` blocks until its pieces are passed on (it gives
        up, raising, once `stop` is set) and keeps no view of them: their buffers are decrypted into again.  An
        error of either thread (a segment that cannot be read, a write that fails) stops both and is raised here;
        cancelled, both are stopped and waited for.  Instead of iterating."""
        assert self._local is not None and self._local.holds_slot, "pass_on needs `take_threads` first"
        return await self._local.pass_on(write)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces

    async def aclose(self) -> None:
        if self._gateway is not None:
            self._gateway.gets_open -= 1
            self._gateway = None
        if self._local is not None:
            self._local.release()
        await self._pieces.aclose()  # a started iteration ends in its own `finally`
        await asyncio.gather(*(r.close() for r in self._readers))

"""A large put on one node: its segments encoded in the pool, its blocks written one segment at a time on the
gateway's writer thread, queued there in order (each write begun as the one before ends, without the event loop),
and a write that fails failing the put with nothing left staged and no write after it."""

from __future__ import annotations

import asyncio
import io
import os
import threading

import pytest

from tests.support.shares import gateway_core
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.storage import gateway_get, gateway_put
from xsc.storage.share_store import Upload

SEGMENT = 64 * 1024
DATA = os.urandom(20 * SEGMENT + 5)  # 21 segments, staged on disk (over the share store's HELD_UPLOAD)


@pytest.fixture
def gateway(tmp_path):
    with gateway_core(tmp_path, SEGMENT) as core:
        yield core


def _read(data: bytes):
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    return read


def _writes_seen(monkeypatch, fail_at: int | None = None) -> list[tuple[str, int]]:
    """(thread, segment) of each block write the store is asked for; the one of segment `fail_at` fails."""
    seen: list[tuple[str, int]] = []
    put_blocks = Upload.put_blocks

    def recorded(self: Upload, segment: int, blocks: dict[int, bytes]) -> None:
        seen.append((threading.current_thread().name, segment))
        if segment == fail_at:
            raise OSError(28, "No space left on device")
        put_blocks(self, segment, blocks)

    monkeypatch.setattr(Upload, "put_blocks", recorded)
    return seen


async def test_a_large_puts_blocks_are_written_in_order_on_the_writer_and_read_back(gateway, monkeypatch) -> None:
    seen = _writes_seen(monkeypatch)
    result = await gateway_put.put(gateway, _read(DATA), len(DATA))
    assert seen == [("test-writer_0", segment) for segment in range(21)]
    size, chunks = await gateway_get.open_file(gateway, result.capability)
    assert size == len(DATA) and b"".join([chunk async for chunk in chunks]) == DATA


async def test_the_next_write_begins_as_the_one_before_ends_while_the_event_loop_is_held(gateway, monkeypatch) -> None:
    """Segment 1's write is queued behind segment 0's; as segment 0's ends, the event loop is held until segment 1's
    has begun: it begins all the same (a write begun by the loop would wait the 10 s out and the test fail)."""
    loop = asyncio.get_running_loop()
    queued, held, began = threading.Event(), threading.Event(), threading.Event()
    write, put_blocks = gateway.write, Upload.put_blocks

    def queueing(fn, *args):
        future = write(fn, *args)
        if args[1] == 1:  # (write, index, blocks)
            queued.set()
        return future

    def hold_the_loop() -> None:
        held.set()
        began.wait(10)

    def recorded(self: Upload, segment: int, blocks: dict[int, bytes]) -> None:
        if segment == 0:
            assert queued.wait(10)
            loop.call_soon_threadsafe(hold_the_loop)
            assert held.wait(10)
        elif segment == 1:
            began.set()
        put_blocks(self, segment, blocks)

    monkeypatch.setattr(gateway, "write", queueing)
    monkeypatch.setattr(Upload, "put_blocks", recorded)
    result = await gateway_put.put(gateway, _read(DATA), len(DATA))
    assert began.is_set()
    size, chunks = await gateway_get.open_file(gateway, result.capability)
    assert size == len(DATA) and b"".join([chunk async for chunk in chunks]) == DATA


async def test_a_block_write_that_fails_fails_the_put_and_leaves_nothing_staged(gateway, monkeypatch) -> None:
    seen = _writes_seen(monkeypatch, fail_at=3)
    with pytest.raises(OSError, match="No space left"):
        await gateway_put.put(gateway, _read(DATA), len(DATA))
    assert seen[-1] == ("test-writer_0", 3)  # no write after the one that failed
    assert list(gateway.store.db.iterator(prefix=keys.UPLOADS)) == []
    assert list(gateway.store.db.iterator(prefix=keys.blocks_of(b""))) == []
    assert gateway.store.reserved == 0


async def test_a_put_that_fails_skips_the_writes_it_had_queued(gateway, monkeypatch) -> None:
    """Segment 1's write is queued behind segment 0's, which has begun and waits until the put has failed (its client
    reset the connection as segment 2 was asked for): segment 1 is not written, and nothing is left staged."""
    seen, queued, stopped = [], [], threading.Event()
    write, put_blocks, stop = gateway.write, Upload.put_blocks, gateway_put._Writes.stop

    def queueing(fn, *args):
        queued.append(args[1])  # (write, index, blocks)
        return write(fn, *args)

    def stopping(self) -> None:
        stop(self)
        stopped.set()

    def gated(self: Upload, segment: int, blocks: dict[int, bytes]) -> None:
        seen.append(segment)
        if segment == 0:
            assert stopped.wait(10)
        put_blocks(self, segment, blocks)

    stream = io.BytesIO(DATA)

    async def read(n: int) -> bytes:
        if stream.tell() >= 2 * SEGMENT:
            # Queued is not begun: the writer thread may not have taken segment 0 up yet (a loaded machine), and a
            # write the put's failure finds still queued is skipped too.
            await eventually_async(lambda: len(queued) >= 2 and seen == [0],
                                   "segments 0 and 1 queued on the writer, segment 0's write begun")
            raise ConnectionResetError("the client reset the connection")
        return stream.read(n)

    monkeypatch.setattr(gateway, "write", queueing)
    monkeypatch.setattr(gateway_put._Writes, "stop", stopping)
    monkeypatch.setattr(Upload, "put_blocks", gated)
    with pytest.raises(ConnectionResetError):
        await gateway_put.put(gateway, read, len(DATA))
    assert seen == [0] and queued == [0, 1]
    assert list(gateway.store.db.iterator(prefix=keys.UPLOADS)) == []
    assert list(gateway.store.db.iterator(prefix=keys.blocks_of(b""))) == []
    assert gateway.store.reserved == 0


async def test_a_put_asks_its_stream_for_pieces_and_reads_back_whatever_sizes_it_answers(tmp_path) -> None:
    segment = 2 * gateway_put.PIECE + 4  # a segment read in three pieces at least
    data = os.urandom(3 * segment + 7)
    asked: list[int] = []
    stream = io.BytesIO(data)
    sizes = iter([1, 4095, 7, segment, 3 * segment] * 100)

    async def read(n: int) -> bytes:  # a stream answering fewer bytes than asked, as a socket does
        asked.append(n)
        return stream.read(min(n, next(sizes)))

    with gateway_core(tmp_path, segment) as gateway:
        result = await gateway_put.put(gateway, read, len(data))
        assert max(asked) == gateway_put.PIECE
        size, chunks = await gateway_get.open_file(gateway, result.capability)
        assert size == len(data) and b"".join([chunk async for chunk in chunks]) == data

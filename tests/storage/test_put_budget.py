"""The gateway's budget of segments in flight, shared by all its puts (storage/put_budget.py): taken before a segment
is read, given back once its blocks are written; a put that finds it spent waits its turn, having read nothing more,
and is let in when another put finishes, fails or loses its client; a client that trickles holds none of it for long;
puts at once never deadlock on it; and eight `store put`s at once keep a node within a lone put's memory."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from bench.common import AnonSampler
from tests.support.shares import gateway_core
from tests.support.waiting import eventually_async
from xsc import keys
from xsc.devnet import NodeProcess
from xsc.storage import gateway_get, gateway_put
from xsc.storage.put_budget import PutBudget
from xsc.storage.share_store import Upload

SEGMENT = 64 * 1024
MiB = 1024 * 1024


# --- the budget alone ---------------------------------------------------------------------------------------------

async def test_puts_are_let_in_in_the_order_they_asked_and_none_passes_one_waiting() -> None:
    budget = PutBudget(3)
    assert budget.try_take(3) and not budget.try_take(1)
    first = asyncio.ensure_future(budget.take(2))
    second = asyncio.ensure_future(budget.take(1))
    await eventually_async(lambda: budget.waiting == 2, "both waiting")
    budget.give(1)
    # one byte is free: the second would fit, but the first asked before, and no newcomer passes them either
    assert budget.waiting == 2 and budget.held == 2 and not budget.try_take(1)
    budget.give(2)
    await asyncio.gather(first, second)
    assert budget.held == 3 and budget.waiting == 0


async def test_a_waiting_put_cancelled_lets_the_next_in_and_one_let_in_as_it_is_cancelled_gives_back() -> None:
    budget = PutBudget(2)
    assert budget.try_take(2)
    big, small = asyncio.ensure_future(budget.take(2)), asyncio.ensure_future(budget.take(1))
    await eventually_async(lambda: budget.waiting == 2, "both waiting")
    budget.give(1)
    assert not small.done()  # behind the big one
    big.cancel()
    await asyncio.gather(big, return_exceptions=True)
    await small
    assert budget.held == 2 and budget.waiting == 0
    late = asyncio.ensure_future(budget.take(2))
    await eventually_async(lambda: budget.waiting == 1, "waiting")
    budget.give(2)  # let in ...
    late.cancel()  # ... and cancelled before it ran: what it was given comes back
    await asyncio.gather(late, return_exceptions=True)
    assert budget.held == 0
    with pytest.raises(ValueError):
        await budget.take(3)


# --- puts sharing a gateway's budget ------------------------------------------------------------------------------

@pytest.fixture
def gateway(tmp_path):
    with gateway_core(tmp_path, SEGMENT) as core:
        core.budget = PutBudget(SEGMENT)  # one segment for all puts: every second put waits
        yield core


class Client:
    """A put's stream: `data` sent piece by piece; after `pause_at` bytes it waits for `go`, then either goes on or
    (`reset`) fails as a connection reset by the client does."""

    def __init__(self, data: bytes, pause_at: int | None = None) -> None:
        self.data, self.at, self.pause_at = data, 0, pause_at
        self.paused, self.go = asyncio.Event(), asyncio.Event()
        self.reset = False

    async def read(self, n: int) -> bytes:
        if self.at == self.pause_at:
            self.paused.set()
            await self.go.wait()
            if self.reset:
                raise ConnectionResetError("the client reset the connection")
            self.pause_at = None
        stop = len(self.data) if self.pause_at is None else self.pause_at
        chunk, self.at = self.data[self.at:min(self.at + n, stop)], min(self.at + n, stop)
        return chunk


def _gated_writes(monkeypatch, fail: bool = False) -> threading.Event:
    """Block writes until the event is set; then they go on (or, `fail`, the first one fails)."""
    gate, put_blocks, failed = threading.Event(), Upload.put_blocks, []

    def gated(self: Upload, segment: int, blocks: dict[int, bytes]) -> None:
        gate.wait()
        if fail and not failed:
            failed.append(segment)
            raise OSError(28, "No space left on device")
        put_blocks(self, segment, blocks)

    monkeypatch.setattr(Upload, "put_blocks", gated)
    return gate


async def _read_back(gateway, result) -> bytes:
    _, chunks = await gateway_get.open_file(gateway, result.capability)
    return b"".join([chunk async for chunk in chunks])


async def test_a_put_waiting_for_the_budget_is_let_in_when_the_other_finishes(gateway, monkeypatch) -> None:
    """Each waits for its turn before it reads its next segment: a put waiting holds nothing it has read."""
    gate = _gated_writes(monkeypatch)
    a, b = os.urandom(5 * SEGMENT), os.urandom(3 * SEGMENT + 7)
    client_a, client_b = Client(a), Client(b)
    first = asyncio.ensure_future(gateway_put.put(gateway, client_a.read, len(a)))
    await eventually_async(lambda: gateway.budget.held == SEGMENT, "the first put holding the budget")
    second = asyncio.ensure_future(gateway_put.put(gateway, client_b.read, len(b)))
    # the first waits for its second segment's turn (its first is being written), the second for its first
    await eventually_async(lambda: gateway.budget.waiting == 2, "both puts waiting for their turn")
    assert (client_a.at, client_b.at) == (SEGMENT, 0)
    gate.set()
    results = await asyncio.gather(first, second)
    assert [await _read_back(gateway, r) for r in results] == [a, b]
    assert (gateway.budget.held, gateway.budget.waiting) == (0, 0)


async def test_a_put_that_fails_gives_back_what_it_held_and_lets_the_waiting_one_in(gateway, monkeypatch) -> None:
    gate = _gated_writes(monkeypatch, fail=True)
    a, b = os.urandom(5 * SEGMENT), os.urandom(3 * SEGMENT)
    first = asyncio.ensure_future(gateway_put.put(gateway, Client(a).read, len(a)))
    await eventually_async(lambda: gateway.budget.held == SEGMENT, "the first put holding the budget")
    second = asyncio.ensure_future(gateway_put.put(gateway, Client(b).read, len(b)))
    await eventually_async(lambda: gateway.budget.waiting == 2, "both puts waiting for their turn")
    gate.set()  # the first put's first write fails
    with pytest.raises(OSError):
        await first
    assert await _read_back(gateway, await second) == b
    assert (gateway.budget.held, gateway.budget.waiting) == (0, 0)
    assert list(gateway.store.db.iterator(prefix=keys.UPLOADS)) == [] and gateway.store.reserved == 0


async def test_a_client_reset_mid_put_gives_back_its_segments_and_lets_the_waiting_put_in(gateway, monkeypatch
                                                                                         ) -> None:
    """The first put holds the budget for a segment whose encoding cannot end yet and for the next, which its client
    is sending; the client resets the connection: both shares come back at once, and the waiting put gets its turn
    and finishes."""
    gate, encode = threading.Event(), gateway_put._OnePut.encode_segment
    a, b = os.urandom(4 * SEGMENT), os.urandom(2 * SEGMENT)

    def held_up(self, index: int, plaintext: list[bytes]):
        if self.size == len(a):
            gate.wait()
        return encode(self, index, plaintext)

    monkeypatch.setattr(gateway_put._OnePut, "encode_segment", held_up)
    monkeypatch.setattr(gateway_put, "LET_IN_READ", 3600.0)  # the share taken for the segment coming is kept
    gateway.budget = PutBudget(2 * SEGMENT)
    client = Client(a, pause_at=SEGMENT + SEGMENT // 2)
    first = asyncio.ensure_future(gateway_put.put(gateway, client.read, len(a)))
    await client.paused.wait()
    await eventually_async(lambda: gateway.budget.held == 2 * SEGMENT, "the first put holding two segments' shares")
    second = asyncio.ensure_future(gateway_put.put(gateway, Client(b).read, len(b)))
    await eventually_async(lambda: gateway.budget.waiting == 1, "the second put waiting for its turn")
    client.reset = True
    client.go.set()
    with pytest.raises(ConnectionResetError):
        await first
    try:
        # Let in while the first put's encoding is still held up on a pool thread: the other thread encodes it.
        assert await _read_back(gateway, await second) == b
        assert (gateway.budget.held, gateway.budget.waiting) == (0, 0)
    finally:
        gate.set()


async def test_a_small_object_is_not_held_behind_puts_waiting_for_the_budget(gateway, monkeypatch) -> None:
    """A file of one segment of at most INLINE_SEGMENT bytes is encoded and written at once, outside the budget."""
    gate, encode = threading.Event(), gateway_put._OnePut.encode_segment
    a, b, small = os.urandom(4 * SEGMENT), os.urandom(2 * SEGMENT), os.urandom(1024)

    def held_up(self, index: int, plaintext: list[bytes]):
        if self.size == len(a):
            gate.wait()
        return encode(self, index, plaintext)

    monkeypatch.setattr(gateway_put._OnePut, "encode_segment", held_up)
    first = asyncio.ensure_future(gateway_put.put(gateway, Client(a).read, len(a)))
    await eventually_async(lambda: gateway.budget.held == SEGMENT, "the first put holding the budget")
    second = asyncio.ensure_future(gateway_put.put(gateway, Client(b).read, len(b)))
    await eventually_async(lambda: gateway.budget.waiting == 1, "the second put waiting for its turn")
    try:
        stored = await asyncio.wait_for(gateway_put.put(gateway, Client(small).read, len(small)), 30)
        assert await _read_back(gateway, stored) == small
        assert gateway.budget.waiting == 1  # the large put still waits
    finally:
        gate.set()
    results = await asyncio.gather(first, second)
    assert [await _read_back(gateway, r) for r in results] == [a, b]
    assert (gateway.budget.held, gateway.budget.waiting) == (0, 0)


async def test_a_client_that_trickles_holds_none_of_the_budget_for_long(gateway) -> None:
    """The share taken for the segment its client is sending comes back once the segment is late (LET_IN_READ)."""
    a, b = os.urandom(6 * SEGMENT), os.urandom(4 * SEGMENT)
    slow = Client(a, pause_at=3 * SEGMENT + 100)
    first = asyncio.ensure_future(gateway_put.put(gateway, slow.read, len(a)))
    await slow.paused.wait()
    await eventually_async(lambda: gateway.budget.held == 0, "the segments read so far written and given back, "
                           "and the share of the one coming")
    assert await _read_back(gateway, await gateway_put.put(gateway, Client(b).read, len(b))) == b
    slow.go.set()
    assert await _read_back(gateway, await first) == a


async def test_many_puts_at_once_on_a_budget_of_one_segment_all_finish(gateway) -> None:
    files = [os.urandom(n * SEGMENT + n) for n in range(1, 9)] + [b"small"]
    results = await asyncio.wait_for(asyncio.gather(
        *(gateway_put.put(gateway, Client(f).read, len(f)) for f in files),
        gateway_put.put(gateway, Client(files[3]).read, None)), 60)  # one of unknown size too
    assert [await _read_back(gateway, r) for r in results] == files + [files[3]]
    assert (gateway.budget.held, gateway.budget.waiting) == (0, 0)


def test_a_lone_put_never_waits_for_the_budget(tmp_path) -> None:
    """The budget is one put's whole pipeline: `depth` segments encoding and one being written."""
    with gateway_core(tmp_path, SEGMENT) as core:
        assert core.budget.limit == (core.depth + 1) * SEGMENT


# --- a node's memory ----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads a process's memory from /proc")
def test_eight_store_puts_at_once_stay_within_a_lone_puts_memory(tmp_path) -> None:
    """Eight `store put`s of 32 MiB at once share the node's budget of segments in flight: the node stays within a
    lone put's peak of as many bytes (LevelDB's memtables fill alike) plus what each waiting put has read (docs/
    storage.md, Put)."""
    node = NodeProcess(tmp_path / "node", env={"XSC_STORAGE_SEGMENT_SIZE": str(MiB),
                                                 "XSC_STORAGE_CAPACITY": "4GiB"}).start()
    try:
        files = []
        with (tmp_path / "whole.bin").open("wb") as whole:
            for i in range(8):
                files.append(tmp_path / f"f{i}.bin")
                files[-1].write_bytes(os.urandom(32 * MiB))
                whole.write(files[-1].read_bytes())
        with AnonSampler(node.pid, interval=0.005) as lone:
            assert node.xsc("store", "put", str(tmp_path / "whole.bin")).returncode == 0
        codes: list[int] = []
        with AnonSampler(node.pid, interval=0.005) as eight:
            threads = [threading.Thread(target=lambda f=f: codes.append(node.xsc("store", "put", str(f)).returncode))
                       for f in files]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert codes == [0] * 8
        assert eight.peak_mib < lone.peak_mib + 32, (lone.peak_mib, eight.peak_mib)
    finally:
        node.stop()

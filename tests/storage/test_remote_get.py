"""A get whose shares are on other nodes, against holders in this process: the ranges of a share asked side by side
follow the round trip to its holder, a range that fails leaves the share for the others, the file read whole, and the
data shares' first ranges are asked while their metadata is on its way; over the wire, a holder that sends garbage,
a flipped bit, a wrong length or stalls midway leaves the file whole from the others, and three that send garbage
fail it naming their shares."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os

import aiohttp
import pytest

from xsc.errors import NotEnoughShares, PeerUnreachable
from xsc.identity import Identity
from xsc.net.peer_client import PeerClient
from xsc.storage import Capability, gateway_get, gateway_put, holder_client as remote_holder, remote
from xsc.storage.core import erasure, layout
from xsc.storage.core.crypto import SegmentCipher
from xsc.storage.core.manifest import Manifest
from xsc.storage.core.merkle import block_hash
from tests.support.shares import gateway_core, in_flight

SEGMENT = 4096
WAIT = 10.0  # seconds a test waits for an event that must come


class Serving:
    """A holder on another node as a get sees it (storage/remote.py: Holder), serving the blocks it was sent by a put.
    `gate`: each range is answered once this event is set; `failing`: the first segment of a range it refuses."""

    def __init__(self, round_trip: float | None = None, gate: asyncio.Event | None = None,
                 failing: int | None = None, meta_after: asyncio.Event | None = None,
                 meta_fails: bool = False) -> None:
        self.round_trip, self.gate, self.failing = round_trip, gate, failing
        self.meta_after, self.meta_fails = meta_after, meta_fails  # its metadata answered once this is set; refused
        self.stored: list[bytes] = []  # its share's blocks, by segment
        self.asked: list[tuple[int, int]] = []
        self.calls: list[str] = []  # "meta" and "blocks", in the order they were asked
        self.in_flight = self.most_in_flight = 0
        self.changed = asyncio.Condition()

    # --- as a put's holder: stages what it is sent, in order -----------------------------------
    async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
        return "upload"

    async def put_segments(self, upload, first, blocks) -> None:
        assert first == len(self.stored)
        self.stored.extend(blocks)

    async def commit(self, upload, block_hashes, manifest, *, first=0, blocks=None) -> None:
        if blocks:
            await self.put_segments(upload, first, blocks)
        assert [block_hash(b) for b in self.stored] == block_hashes

    # --- as a get's holder ----------------------------------------------------------------------
    async def meta(self, si, share, segment_count=None, *, size=None) -> dict:
        self.calls.append("meta")
        if self.meta_after is not None:
            await asyncio.wait_for(self.meta_after.wait(), WAIT)
        if self.meta_fails:
            raise PeerUnreachable("peer serving is unreachable: connection reset")
        return {"segment_count": len(self.stored), "stored_bytes": sum(map(len, self.stored)), "lease_expiry": 0,
                "block_hashes": [block_hash(b) for b in self.stored]}

    async def blocks(self, si, share, first, count, lengths, timeout=None) -> list[bytes]:
        self.asked.append((first, count))
        self.calls.append("blocks")
        if self.meta_after is not None:
            self.meta_after.set()
        async with in_flight(self, self.gate, WAIT):
            if first == self.failing:
                raise PeerUnreachable("peer serving is unreachable: connection reset")
            return self.stored[first:first + count]


def _manifest(segments: int) -> Manifest:
    size = segments * SEGMENT
    return Manifest(size=size, segment_size=SEGMENT, k=4, m=2, segment_count=layout.segment_count(size, SEGMENT),
                    share_roots=tuple("00" * 32 for _ in range(6)), ciphertext_hash="00" * 32)


@pytest.mark.parametrize("round_trip, batch, ahead", [
    (None, remote.READ_BATCH, remote.READ_AHEAD),
    (remote.LONG_PATH / 2, remote.READ_BATCH, remote.READ_AHEAD),
    (remote.LONG_PATH * 4, remote.READ_BATCH_LONG, remote.READ_AHEAD_LONG)])
async def test_a_long_path_asks_more_ranges_of_a_share_at_once(round_trip, batch, ahead) -> None:
    assert (remote.READ_AHEAD_LONG + 1) * remote.READ_BATCH_LONG >= (remote.READ_AHEAD + 1) * remote.READ_BATCH
    segments = 4 * (remote.READ_AHEAD_LONG + 1) * remote.READ_BATCH_LONG
    gate = asyncio.Event()
    holder = Serving(round_trip, gate)
    holder.stored = [bytes([i % 256]) * 8 for i in range(segments)]
    reader = remote.RemoteShareReader(holder, b"\0" * 32, 1, _manifest(segments), WAIT)
    first = asyncio.ensure_future(reader.get(0))
    async with holder.changed:
        await asyncio.wait_for(holder.changed.wait_for(lambda: holder.in_flight == ahead + 1), WAIT)
    assert holder.asked == [(i * batch, batch) for i in range(ahead + 1)]  # side by side, in order
    gate.set()
    assert await first == holder.stored[0]
    assert [await reader.get(i) for i in range(segments)] == holder.stored  # every block, each range asked once
    await reader.close()
    assert holder.most_in_flight == ahead + 1
    assert sorted(holder.asked) == [(i, batch) for i in range(0, segments, batch)]


async def test_a_range_that_fails_leaves_the_share_and_the_rest_is_never_waited_for() -> None:
    segments = 4 * remote.READ_BATCH_LONG
    holder = Serving(remote.LONG_PATH * 4, failing=remote.READ_BATCH_LONG)
    holder.stored = [bytes([i]) * 8 for i in range(segments)]
    reader = remote.RemoteShareReader(holder, b"\0" * 32, 1, _manifest(segments), WAIT)
    got = [await reader.get(i) for i in range(segments)]
    await reader.close()
    assert got == holder.stored[:remote.READ_BATCH_LONG] + [None] * (segments - remote.READ_BATCH_LONG)
    assert isinstance(reader.failed, PeerUnreachable)


@pytest.mark.parametrize("round_trip", [None, remote.LONG_PATH * 4])
async def test_a_file_is_read_whole_when_a_holder_fails_a_range_midway(tmp_path, round_trip) -> None:
    data = os.urandom(5 * (remote.READ_AHEAD_LONG + 1) * max(remote.READ_BATCH_LONG, remote.READ_BATCH) * SEGMENT + 5)
    batch = remote.READ_BATCH_LONG if round_trip else remote.READ_BATCH
    holders = {0: Serving(round_trip, failing=2 * batch), 1: Serving(round_trip)}
    with gateway_core(tmp_path, SEGMENT) as gateway:
        stream = io.BytesIO(data)

        async def read(n: int) -> bytes:
            return stream.read(n)

        result = await gateway_put.put(gateway, read, len(data), place=lambda si, size: (["b", "c"] + ["me"] * 4,
                                                                                          holders), me="me")
        size, chunks = await gateway_get.open_file(gateway, result.capability, holders, ["b", "c"] + ["me"] * 4)
        assert size == len(data) and b"".join([chunk async for chunk in chunks]) == data
    assert (2 * batch, batch) in holders[0].asked  # the failed range, then shares 2-5 here made up for it
    assert holders[1].asked == [(first, min(batch, len(holders[1].stored) - first))
                                for first in range(0, len(holders[1].stored), batch)]


async def _put_and_open(gateway, holders: dict[int, Serving], data: bytes) -> gateway_get.Plaintext:
    """Put `data` with shares 0 and 1 on `holders` (the rest here), then open it through them."""
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    names = ["b", "c"] + ["me"] * 4
    result = await gateway_put.put(gateway, read, len(data), place=lambda si, size: (names, holders), me="me")
    size, chunks = await gateway_get.open_file(gateway, result.capability, holders, names)
    assert size == len(data)
    return chunks


async def _put_and_get(tmp_path, holders: dict[int, Serving], data: bytes) -> bytes:
    """Put `data` with shares 0 and 1 on `holders` (the rest here), then get it through them."""
    with gateway_core(tmp_path, SEGMENT) as gateway:
        chunks = await _put_and_open(gateway, holders, data)
        return b"".join([chunk async for chunk in chunks])


async def test_the_data_shares_first_ranges_are_asked_while_their_metadata_is_on_its_way(tmp_path) -> None:
    data = os.urandom(40 * SEGMENT)
    holders = {0: Serving(), 1: Serving()}
    for holder in holders.values():
        holder.meta_after = asyncio.Event()  # set by the first range asked: never, if the get waited for it
    assert await _put_and_get(tmp_path, holders, data) == data
    assert all(h.asked[0] == (0, remote.READ_BATCH) for h in holders.values())
    # The metadata asked just before: it takes a connection the pool keeps, not one the ranges leave it.
    assert all(h.calls[:2] == ["meta", "blocks"] for h in holders.values())


async def test_a_share_whose_metadata_fails_is_left_and_its_ranges_asked_early_are_stopped(tmp_path) -> None:
    data = os.urandom(40 * SEGMENT)
    failing = Serving(gate=asyncio.Event(), meta_fails=True)  # its ranges would never be answered
    holders = {0: failing, 1: Serving()}
    assert await _put_and_get(tmp_path, holders, data) == data
    assert failing.asked and failing.in_flight == 0  # asked early, then stopped


async def test_a_file_opened_and_never_read_stops_the_ranges_it_asked_when_closed(tmp_path) -> None:
    gate = asyncio.Event()  # never set: the ranges asked as the file opens stay in flight until stopped
    holders = {0: Serving(gate=gate), 1: Serving(gate=gate)}
    with gateway_core(tmp_path, SEGMENT) as gateway:
        chunks = await _put_and_open(gateway, holders, os.urandom(40 * SEGMENT))
        assert all(h.in_flight for h in holders.values())  # asked as it opened, not yet read
        await chunks.aclose()
        assert [h.in_flight for h in holders.values()] == [0, 0]


class _OverTheWire(Serving):
    """A holder whose blocks come over a loopback HTTP/1.1 connection, read by RemoteHolder as from any holder, the
    range starting at block `bad_from` answered as `how` says: "garbage" (bytes of the right length, not the blocks;
    "lying": that range and every one after it),
    "flipped" (a bit of its third block flipped), "long" (a Content-Length the blocks do not make) or "stall" (its
    head and a few bytes, then nothing).  `forged`: blocks it sends in place of what it stores, by segment (its
    metadata still the stored blocks')."""

    def __init__(self, how: str | None = None, bad_from: int | None = None) -> None:
        super().__init__()
        self.how, self.bad_from = how, bad_from
        self.forged: dict[int, bytes] = {}
        self.remote: remote_holder.RemoteHolder | None = None
        self.stalled = asyncio.Event()

    async def serve(self, session) -> asyncio.AbstractServer:
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self.remote = remote_holder.RemoteHolder(PeerClient(Identity.generate(), session, 10.0, tls=False),
                                                 "x" * 52, url)
        return server

    async def blocks(self, si, share, first, count, lengths, timeout=None) -> list[bytes]:
        self.asked.append((first, count))
        return await self.remote.blocks(si, share, first, count, lengths, timeout=timeout)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                query = head.split(b" ")[1].split(b"?")[1].decode()
                args = dict(part.split("=") for part in query.split("&"))
                first, count = int(args["from"]), int(args["count"])
                body = b"".join(self.forged.get(first + i, block)
                                for i, block in enumerate(self.stored[first:first + count]))
                length = len(body)
                if (first == self.bad_from and self.how == "garbage"
                        or self.how == "lying" and first >= self.bad_from):
                    body = os.urandom(len(body))
                elif first == self.bad_from and self.how == "flipped":
                    at = sum(len(b) for b in self.stored[first:first + 2]) + 5
                    body = body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:]
                elif first == self.bad_from and self.how == "long":
                    length += 1
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
                if first == self.bad_from and self.how == "stall":
                    writer.write(body[:100])
                    self.stalled.set()
                    await reader.read(1)  # until the gateway gives up on it and closes
                    return
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _wired(holders: dict[int, _OverTheWire]):
    """The holders served over loopback for as long as this lasts."""
    async with aiohttp.ClientSession() as session:
        servers = [await h.serve(session) for h in holders.values()]
        try:
            yield
        finally:
            for h in holders.values():
                h.remote.client.close()
            for server in servers:
                server.close()
                await server.wait_closed()


async def _put_through(gateway, holders: dict[int, _OverTheWire], data: bytes) -> Capability:
    """Put `data` with the shares in `holders` on them (the rest here); its capability."""
    stream = io.BytesIO(data)

    async def read(n: int) -> bytes:
        return stream.read(n)

    names = [f"node{s}" if s in holders else "me" for s in range(6)]
    result = await gateway_put.put(gateway, read, len(data), place=lambda si, size: (names, holders), me="me")
    return result.capability


async def _read(gateway, holders: dict[int, _OverTheWire], cap) -> bytes:
    names = [f"node{s}" if s in holders else "me" for s in range(6)]
    _, chunks = await gateway_get.open_file(gateway, cap, holders, names)
    try:
        return b"".join([chunk async for chunk in chunks])
    finally:
        await chunks.aclose()


@pytest.mark.parametrize("how", ["garbage", "flipped", "long", "stall"])
async def test_a_holder_that_sends_garbage_or_stalls_mid_get_leaves_the_file_whole_from_the_others(tmp_path,
                                                                                                   how) -> None:
    data = os.urandom(4 * remote.READ_BATCH * SEGMENT + 5)
    bad, good = _OverTheWire(how, bad_from=remote.READ_BATCH), _OverTheWire()
    holders = {0: bad, 1: good}
    async with _wired(holders):
        # A stall is told from a slow range by the gateway's remote timeout alone, the node's default here (what the
        # stall costs the get): a shorter one runs out on honest ranges of a loaded machine, before the stall is met.
        with gateway_core(tmp_path, SEGMENT) as gateway:
            cap = await _put_through(gateway, holders, data)
            assert await _read(gateway, holders, cap) == data
            damaged = gateway.store.damaged(cap.storage_index)
            tag_failures = gateway.tag_failures
    assert (remote.READ_BATCH, remote.READ_BATCH) in bad.asked and bad.stalled.is_set() == (how == "stall")
    # Bytes that are not the blocks fail their hashes before any tag is tried (a holder may know the file's key), and
    # are reported for repair.  A holder that refuses or stalls is left for the rest of the get, its share not blamed.
    assert list(damaged) == ([0] if how in ("garbage", "flipped") else [])
    assert tag_failures == 0
    if how == "flipped":
        assert "segments [18]" in damaged[0]


async def test_a_holder_that_sent_a_bad_block_is_read_last_for_the_rest_of_the_get(tmp_path) -> None:
    # A holder that sends only garbage once it has begun would otherwise be read first for every segment after, each
    # segment read twice (its share, then one more).
    data = os.urandom(4 * remote.READ_BATCH * SEGMENT + 5)
    liar = _OverTheWire("lying", bad_from=remote.READ_BATCH)
    holders = {0: liar, 1: _OverTheWire()}
    async with _wired(holders):
        with gateway_core(tmp_path, SEGMENT) as gateway:
            cap = await _put_through(gateway, holders, data)
            liar.asked.clear()
            assert await _read(gateway, holders, cap) == data
            assert list(gateway.store.damaged(cap.storage_index)) == [0]
    # Its first bad range, and the one asked ahead of it, before the bad blocks were seen; no range after.
    assert [first for first, _ in liar.asked] == [0, remote.READ_BATCH, 2 * remote.READ_BATCH]
    assert [first for first, _ in holders[1].asked] == [b * remote.READ_BATCH for b in range(5)]


async def test_holders_that_know_the_key_cannot_pass_off_a_segment_whose_tag_holds(tmp_path) -> None:
    # A capability is handed to other nodes (a provider reading a job's inputs, a public site), so a holder may know
    # the key and build blocks whose segment decrypts with a valid tag.  Only the manifest's hashes refuse them.
    data = os.urandom(4 * remote.READ_BATCH * SEGMENT + 5)
    holders = {s: _OverTheWire() for s in range(6)}
    async with _wired(holders):
        with gateway_core(tmp_path, SEGMENT) as gateway:
            cap = await _put_through(gateway, holders, data)
            forged = erasure.encode(SegmentCipher(cap.key).encrypt(2, os.urandom(SEGMENT)))
            for s in range(erasure.K):  # the data shares' holders agree on a segment of their own
                holders[s].forged[2] = forged[s]
            with pytest.raises(NotEnoughShares, match=r"segment 2 cannot be rebuilt: shares \[0, 1, 2, 3\]"):
                await _read(gateway, holders, cap)
            assert gateway.tag_failures == 0
            assert sorted(gateway.store.damaged(cap.storage_index)) == [0, 1, 2, 3]


async def test_three_holders_that_send_garbage_fail_the_get_naming_their_shares(tmp_path) -> None:
    data = os.urandom(4 * remote.READ_BATCH * SEGMENT + 5)
    holders = {s: _OverTheWire("garbage" if s in (0, 1, 4) else None, bad_from=0) for s in range(6)}
    async with _wired(holders):
        with gateway_core(tmp_path, SEGMENT) as gateway:
            cap = await _put_through(gateway, holders, data)
            with pytest.raises(NotEnoughShares, match=r"segment \d+ cannot be rebuilt: shares \[0, 1, 4\] are "
                                                      r"missing or corrupt and 4 intact shares are needed"):
                await _read(gateway, holders, cap)
            damaged = gateway.store.damaged(cap.storage_index)
            assert gateway.tag_failures == 0  # blocks from other nodes are hashed before any tag is tried
    assert sorted(damaged) == [0, 1, 4]

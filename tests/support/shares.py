"""A file encrypted and erasure-coded exactly as a gateway does it, to place its shares on a holder by hand; a holder
in this process (`Holding`) for a put to place a share on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Iterator

import plyvel
import pytest

from xsc import keys
from xsc.errors import PeerRefused
from xsc.node.appkeys import NODE
from xsc.storage.holder_client import RemoteHolder
from xsc.storage.core import erasure, layout
from xsc.storage.core.crypto import SegmentCipher, new_key, storage_index
from xsc.storage.core.manifest import Manifest, ciphertext_hash
from xsc.storage.core.merkle import block_hash, proof, root
from xsc.storage.core.wire import block_lengths
from xsc.storage.gateway_core import GatewayCore
from xsc.storage.share_store import ShareStore
from xsc.tasks import Workers

SEGMENT = 4096
SHARE = 2
DEAL_PRICE = 4_000  # micro-credits per GiB-hour: at or above every ask of the default pricing policy


@contextlib.asynccontextmanager
async def in_flight(fake, gate: asyncio.Event | None, wait: float = 10.0) -> AsyncIterator[None]:
    """One request to a fake holder under way, once `gate` (if any) is set: counted in `fake.in_flight`, the most at
    once in `fake.most_in_flight`, `fake.changed` (an asyncio.Condition) notified as it starts."""
    async with fake.changed:
        fake.in_flight += 1
        fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
        fake.changed.notify_all()
    try:
        if gate is not None:
            await asyncio.wait_for(gate.wait(), wait)
        yield
    finally:
        fake.in_flight -= 1


@contextlib.contextmanager
def gateway_core(directory: Path, segment_size: int) -> Iterator[GatewayCore]:
    """A gateway's core on a real LevelDB in `directory`, with its pool and its block writer."""
    db = plyvel.DB(str(directory / "db"), create_if_missing=True)
    writer = Workers(1, "test-writer")
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="test-pool") as pool:
            yield GatewayCore(ShareStore(db, 1 << 30), pool, segment_size=segment_size, lease_duration=86400,
                              node_key=b"k" * 32, writer=writer)
    finally:
        writer.shutdown()
        db.close()


class EncodedFile:
    """A file encrypted and erasure-coded exactly as a gateway does it: its blocks, hashes and manifest."""

    def __init__(self, size: int, segment_size: int = SEGMENT) -> None:
        key = new_key()
        self.si = storage_index(key)
        self.size, self.segment_size = size, segment_size
        data = os.urandom(size)
        cipher = SegmentCipher(key)
        self.count = layout.segment_count(size, segment_size)
        self.blocks: list[list[bytes]] = [[] for _ in range(erasure.N)]  # per share, per segment
        for i in range(self.count):
            for s, block in enumerate(erasure.encode(cipher.encrypt(i, data[i * segment_size:(i + 1) * segment_size]))):
                self.blocks[s].append(block)
        self.hashes = [[block_hash(b) for b in blocks] for blocks in self.blocks]
        self.manifest = Manifest(
            size=size, segment_size=segment_size, k=erasure.K, m=erasure.M, segment_count=self.count,
            share_roots=tuple(root(h).hex() for h in self.hashes),
            ciphertext_hash=ciphertext_hash([self.hashes[s][i] for i in range(self.count) for s in range(erasure.K)]))
        self.share_bytes = layout.share_bytes(size, segment_size)

    def lengths(self, first: int, count: int) -> list[int]:
        return block_lengths(self.size, self.segment_size, first, count)


class Holding:
    """A holder on another node as a repair or an audit sees it (storage/remote.py: Holder): it keeps the share a put
    sent it and answers its metadata honestly; once `lying`, the blocks it sends are not the ones it was sent; its
    audits are answered as `audits` says."""

    round_trip = None

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.lying = False
        self.deleted = False
        self.audits: list[Exception | None] = []  # what each audit gets in turn (None: an honest answer)

    async def begin(self, si, share, size, segment_size, lease_expiry) -> str:
        return "upload"

    async def put_segments(self, upload, first, blocks) -> None:
        self.stored[first:] = blocks

    async def commit(self, upload, block_hashes, manifest, *, first=0, blocks=None) -> None:
        if blocks:
            await self.put_segments(upload, first, blocks)
        assert [block_hash(b) for b in self.stored] == block_hashes

    async def meta(self, si, share, segment_count=None, *, size=None) -> dict:
        return {"segment_count": len(self.stored), "stored_bytes": sum(map(len, self.stored)), "lease_expiry": 0,
                "block_hashes": [block_hash(b) for b in self.stored]}

    async def blocks(self, si, share, first, count, lengths, timeout=None) -> list[bytes]:
        blocks = self.stored[first:first + count]
        return [bytes(b ^ 0xFF for b in block) for block in blocks] if self.lying else blocks

    async def delete(self, si, share) -> None:
        self.deleted = True

    async def audit(self, si, share, segment, manifest) -> tuple[bytes, list]:
        answer = self.audits.pop(0) if self.audits else None
        if answer is not None:
            raise answer
        return self.stored[segment], proof([block_hash(b) for b in self.stored], segment)


def lease() -> int:
    """A lease expiry a day from now."""
    return int(time.time()) + 86400


async def place(holder: RemoteHolder, f: EncodedFile, share: int = SHARE) -> None:
    """Upload one share of `f` to a holder (in two batches of blocks) and commit it."""
    upload = await holder.begin(f.si, share, f.size, f.segment_size, lease())
    await holder.put_segments(upload, 0, f.blocks[share][:1])
    await holder.put_segments(upload, 1, f.blocks[share][1:])
    await holder.commit(upload, f.hashes[share], f.manifest.encode())


def refused(err: pytest.ExceptionInfo | PeerRefused, status: int, code: str) -> None:
    """The holder refused with this HTTP status and problem code."""
    exc = err.value if isinstance(err, pytest.ExceptionInfo) else err
    assert (exc.details["peer_status"], exc.details["peer_code"]) == (status, code), exc


def nothing_staged(store, si: bytes) -> bool:
    """The holder's store has no upload, reservation or staged block of `si`."""
    with store.db.iterator(prefix=keys.blocks_of(si), include_value=False) as blocks, \
            store.db.iterator(prefix=keys.UPLOADS, include_value=False) as uploads:
        return store.reserved == 0 and next(blocks, None) is None and next(uploads, None) is None


async def holder_net(node_factory) -> dict:
    """Three in-process nodes: a (the uploader) and c have peered with b (the holder)."""
    quiet = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
    a, b, c = [await node_factory(name, **quiet) for name in ("a", "b", "c")]
    b_url, b_id = b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    for node in (a, c):
        assert (await node.app[NODE].peers.add(b_url)).id == b_id
    return {"a": a, "b": b, "c": c, "store": b.app[NODE].gateway.store,
            "from_a": RemoteHolder(a.app[NODE].peers.client, b_id, b_url, DEAL_PRICE),
            "from_c": RemoteHolder(c.app[NODE].peers.client, b_id, b_url, DEAL_PRICE)}

"""A put: a stream read segment by segment, encrypted, erasure-coded and hashed in the pool while the segment before
is written, the shares published once all are written (here, or on the holders `place` names).

A file of one segment (a small object) places each remote share in one request once its block and the manifest
are known (a whole share: storage/core/wire.py); a larger one begins every remote share while its first segments
are read and encoded (the begins' round trip is not spent waiting), sends no block before its share is begun, then
sends its segments in ordered batches and commits.  At most `depth` segments are in flight, so memory stays
bounded whatever the file size, and each holds its share of the gateway's budget, which all puts share
(put_budget.py), from before its read until its blocks are written and handed on.  A put's LevelDB writes of its
blocks queue in order on the gateway's writer thread rather than in the pool (in the pool each would wait behind the
encodes queued before it, and hold a pool thread that could be encoding; LevelDB takes one writer at a time anyway),
each begun as the one before ends: the writer is a put's slowest step, and a write begun only once the event loop has
seen the one before end would leave it idle between them.  A file
of one segment is encoded, begun and written in one pool job; the file is published in the
node's next group write (storage/publisher.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

from ..errors import BadRequest, PeerError
from .core import erasure, layout, leases
from .core.capability import Capability
from .core.crypto import SegmentCipher, new_key, storage_index
from .gateway_core import GatewayCore, Replacer
from .core.manifest import Manifest, ciphertext_hash, manifest_hash
from .core.merkle import block_hash, root
from .core.placement import SPREAD_IT, node_failures_survived, peer_failures_survived
from .core.wire import WHOLE_MAX_BLOCK
from .remote import SEND_BATCH, Holder, RemoteShareWriter, gather_or_raise, summarise_refusals
from .share_store import HELD_UPLOAD, Rider, ShareMeta

# A file's only segment this small is encoded on the event loop (~7 us for 1 KiB): handed to the pool, the hand-off
# and the wait for the GIL back cost far more.
INLINE_SEGMENT = 16 * 1024
PIECE = 256 * 1024  # the most a put asks its stream for at once (`_read_full`)
# Seconds a put keeps a segment's share of the budget, taken before the segment is read, while the segment comes
# (`_Stream.read_taken`): a client sending at any useful rate sends a segment in far less.
LET_IN_READ = 1.0
ReadFn = Callable[[int], Awaitable[bytes]]
Placer = Callable[[bytes, int], "tuple[list[str], dict[int, Holder]]"]
Records = Callable[[bytes, list[str], int], dict[bytes, bytes]]  # (storage index, placement, lease expiry) -> records
Riding = Callable[[str], Rider]  # (the file's capability) -> records of another's, written with the file's


@dataclass
class PutResult:
    capability: Capability
    size: int
    segments: int
    stored_bytes: int
    placement: list[str]  # the node holding each share
    shares: int = erasure.N
    lease_expiry: int = 0  # unix seconds: every share's lease ends then
    me: str = "this node"  # how `placement` names this node
    kept_home: str = ""  # why shares meant for other nodes stay on this one (their holders refused them)
    lost: str = ""  # which shares' holders failed them during the put (rebuilt by the repair loop), and where
    # Those shares: `placement` names this node for them, where none of them is until the repair rebuilds it, so the
    # answer counts the nodes and losses survived over the shares placed.
    missing: tuple[int, ...] = ()

    @property
    def held(self) -> list[str]:
        """The node holding each share placed (those missing left out)."""
        return [node for share, node in enumerate(self.placement) if share not in self.missing]

    @property
    def nodes(self) -> int:
        return len(set(self.held))

    @property
    def node_failures_survived(self) -> int:
        return node_failures_survived(self.held)

    @property
    def peer_failures_survived(self) -> int:
        """Losses of other nodes holding shares the file survives while this node is up."""
        return peer_failures_survived(self.held, self.me)

    @property
    def placement_note(self) -> str:
        held = self.held
        if self.nodes == 1:
            return (f"all {len(held)} shares are on this one node: the file survives the loss of any "
                    f"{len(held) - erasure.K} shares, but not the loss of the node")
        here = held.count(self.me)
        others = self.nodes - (1 if here else 0)
        survived, peers = self.node_failures_survived, self.peer_failures_survived
        if here and peers == others:
            note = (f"{here} of the {len(held)} shares are on this node and {len(held) - here} on {others} other node"
                    f"{'s' if others > 1 else ''}: the file survives the loss of "
                    f"{'any of them' if others > 1 else 'the other node'}")
            return note + (f" or of any {survived} node{'s' if survived > 1 else ''}" if survived else
                           " (not the loss of this node)")
        if survived == 0:
            return (f"the {len(held)} shares are on {self.nodes} nodes (warning: the loss of any one of them loses the "
                    f"file; {SPREAD_IT})")
        return f"the {len(held)} shares are on {self.nodes} nodes: the file survives the loss of any {survived} of them"

    def to_json(self) -> dict[str, Any]:
        found = {"capability": str(self.capability), "size": self.size, "segments": self.segments,
                 "stored_bytes": self.stored_bytes, "shares": self.shares, "placement": self.placement,
                 "nodes": self.nodes, "node_failures_survived": self.node_failures_survived,
                 "peer_failures_survived": self.peer_failures_survived,
                 "placement_note": self.placement_note, "lease_expiry": self.lease_expiry}
        if self.kept_home:
            found["kept_home"] = self.kept_home
        if self.lost:
            found["lost"] = self.lost
        return found


async def _read_full(read: ReadFn, n: int) -> list[bytes]:
    """Up to n bytes, as the pieces read (fewer bytes only at the end of the stream).  Not joined: a segment's bytes
    joined are a buffer glibc maps on its own (heap.MMAP_THRESHOLD), faulting in and zeroing its pages, where the
    cipher takes them piece by piece (SegmentCipher.encrypt_pieces); asked for at most PIECE bytes at a time, so that
    a reader joining what it has buffered does it in the heap."""
    parts, got = [], 0
    while got < n:
        chunk = await read(min(n - got, PIECE))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts


# A put's block writes under way at most (the one being written and those queued behind it, which the writer begins as
# the one before ends).  Queued writes hold their segments' share of the gateway's budget, and a put that finds the
# budget spent sends on what it holds for other nodes at once: with no bound, a remote share's last batch would often
# leave without its commit, which then costs a round trip of its own (tests/storage/test_remote_put.py).
QUEUED = 3


class _Writes:
    """A put's block writes, queued in order on the gateway's writer (one thread: one write at a time, each begun as
    the one before ends, with no turn of the event loop between them).  Once one fails, or the put stops, those still
    queued are skipped."""

    def __init__(self, gateway: GatewayCore) -> None:
        self.gateway = gateway
        self.pending: list[asyncio.Future] = []
        self.stopped = False  # read on the writer's thread before each write

    async def start(self, write: Callable[[int, dict[int, bytes]], None], index: int, blocks: dict[int, bytes]
                    ) -> asyncio.Future | None:
        """write(index, blocks) queued on the gateway's writer, and its future, once fewer than QUEUED writes of this
        put are under way; a write that failed before fails the put here, before another is queued; no blocks (all
        remote): no write."""
        if len(self.pending) >= QUEUED:  # (never more: each start adds one)
            await asyncio.wait(self.pending[:1])
        for done in [future for future in self.pending if future.done()]:
            self.pending.remove(done)
            done.result()
        if not blocks:
            return None
        self.pending.append(self.gateway.write(self._write, write, index, blocks))
        return self.pending[-1]

    def _write(self, write: Callable[[int, dict[int, bytes]], None], index: int, blocks: dict[int, bytes]) -> None:
        if self.stopped:
            return
        try:
            write(index, blocks)
        except BaseException:
            self.stopped = True
            raise

    def stop(self) -> None:
        """The put failed: the writes still queued are skipped (one under way ends)."""
        self.stopped = True


class _OnePut:
    """One put under way: where its shares go, the upload of those kept here, the writers of those sent away, and
    the N block hashes of each segment written so far."""

    def __init__(self, gateway: GatewayCore, size: int | None, place: Placer | None, lease_duration: int | None,
                 me: str, rebuild_away: bool = False, filters: dict | None = None) -> None:
        self.gateway, self.me, self.rebuild_away, self.filters = gateway, me, rebuild_away, filters
        self.key = new_key()
        self.si = storage_index(self.key)
        self.cipher = SegmentCipher(self.key)
        self.size, self.seg_size = size, gateway.segment_size
        self.placement, holders = [me] * erasure.N, {}
        if place is not None and size is not None:
            self.placement, holders = place(self.si, layout.share_bytes(size, self.seg_size))
        self.local = tuple(s for s in range(erasure.N) if s not in holders)
        self.lease = int(time.time()) + leases.check_duration(lease_duration or gateway.lease_duration)
        # A file of one segment sends each share in one request, taking nothing of the budget of blocks on their way
        sending = None if self.one_segment else gateway.sending
        self.remote = {s: RemoteShareWriter(h, self.placement[s], self.si, s, sending, may_lose=True)
                       for s, h in holders.items()}
        self.hashes: list[list[bytes]] = []  # per segment, the N block hashes
        # share -> (its node, how it failed it) for the shares whose holders failed them once begun (`drop_lost`)
        self.lost: dict[int, tuple[str, PeerError]] = {}
        self.lost_noted: dict[int, str] = {}  # those of them noted to delete (`note_remote`): maybe committed there
        self.total = 0
        self.upload = None

    @property
    def whole(self) -> bool:
        """A file of one segment whose remote shares each go in one request (storage/core/wire.py: a whole
        share): no begin, no segments, no commit."""
        size = self.size
        return bool(self.remote) and size is not None and layout.segment_count(size, self.seg_size) == 1 and \
            layout.share_bytes(size, self.seg_size) <= WHOLE_MAX_BLOCK

    @property
    def one_segment(self) -> bool:
        """A file of known size in one segment: its upload is begun and its blocks written as that segment is
        encoded (in one pool job, or on the loop for a small one: `INLINE_SEGMENT`), not in three hand-offs."""
        return self.size is not None and layout.segment_count(self.size, self.seg_size) == 1

    async def begin(self) -> None:
        """The upload of the shares kept here begun, before any other node is told the storage index (its
        begins; a file of one segment in whole shares tells it once encoded): a peer's begin of one of them is
        refused from then on (holder.py `_open`), where one begun first would stage under the same keys."""
        if not self.one_segment or self.remote and not self.whole:
            self.upload = await self.gateway.run(self._begin_upload)

    def _begin_upload(self):
        size = self.size
        expected = layout.share_bytes(size, self.seg_size) * len(self.local) if size is not None else None
        if self.one_segment and expected <= HELD_UPLOAD:  # written whole by this request: room taken as it publishes
            return self.gateway.store.detached_upload(self.si, self.local, expected, fresh=True)  # self.key is new
        return self.gateway.store.begin_upload(self.si, self.local, expected)

    def encode_segment(self, index: int, plaintext: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        blocks = erasure.encode(self.cipher.encrypt_pieces(index, plaintext))
        if self.one_segment:  # written here, and begun here unless `begin` began it
            if self.upload is None:
                self.upload = self._begin_upload()
            if self.local:
                self.upload.put_blocks(index, {s: blocks[s] for s in self.local})
        return blocks, [block_hash(b) for b in blocks]

    async def write_segments(self, read: ReadFn, started: Awaitable[None] | None = None) -> None:
        """Read the stream to its end, `depth` segments encoding at once, each written as it completes.  `started`:
        the remote shares' begins, still on their way as the first segments are read and encoded; up to a batch of
        each remote share is kept here until it is done (a holder that refused is replaced there, with its writer).
        Each segment holds its length of the gateway's budget from before its read until its blocks are written and
        handed on."""
        stream = _Stream(self, read, started)
        try:
            await stream.run()
        finally:
            stream.give_back_all()

    def manifest(self) -> tuple[Manifest, list[list[bytes]]]:
        """The file's manifest and, per share, its block hashes."""
        share_hashes = [[seg[s] for seg in self.hashes] for s in range(erasure.N)]
        manifest = Manifest(
            size=self.total, segment_size=self.seg_size, k=erasure.K, m=erasure.M, segment_count=len(self.hashes),
            share_roots=tuple(root(h).hex() for h in share_hashes),
            # Commits to the whole ciphertext: the k data blocks of a segment are its padded ciphertext.
            ciphertext_hash=ciphertext_hash([h for seg in self.hashes for h in seg[:erasure.K]]),
        )
        return manifest, share_hashes

    async def note_remote(self, noted: dict[int, str], writer: RemoteShareWriter | None = None) -> dict[int, str]:
        """The copies this put may commit on other nodes (every remote share's, or `writer`'s) noted to delete
        (`ShareStore.note_strays`) before any is committed: a kill -9 before the file is published leaves copies
        no placement holds, which the node deletes at its next start (removals.py `release_strays`).  The note goes
        in the publishing write (`publish`).  Not synced: a kill -9 keeps it (it is in the OS's buffers); only a
        machine crash may lose it, and the holders then drop the unpaid copies after `storage.unpaid_grace`.
        Returns the shares noted, with `noted`."""
        writers = self.remote.values() if writer is None else (writer,)
        shares = {w.share: w.node for w in writers if w.node != self.me}  # (a share kept here: `_KeptHome`)
        if shares:
            await self.gateway.run(partial(self.gateway.store.note_strays, self.si, shares, self.lease, sync=False))
        return {**noted, **shares}

    async def drop_lost(self) -> None:
        """The remote shares whose holders failed them after their uploads began (`RemoteShareWriter.lost`) taken
        out of the put, as a Tahoe-LAFS upload drops a server it lost: each one's upload taken back there if its
        holder still answers (`RemoteShareWriter.undo`; one that does not drops its staged uploads as it restarts, or
        at their deadline, and a copy it may have committed stays noted to delete: `lost_noted`), never paid (no deal
        names it: the placement names this node), and the share published missing and marked damaged, so that the
        repair loop rebuilds it: here, or on another node for a put that keeps no share here (`rebuild_away`: the
        file's record lists it under "away").  Its blocks are not sent
        again: a put keeps none once sent (memory stays bounded whatever the file), and a put from a stream could not
        read them again.  The put fails if fewer than K + 1 shares are left (the file would not survive the loss of
        one more), with everything sent taken back."""
        gone = {s: w for s, w in self.remote.items() if w.lost is not None}
        if not gone:
            return
        await asyncio.gather(*(w.undo() for w in gone.values()))
        for share, writer in gone.items():
            del self.remote[share]
            self.lost[share] = (writer.node, writer.lost)
            self.placement[share] = self.me
        placed = erasure.N - len(self.lost)
        if placed < erasure.K + 1:
            message, hint, refusals = summarise_refusals([(n, s, e) for s, (n, e) in sorted(self.lost.items())])
            raise PeerError(f"only {placed} of {erasure.N} shares could be placed ({erasure.K + 1} are needed, so "
                            f"that the file survives the loss of one more): {message.replace(' refused ', ' failed ')}",
                            hint=f"put the file again once more providers are up ({hint})",
                            nodes=sorted({n for n, _ in self.lost.values()}), refusals=refusals)

    @property
    def lost_note(self) -> str:
        """The answer's `lost`: which shares' holders failed them, and where the repair rebuilds them."""
        if not self.lost:
            return ""
        message, _, _ = summarise_refusals([(n, s, e) for s, (n, e) in sorted(self.lost.items())])
        shares = sorted(self.lost)
        where = "on this node" if not self.rebuild_away else "on other nodes" if len(shares) > 1 else "on another node"
        return (f"{message.replace(' refused ', ' failed ')} during the put; the repair loop rebuilds "
                f"{'them' if len(shares) > 1 else 'it'} {where}")

    async def publish(self, name: str | None, encoded: bytes, share_hashes: list[list[bytes]],
                      me: str, records: Records | None, riding: Riding | None = None) -> PutResult:
        share_bytes = layout.share_bytes(self.total, self.seg_size)
        cap = Capability(key=self.key, manifest_hash=manifest_hash(encoded), size=self.total)
        lease, count = self.lease, len(self.hashes)
        metas = [ShareMeta(s, count, share_bytes, lease, self.gateway.node_key, tuple(share_hashes[s]))
                 for s in self.local]
        record = {"name": name or "", "size": self.total, "capability": str(cap), "storage_index": self.si.hex(),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "placement": self.placement,
                  "lease_expiry": lease, "leases": [lease] * erasure.N}
        if self.lost and self.rebuild_away:  # read by the repair (gateway_repair `away`) with the damage marks
            record["away"] = sorted(self.lost)
        if self.filters:  # where the file's repairs may place the shares they rebuild (storage/quotes.py `filters_of`)
            record["filters"] = self.filters
        also = records(self.si, self.placement, lease) if records is not None else None
        if self.remote or self.lost:  # the copies this put noted (`note_remote`) are placed now, but those it lost
            also = {**(also or {}), **self.gateway.store.strays_placed(self.si, self.lost_noted, lease)}
        if self.lost:  # in the file's own write: a kill -9 never leaves a missing share the repair loop does not see
            also = {**also, **self.gateway.store.damage_entries(self.si, {
                s: f"missing: node {node} failed it during the put ({err.details.get('peer_code') or err.code})"
                for s, (node, err) in self.lost.items()})}
        rider = riding(record["capability"]) if riding is not None else None
        await self.gateway.publisher.publish(self.upload, metas, encoded, record, also, rider)
        return PutResult(capability=cap, size=self.total, segments=count, stored_bytes=share_bytes * erasure.N,
                         placement=self.placement, lease_expiry=lease, me=me, lost=self.lost_note,
                         missing=tuple(sorted(self.lost)))

    async def undo(self) -> None:
        """Take back what was sent to holders and what was written here."""
        await asyncio.gather(*(r.undo() for r in self.remote.values()))
        if self.upload is not None:
            await self.gateway.run(self.gateway.store.abort, self.upload)


class _KeptHome:
    """The holder of a share meant for another node and kept on this one (its holder refused it for a standing
    reason: gateway_core.start_remote): the share's writer goes on as it would to that node, and this does here what
    a holder does there, in an upload of its own (staged, reserved and recovered as any: share_store.py), published
    at its commit; undone by the writer as a remote share is (aborted, or deleted if published)."""

    round_trip = 0.0

    def __init__(self, gateway: GatewayCore) -> None:
        self.gateway = gateway
        self.upload = None
        self.meta: tuple[int, int, int] | None = None  # (share, share bytes, lease expiry)
        self.writing: list[asyncio.Future] = []  # its batches' writes: all done before its commit publishes

    async def begin(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int) -> str:
        share_bytes = layout.share_bytes(size, segment_size)
        self.upload = await self.gateway.begin_here(si, (share,), share_bytes)
        self.meta = (share, share_bytes, lease_expiry)
        return self.upload.id.hex()

    def _stage(self, first: int, blocks: list[bytes]) -> None:
        share = self.meta[0]
        for i, block in enumerate(blocks):
            self.upload.put_blocks(first + i, {share: block})

    async def put_segments(self, upload: str, first: int, blocks: list[bytes]) -> None:
        self.writing.append(self.gateway.write(self._stage, first, blocks))
        await self.writing[-1]

    async def commit(self, upload: str, block_hashes: list[bytes], manifest: bytes, *, first: int = 0,
                     blocks: list[bytes] | None = None) -> None:
        if blocks:
            self.writing.append(self.gateway.write(self._stage, first, blocks))
        await asyncio.gather(*self.writing)
        share, share_bytes, lease = self.meta
        meta = ShareMeta(share, len(block_hashes), share_bytes, lease, self.gateway.node_key, tuple(block_hashes))
        await self.gateway.publisher.publish(self.upload, [meta])

    async def place_whole(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int,
                          block: bytes, block_hash: bytes, manifest: bytes) -> None:
        await self.begin(si, share, size, segment_size, lease_expiry)
        try:
            await self.commit("", [block_hash], manifest, blocks=[block])
        except BaseException:
            await self.abort("")
            raise

    async def touch(self, upload: str) -> None:
        pass  # nothing here aborts an idle upload to make room

    async def abort(self, upload: str) -> None:
        await asyncio.gather(*self.writing, return_exceptions=True)
        await self.gateway.run(self.gateway.store.abort, self.upload)

    async def delete(self, si: bytes, share: int) -> None:
        await self.gateway.run(self.gateway.store.delete_share, si, share)


SLOW_READ = 0.05  # seconds a segment may take to come before the blocks a put holds for other nodes are sent on


class _Stream:
    """A put's segments on their way: read from the stream, encoding in the pool (`depth` at most), their blocks
    written here and handed to the remote shares' writers in order; each holding its length of the gateway's
    budget from before its read until its blocks are written and handed on (put_budget.py)."""

    def __init__(self, put: _OnePut, read: ReadFn, started: Awaitable[None] | None) -> None:
        self.put, self.read, self.started = put, read, started
        self.budget = put.gateway.budget
        self.writes = _Writes(put.gateway)
        self.in_flight: deque[asyncio.Future] = deque()
        self.held: list[dict[int, bytes]] = []  # remote blocks of segments encoded while the begins are on their way
        self.held_bytes = 0
        self.taken: dict[int, int] = {}  # segment -> bytes of the budget it holds
        # Blocks for other nodes take the gateway's budget of blocks on their way (the writers give it back as
        # their batches are answered); `held` holds `held_sending` of it.
        self.sending = None if put.one_segment else put.gateway.sending
        self.held_sending = 0

    def give_back(self, index: int, _: object = None) -> None:
        """Segment `index`'s share of the budget given back (once: at its write's end, or the put's)."""
        n = self.taken.pop(index, 0)
        if n:
            self.budget.give(n)

    def give_back_all(self) -> None:
        for index in list(self.taken):
            self.give_back(index)
        if self.sending is not None and self.held_sending:  # blocks of a failed put never added to a writer
            self.sending.give(self.held_sending)
        self.held, self.held_bytes, self.held_sending = [], 0, 0

    async def hand_over(self) -> None:
        if self.started is not None:
            await self.started
        remote = self.put.remote
        while self.held:
            blocks = self.held.pop(0)
            for s in remote:
                self.held_sending -= len(blocks[s])  # the writer's to give back once added (its first step)
                await remote[s].add(blocks[s])
        self.held_bytes = 0

    async def send_on(self) -> None:
        """Every block this put holds for other nodes on its way, however few (once the begins are answered): what
        it holds of the budget of blocks on their way comes back as the holders answer, without this put."""
        if self.sending is not None:
            await self.hand_over()
            await asyncio.gather(*(writer.flush() for writer in self.put.remote.values()))

    async def take_sending(self, n: int) -> None:
        """`n` bytes of the budget of blocks on their way; with none free, what this put holds sent on first, then
        its turn waited for."""
        assert self.sending is not None
        if not self.sending.try_take(n):
            await self.send_on()
            await self.sending.take(n)

    async def collect(self, result: asyncio.Future) -> None:
        """The oldest segment in flight, once encoded: its hashes kept, its blocks written and handed on."""
        put = self.put
        blocks, segment_hashes = await result
        put.hashes.append(segment_hashes)
        index, write = len(put.hashes) - 1, None
        if not put.one_segment:  # (one segment: written by its encoding job)
            write = await self.writes.start(put.upload.put_blocks, index, {s: blocks[s] for s in put.local})
        if put.remote:
            remote = {s: blocks[s] for s in put.remote}
            if self.sending is not None:
                n = sum(len(block) for block in remote.values())
                await self.take_sending(n)
                self.held_sending += n
            self.held.append(remote)
            self.held_bytes += len(blocks[0])
            # Up to a batch per share is kept here until the holders answered the begins: the first batches
            # are ready as the answers come.
            if self.started is None or self.started.done() or self.held_bytes >= SEND_BATCH:
                await self.hand_over()
        if write is None:
            self.give_back(index)
        else:
            write.add_done_callback(partial(self.give_back, index))

    async def read_segment(self, want: int) -> list[bytes]:
        """The next segment's pieces, the segments before it collected as they are encoded meanwhile, and the blocks
        this put holds for other nodes sent on if the segment is slow to come: a client that trickles holds none of
        either budget while its next segment comes."""
        in_flight = self.in_flight
        if not in_flight and not self.unsent:
            return await _read_full(self.read, want)
        reading = asyncio.ensure_future(_read_full(self.read, want))
        try:
            while not reading.done() and (in_flight or self.unsent):
                await asyncio.wait((reading, *([in_flight[0]] if in_flight else ())),
                                   timeout=SLOW_READ if self.unsent else None, return_when=asyncio.FIRST_COMPLETED)
                if in_flight and in_flight[0].done():
                    await self.collect(in_flight.popleft())
                elif not reading.done() and self.unsent:
                    await self.send_on()
            return await reading
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    @property
    def unsent(self) -> bool:
        """Whether this put holds blocks for other nodes that are not on their way."""
        return self.sending is not None and bool(self.held or any(w.unsent for w in self.put.remote.values()))

    async def read_taken(self, index: int, want: int) -> list[bytes]:
        """The next segment, its share of the budget taken before it is read (a put waiting its turn holds nothing it
        has read); a segment that has not come within LET_IN_READ seconds gives its share back and is read on
        without it, then takes it once read: a client that trickles holds none of the budget for long."""
        await self.take(index, want)
        timer = asyncio.get_running_loop().call_later(LET_IN_READ, self.give_back, index)
        try:
            return await self.read_segment(want)
        finally:
            timer.cancel()

    async def take(self, index: int, length: int) -> None:
        """The segment's length of the budget; with none free, this put's own segments collected first (they give
        theirs back without it), what it holds for other nodes sent on, then its turn waited for."""
        while not self.budget.try_take(length):
            if not self.in_flight:
                await self.send_on()  # a put waiting here holds nothing another put waits for
                await self.budget.take(length)
                break
            await self.collect(self.in_flight.popleft())
        self.taken[index] = length

    async def run(self) -> None:
        put, in_flight = self.put, self.in_flight
        size, seg_size, pool, loop = put.size, put.seg_size, put.gateway.pool, asyncio.get_running_loop()
        try:
            index = 0
            while True:
                want = seg_size if size is None else layout.plaintext_length(size, seg_size, index)
                if want > INLINE_SEGMENT:
                    plaintext = await self.read_taken(index, want)
                else:  # a small object's: outside the budget (below)
                    plaintext = await self.read_segment(want)
                length = sum(len(p) for p in plaintext)
                put.total += length
                if size is not None and length < want:
                    raise BadRequest(f"the upload ended after {put.total} of {size} bytes",
                                     hint="send the whole file")
                if index > 0 and not plaintext:
                    break  # a stream of unknown size ended on a segment boundary
                if put.one_segment and length <= INLINE_SEGMENT:
                    # Outside the budget: a small object's few KiB, encoded at once, never queue behind large puts.
                    encoded = loop.create_future()
                    encoded.set_result(put.encode_segment(index, plaintext))
                    in_flight.append(encoded)
                else:
                    if index not in self.taken:
                        await self.take(index, length)
                    in_flight.append(loop.run_in_executor(pool, put.encode_segment, index, plaintext))
                index += 1
                if len(in_flight) >= put.gateway.depth:
                    await self.collect(in_flight.popleft())
                if size is not None and index == layout.segment_count(size, seg_size):
                    break
                if size is None and length < seg_size:
                    break
            while in_flight:
                await self.collect(in_flight.popleft())
            await self.hand_over()
            await asyncio.gather(*self.writes.pending)
            if size is not None and await _read_full(self.read, 1):
                raise BadRequest(f"the upload is longer than the {size} bytes announced")
        except BaseException:
            self.writes.stop()
            for fut in in_flight:
                if not put.one_segment:  # its job begins the upload: waited for, so that `undo` can abort it
                    fut.cancel()
            await asyncio.gather(*in_flight, *self.writes.pending, return_exceptions=True)
            raise


async def put(gateway: GatewayCore, read: ReadFn, size: int | None, name: str | None = None,
              place: Placer | None = None, lease_duration: int | None = None,
              replace: Replacer | None = None, me: str = "this node", records: Records | None = None,
              riding: Riding | None = None, keep_home: bool = False, rebuild_away: bool = False,
              filters: dict | None = None) -> PutResult:
    """Store a stream; `size` (if known) is checked against free space before anything is written.

    `place(storage index, share bytes)` says where the shares go: the node of each share and the
    holder of each share on another node (only for a known size); by default all stay here.  A holder
    that cannot begin its share (down, or refusing) is swapped for `replace(share, node -> how it failed it)`,
    if given, before any byte is sent.  Every share's lease ends `lease_duration` seconds from now
    (default: the node's).  `me`: how the placement names this node.  `records(storage index, placement, lease
    expiry)`: records written with the file's (its deals), in the same synced write; `riding(capability)`: records of
    another's made as that write is (`share_store.Rider`: a small S3 object's record).  `keep_home`: a share that no
    holder takes only because of its holders' standing decisions about this node (a quarantine, terms, no room:
    remote.STANDING) is kept here instead, and the answer's `kept_home` says why.  `rebuild_away`: the put keeps no
    share here on purpose, so a share whose holder is lost during it is rebuilt on another node (`drop_lost`).
    `filters`: the put's placement filters as the file's record keeps them, for its repairs."""
    one = _OnePut(gateway, size, place, lease_duration, me, rebuild_away, filters)
    await one.begin()
    starting: asyncio.Future | None = None
    keep = (lambda share: (me, _KeptHome(gateway))) if keep_home else None
    gateway.putting[one.si] = one.remote  # (its shares' writers: `GatewayCore.keep_alive`)
    try:
        whole = one.whole
        if not whole and one.remote:
            # The begins' round trip overlaps the reading and encoding of the first segments.
            starting = asyncio.ensure_future(gateway.start_remote(
                one.remote, one.placement, replace, lambda writer: writer.begin(size, one.seg_size, one.lease), keep))
        await one.write_segments(read, starting)
        refused = []
        if starting is not None:
            refused = await starting  # done once the first segment was collected: its error, if any, is the put's
        manifest, share_hashes = one.manifest()
        encoded = manifest.encode()
        if whole:  # each remote share in one request, once its block and the manifest are known
            noted = await one.note_remote({})

            async def place_whole(writer: RemoteShareWriter) -> None:
                if noted.get(writer.share) != writer.node:  # a replacement holder
                    noted.update(await one.note_remote(noted, writer))
                await writer.place_whole(one.total, one.seg_size, one.lease, share_hashes[writer.share], encoded)

            refused = await gateway.start_remote(one.remote, one.placement, replace, place_whole, keep)
        else:
            await one.drop_lost()  # shares whose holders failed them while their blocks went
            noted = await one.note_remote({})
            await gather_or_raise([r.commit(share_hashes[s], encoded) for s, r in one.remote.items()],
                                  [(r.node, s) for s, r in one.remote.items()])
            one.lost_noted = {s: w.node for s, w in one.remote.items() if w.lost is not None and w.commit_sent
                              and s in noted}
            await one.drop_lost()  # and those that failed them at the commit
        result = await one.publish(name, encoded, share_hashes, me, records, riding)
        if refused:
            message, hint, _ = summarise_refusals(refused)
            result.kept_home = f"{message} ({hint})"
        return result
    except BaseException:
        if starting is not None:  # the begins answered (or failed) first: `undo` aborts every upload begun
            await asyncio.gather(starting, return_exceptions=True)
        await one.undo()
        raise
    finally:
        del gateway.putting[one.si]

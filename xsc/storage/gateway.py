"""The gateway: streaming put and get, check, verify and repair over a share store.

Segments are processed in a thread pool (AES-GCM, zfec and SHA-256 release the
GIL, and so does LevelDB I/O), a bounded number at a time, so both cores work
and memory stays bounded whatever the file size: at most `depth` segments are
in flight.  Get yields plaintext in order; put writes blocks as segments
complete and publishes the shares once all are written.  A put encrypts,
erasure-codes and hashes segments while the one before is written, one LevelDB
write in flight at a time: LevelDB takes one writer at a time anyway, and a
second would hold a pool thread that could be encoding.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import BadRequest, IntegrityError, NotEnoughShares, NotFound, PeerError, RangeNotSatisfiable
from . import erasure, layout, leases
from .capability import Capability
from .crypto import SegmentCipher, new_key, storage_index
from .manifest import Manifest, ciphertext_hash, decode_manifest
from .merkle import block_hash, root
from .placement import node_failures_survived, peer_failures_survived
from .remote import Holder, RemoteShareReader, RemoteShareWriter, gather_or_raise, summarise_refusals
from .share_store import ShareMeta, ShareStore

log = logging.getLogger(__name__)

ReadFn = Callable[[int], Awaitable[bytes]]
Placer = Callable[[bytes, int], "tuple[list[str], dict[int, Holder]]"]
# (share, nodes already used, nodes that failed it) -> where a repaired share goes instead (None: here)
Relocator = Callable[[int, set, set], "Awaitable[tuple[str, Holder] | None]"]
# (share, nodes that failed it) -> another holder for a share whose holder could not take it (None: give up)
Replacer = Callable[[int, set], "Awaitable[tuple[str, Holder] | None]"]
REPLACEMENTS = 3  # other holders tried for a share whose chosen holder cannot take it


@dataclass
class PutResult:
    capability: str
    size: int
    segments: int
    stored_bytes: int
    placement: list[str]  # the node holding each share
    shares: int = erasure.N
    lease_expiry: int = 0  # unix seconds: every share's lease ends then
    me: str = "this node"  # how `placement` names this node

    @property
    def nodes(self) -> int:
        return len(set(self.placement))

    @property
    def node_failures_survived(self) -> int:
        return node_failures_survived(self.placement)

    @property
    def peer_failures_survived(self) -> int:
        """Losses of other nodes holding shares the file survives while this node is up."""
        return peer_failures_survived(self.placement, self.me)

    @property
    def placement_note(self) -> str:
        if self.nodes == 1:
            return ("all 6 shares are on this one node: the file survives the loss of any 2 shares, "
                    "but not the loss of the node")
        here = self.placement.count(self.me)
        others = self.nodes - (1 if here else 0)
        survived, peers = self.node_failures_survived, self.peer_failures_survived
        if here and peers == others:
            note = (f"{here} of the 6 shares are on this node and {6 - here} on {others} other node"
                    f"{'s' if others > 1 else ''}: the file survives the loss of "
                    f"{'any of them' if others > 1 else 'the other node'}")
            return note + (f" or of any {survived} node{'s' if survived > 1 else ''}" if survived else
                           " (not the loss of this node)")
        note = f"the 6 shares are on {self.nodes} nodes: the file survives the loss of any {survived} of them"
        if survived == 0:
            return (note + " (warning: the loss of any one of them loses the file; add nodes and "
                    "`xsc store repair` it)")
        return note

    def to_json(self) -> dict[str, Any]:
        return {"capability": self.capability, "size": self.size, "segments": self.segments,
                "stored_bytes": self.stored_bytes, "shares": self.shares, "placement": self.placement,
                "nodes": self.nodes, "node_failures_survived": self.node_failures_survived,
                "peer_failures_survived": self.peer_failures_survived,
                "placement_note": self.placement_note, "lease_expiry": self.lease_expiry}


@dataclass
class ShareReport:
    share: int
    status: str  # ok | missing | corrupt
    detail: str = ""
    bad_blocks: list[int] = field(default_factory=list)


_VERIFIED_ROOTS: "OrderedDict[bytes, None]" = OrderedDict()  # digests of (block hashes, root) pairs that matched
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()


def _roots_to(block_hashes: tuple[bytes, ...], expected: bytes) -> bool:
    """Whether these block hashes have the Merkle root `expected`.  Every read of a file checks each share's
    metadata against its manifest: remembered by a digest of both (content-addressed, so never stale),
    a ranged read of a large file does not recompute thousands of tree hashes each time."""
    digest = hashlib.sha256(expected + b"".join(block_hashes)).digest()
    with _VERIFIED_LOCK:
        if digest in _VERIFIED_ROOTS:
            _VERIFIED_ROOTS.move_to_end(digest)
            return True
    if root(list(block_hashes)) != expected:
        return False
    with _VERIFIED_LOCK:
        _VERIFIED_ROOTS[digest] = None
        if len(_VERIFIED_ROOTS) > _VERIFIED_MAX:
            _VERIFIED_ROOTS.popitem(last=False)
    return True


async def _read_full(read: ReadFn, n: int) -> bytes:
    """Up to n bytes: fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        chunk = await read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _OneWrite:
    """Block writes run in the pool one at a time, each started once the one before is done (module docstring)."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.pending: list[asyncio.Future] = []

    async def start(self, write: Callable[[int, dict[int, bytes]], None], index: int, blocks: dict[int, bytes]) -> None:
        """write(index, blocks) in the pool once the write before is done; no blocks (all remote): no write."""
        await asyncio.gather(*self.pending)
        if blocks:
            self.pending = [asyncio.get_running_loop().run_in_executor(self.pool, write, index, blocks)]


class Gateway:
    def __init__(self, store: ShareStore, pool: Executor, *, segment_size: int, lease_duration: int,
                 node_key: bytes, depth: int = 6, remote_timeout: float = 5.0) -> None:
        self.store = store
        self.pool = pool
        self.segment_size = segment_size
        self.lease_duration = lease_duration
        self.node_key = node_key
        self.depth = depth
        self.remote_timeout = remote_timeout

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- put -------------------------------------------------------------------------
    async def put(self, read: ReadFn, size: int | None, name: str | None = None,
                  place: Placer | None = None, lease_duration: int | None = None,
                  replace: Replacer | None = None, me: str = "this node") -> PutResult:
        """Store a stream; `size` (if known) is checked against free space before anything is written.

        `place(storage index, share bytes)` says where the shares go: the node of each share and the
        holder of each share on another node (only for a known size); by default all stay here.  A holder
        that cannot begin its share (down, or refusing) is swapped for `replace(share, nodes that failed it)`,
        if given, before any byte is sent.  Every share's lease ends `lease_duration` seconds from now
        (default: the node's).  `me`: how the placement names this node."""
        key = new_key()
        si = storage_index(key)
        cipher = SegmentCipher(key)
        seg_size = self.segment_size
        placement, holders = [me] * erasure.N, {}
        if place is not None and size is not None:
            placement, holders = place(si, layout.share_bytes(size, seg_size))
        local = tuple(s for s in range(erasure.N) if s not in holders)
        expected = layout.share_bytes(size, seg_size) * len(local) if size is not None else None
        lease = int(time.time()) + leases.check_duration(lease_duration or self.lease_duration)
        upload = await self._run(self.store.begin_upload, si, local, expected)
        remote = {s: RemoteShareWriter(h, placement[s], si, s) for s, h in holders.items()}

        def encode_segment(index: int, plaintext: bytes) -> tuple[list[bytes], list[bytes]]:
            blocks = erasure.encode(cipher.encrypt(index, plaintext))
            return blocks, [block_hash(b) for b in blocks]

        async def collect(result: asyncio.Future) -> None:
            blocks, segment_hashes = await result
            hashes.append(segment_hashes)
            await writes.start(upload.put_blocks, len(hashes) - 1, {s: blocks[s] for s in local})
            for s in remote:
                await remote[s].add(blocks[s])

        loop, writes = asyncio.get_running_loop(), _OneWrite(self.pool)
        in_flight: deque[asyncio.Future] = deque()
        hashes: list[list[bytes]] = []  # per segment, the N block hashes
        total = 0
        try:
            await self._begin_remote(remote, placement, si, size, seg_size, lease, replace)
            index = 0
            while True:
                want = seg_size if size is None else layout.plaintext_length(size, seg_size, index)
                plaintext = await _read_full(read, want)
                total += len(plaintext)
                if size is not None and len(plaintext) < want:
                    raise BadRequest(f"the upload ended after {total} of {size} bytes", hint="send the whole file")
                if index > 0 and not plaintext:
                    break  # a stream of unknown size ended on a segment boundary
                in_flight.append(loop.run_in_executor(self.pool, encode_segment, index, plaintext))
                index += 1
                if len(in_flight) >= self.depth:
                    await collect(in_flight.popleft())
                if size is not None and index == layout.segment_count(size, seg_size):
                    break
                if size is None and len(plaintext) < seg_size:
                    break
            while in_flight:
                await collect(in_flight.popleft())
            await asyncio.gather(*writes.pending)
            if size is not None and await _read_full(read, 1):
                raise BadRequest(f"the upload is longer than the {size} bytes announced")
            count = len(hashes)
            share_hashes = [[seg[s] for seg in hashes] for s in range(erasure.N)]
            manifest = Manifest(
                size=total, segment_size=seg_size, k=erasure.K, m=erasure.M, segment_count=count,
                share_roots=tuple(root(h).hex() for h in share_hashes),
                # Commits to the whole ciphertext: the k data blocks of a segment are its padded ciphertext.
                ciphertext_hash=ciphertext_hash([h for seg in hashes for h in seg[:erasure.K]]),
            )
            encoded = manifest.encode()
            await gather_or_raise([r.commit(share_hashes[s], encoded) for s, r in remote.items()],
                                  [(r.node, s) for s, r in remote.items()])
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            await asyncio.gather(*in_flight, *writes.pending, return_exceptions=True)
            await asyncio.gather(*(r.undo() for r in remote.values()))
            await self._run(self.store.abort, upload)
            raise


        share_bytes = layout.share_bytes(total, seg_size)
        cap = Capability(key=key, manifest_hash=manifest.digest(), size=total)
        metas = [ShareMeta(s, count, share_bytes, lease, self.node_key, tuple(share_hashes[s])) for s in local]
        record = {"name": name or "", "size": total, "capability": str(cap), "storage_index": si.hex(),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "placement": placement,
                  "lease_expiry": lease, "leases": [lease] * erasure.N}
        try:
            await self._run(self.store.publish, upload, metas, encoded, record)
        except BaseException:
            await asyncio.gather(*(r.undo() for r in remote.values()))
            await self._run(self.store.abort, upload)
            raise
        return PutResult(capability=str(cap), size=total, segments=count, stored_bytes=share_bytes * erasure.N,
                         placement=placement, lease_expiry=lease, me=me)

    async def _begin_remote(self, remote: dict[int, RemoteShareWriter], placement: list[str], si: bytes,
                            size: int | None, seg_size: int, lease: int, replace: Replacer | None) -> None:
        """Begin every remote share; a holder that fails is replaced (at most REPLACEMENTS tries per share)."""
        shares = list(remote)
        results = await asyncio.gather(*(remote[s].begin(size, seg_size, lease) for s in shares),
                                       return_exceptions=True)
        failed = {s: r for s, r in zip(shares, results) if isinstance(r, BaseException)}
        given_up: list[tuple[str, int, BaseException]] = []
        for share, err in failed.items():
            tried = {placement[share]}
            while isinstance(err, PeerError) and replace is not None and len(tried) <= REPLACEMENTS:
                log.warning("share %d: node %s could not take it (%s); choosing another", share,
                            placement[share][:12], err)
                alternative = await replace(share, tried)
                if alternative is None:
                    break
                node, holder = alternative
                tried.add(node)
                writer = RemoteShareWriter(holder, node, si, share)
                try:
                    await writer.begin(size, seg_size, lease)
                except PeerError as again:
                    err = again
                    continue
                remote[share], placement[share], err = writer, node, None
                break
            if err is not None:
                given_up.append((placement[share], share, err))
        if given_up:
            if any(not isinstance(err, PeerError) for _, _, err in given_up):
                raise next(err for _, _, err in given_up if not isinstance(err, PeerError))
            message, hint, refusals = summarise_refusals(given_up)
            raise PeerError(message, hint=hint, nodes=sorted({n for n, _, _ in given_up}), refusals=refusals)

    # --- leases ----------------------------------------------------------------------
    async def renew(self, cap: Capability, duration: int, holders: Mapping[int, Holder] | None = None,
                    names: list[str] | None = None, me: str = "this node") -> dict[str, Any]:
        """Extend every share's lease to now + `duration` (never shortening one): here, and on each holder in
        `holders` (the shares on other nodes; `names` their node ids).  A holder that does not answer, or
        answers wrong, keeps its share's lease as it was and is named in `not_renewed`.  `extended` says,
        per share renewed, how many bytes are held how many seconds longer (what a renewal is paid for)."""
        si = cap.storage_index
        record = await self._run(self.store.file_record, si)
        if record is None or record.get("capability") != str(cap):
            raise NotFound("this node uploaded no file with that capability",
                           hint="renew a file from the node that stored it; `xsc store ls` lists them")
        manifest = await self._run(self.manifest, cap)
        share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
        holders = dict(holders or {})
        names = list(names or [me] * erasure.N)
        now = int(time.time())
        target = now + leases.check_duration(duration)

        async def one(share: int, holder: Holder) -> dict:
            try:
                answer = await asyncio.wait_for(holder.renew(si, share, target), self.remote_timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no answer within {self.remote_timeout:g} s") from None
            if answer["lease_expiry"] < target:
                raise IntegrityError(f"it answered a lease ending at {answer['lease_expiry']}, before {target}")
            return answer

        results = await asyncio.gather(*(one(s, h) for s, h in holders.items()), return_exceptions=True)
        answers = {s: r for s, r in zip(holders, results) if not isinstance(r, BaseException)}
        failures = {s: f"share {s}: {r}" for s, r in zip(holders, results) if isinstance(r, BaseException)}
        local = tuple(s for s in range(erasure.N) if s not in holders)
        done = await self._run(self.store.renew, si, target, local,
                               {s: a["lease_expiry"] for s, a in answers.items()})
        failures.update({s: f"share {s}: not held here any more (repair the file)" for s in local if s not in done})
        changes = {**{s: (a["previous"], a["lease_expiry"]) for s, a in answers.items()}, **done}
        for s, why in failures.items():
            log.warning("lease of share %d of %s not renewed on node %s: %s", s, si.hex()[:16], names[s][:12], why)
        not_renewed: dict[str, str] = {}
        for s in sorted(failures):
            not_renewed[names[s]] = "; ".join(filter(None, (not_renewed.get(names[s]), failures[s])))
        record = await self._run(self.store.file_record, si) or record
        return {
            "capability": str(cap), "requested": target, "lease_expiry": record.get("lease_expiry"),
            "renewed": [{"share": s, "node": names[s], "lease_expiry": changes[s][1]} for s in sorted(changes)],
            "not_renewed": not_renewed,
            "extended": [{"share": s, "node": names[s], "bytes": share_bytes, "seconds": seconds}
                         for s in sorted(changes)
                         if (seconds := leases.extension_seconds(changes[s][0], changes[s][1], now)) > 0],
        }

    # --- reading helpers -------------------------------------------------------------
    def manifest(self, cap: Capability, fetched: bytes | None = None) -> Manifest:
        """The file's manifest, checked against the capability (`fetched`: as another node sent it)."""
        return self._load(cap, frozenset(range(erasure.N)), fetched)[0]

    def _load(self, cap: Capability, remote: frozenset[int] = frozenset(), fetched: bytes | None = None
              ) -> tuple[Manifest, dict[int, ShareMeta], dict[int, str]]:
        """The verified manifest, the local shares whose metadata matches it, and why the others do not
        (shares in `remote` are on other nodes: see `_remote_metas`).  `fetched`: the manifest as another node
        sent it, for a file this node holds no manifest of (checked against the capability all the same)."""
        si = cap.storage_index
        raw = self.store.manifest(si) or fetched
        if raw is None:
            raise NotFound("this node holds no file with that capability",
                           hint="check the capability; `xsc store ls` lists the files this node uploaded")
        manifest = decode_manifest(raw, cap.manifest_hash)
        if manifest.size != cap.size:
            raise IntegrityError("the manifest's size does not match the capability's")
        good: dict[int, ShareMeta] = {}
        bad: dict[int, str] = {}
        damaged = self.store.damaged(si)
        for s in range(erasure.N):
            if s in remote:
                continue
            meta = self.store.share_meta(si, s)
            if meta is None:
                bad[s] = "missing"
            elif not _roots_to(meta.block_hashes, manifest.share_root(s)):
                bad[s] = "corrupt: its block hashes do not match the manifest"
            else:
                good[s] = meta
                if s in damaged:
                    bad[s] = f"corrupt: {damaged[s]}"
        return manifest, good, bad

    def _fetch_segment(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                       index: int, bad: list[tuple[int, int]], fetched: Mapping[int, bytes | None] | None = None
                       ) -> bytes:
        """K verified blocks of one segment, decoded: the padded ciphertext cut to its length.

        Blocks of shares in `fetched` came from other nodes; the others are read here."""
        blocks: dict[int, bytes] = {}
        for s in order:
            block = fetched[s] if fetched and s in fetched else self.store.get_block(si, s, index)
            if block is None or block_hash(block) != metas[s].block_hashes[index]:
                bad.append((s, index))
                continue
            blocks[s] = block
            if len(blocks) == erasure.K:
                break
        if len(blocks) < erasure.K:
            broken = sorted({s for s, i in bad if i == index} | (set(range(erasure.N)) - set(order)))
            raise NotEnoughShares(
                f"segment {index} cannot be rebuilt: shares {broken} are missing or corrupt "
                f"and {erasure.K} intact shares are needed",
                hint="the file is damaged beyond repair on this node", missing_shares=broken, segment=index)
        plain_len = layout.plaintext_length(manifest.size, manifest.segment_size, index)
        return erasure.decode(blocks, layout.ciphertext_length(plain_len))

    async def _remote_metas(self, cap: Capability, manifest: Manifest, holders: Mapping[int, Holder],
                            names: list[str]) -> tuple[dict[int, ShareMeta], dict[int, str]]:
        """Metadata of the shares on other nodes, each checked against the manifest's share root."""
        si = cap.storage_index

        async def one(share: int, holder: Holder) -> ShareMeta:
            try:
                m = await asyncio.wait_for(holder.meta(si, share), self.remote_timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"no answer within {self.remote_timeout:g} s") from None
            if root(list(m["block_hashes"])) != manifest.share_root(share):
                raise IntegrityError("its block hashes do not match the manifest")
            return ShareMeta(share, m["segment_count"], m["stored_bytes"], m["lease_expiry"], b"",
                             tuple(m["block_hashes"]))

        results = await asyncio.gather(*(one(s, h) for s, h in holders.items()), return_exceptions=True)
        metas: dict[int, ShareMeta] = {}
        bad: dict[int, str] = {}
        for share, result in zip(holders, results):
            if isinstance(result, BaseException):
                bad[share] = f"unreadable on node {names[share][:12]}…: {result}"
            else:
                metas[share] = result
        return metas, bad

    async def _usable(self, cap: Capability, holders: Mapping[int, Holder], names: list[str],
                      rank: Mapping[int, float], fetched: bytes | None = None
                      ) -> tuple[Manifest, dict[int, ShareMeta], list[int], dict[int, str]]:
        manifest, metas, bad = await self._run(self._load, cap, frozenset(holders), fetched)
        if holders:
            remote_metas, remote_bad = await self._remote_metas(cap, manifest, holders, names)
            metas.update(remote_metas)
            bad.update(remote_bad)
        # Data shares first (decoding is then a copy), then the fastest holders; known-damaged shares last.
        order = sorted(metas, key=lambda s: (s in bad, s >= erasure.K, rank.get(s, 0.0), s))
        if len(metas) < erasure.K:
            missing = sorted(bad)
            raise NotEnoughShares(
                f"only {len(metas)} of {erasure.N} shares are intact ({erasure.K} are needed): "
                + ", ".join(f"share {s} {bad[s]}" for s in missing),
                hint="the file cannot be rebuilt now; if nodes are down, retry when they are back",
                missing_shares=missing)
        return manifest, metas, order, bad

    # --- get -------------------------------------------------------------------------
    async def open(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                   names: list[str] | None = None, rank: Mapping[int, float] | None = None,
                   byte_range: tuple[int, int] | None = None, manifest: bytes | None = None
                   ) -> tuple[int, AsyncIterator[bytes]]:
        """Check the file can be read, then return its size and an iterator over its plaintext.

        `holders` gives the holder of each share on another node (`names` their node ids, `rank`
        lower-is-faster hints); the other shares are read here.  With `byte_range` (first and last
        byte, inclusive, within the file: see ranges.parse_range) only the segments covering it are
        fetched, decoded and decrypted, and the iterator yields just those bytes.  `manifest`: as another node
        sent it, when this node holds none (see `_load`)."""
        holders = dict(holders or {})
        names = names or ["this node"] * erasure.N
        manifest, metas, order, _ = await self._usable(cap, holders, names, rank or {}, manifest)
        cipher = SegmentCipher(cap.key)
        si = cap.storage_index
        bad: list[tuple[int, int]] = []
        if byte_range is None:
            segments, skip, length = range(manifest.segment_count), 0, manifest.size
        else:
            first, last = byte_range
            if not 0 <= first <= last < manifest.size:
                raise RangeNotSatisfiable(f"bytes {first}-{last} are not within the file's {manifest.size} bytes")
            seg = manifest.segment_size
            segments, skip, length = range(first // seg, last // seg + 1), first % seg, last - first + 1
        readers = {s: RemoteShareReader(h, si, s, manifest, self.remote_timeout, segments)
                   for s, h in holders.items() if s in metas}
        segment = self._segment_source(si, manifest, metas, order, readers, names, bad, cipher.decrypt)

        async def stream() -> AsyncIterator[bytes]:
            in_flight: deque[asyncio.Future] = deque()
            next_index, end = segments.start, segments.stop
            cut, left = skip, length
            try:
                while next_index < end or in_flight:
                    while next_index < end and len(in_flight) < self.depth:
                        in_flight.append(asyncio.ensure_future(segment(next_index)))
                        next_index += 1
                    data = await in_flight.popleft()
                    if cut or len(data) > left:
                        data = data[cut:cut + left]
                        cut = 0
                    left -= len(data)
                    yield data
            finally:
                for fut in in_flight:
                    fut.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
                await asyncio.gather(*(r.close() for r in readers.values()))
                if bad:
                    await self._run(self._record_damage, si, bad)

        return manifest.size, stream()

    def _segment_source(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                        readers: dict[int, "RemoteShareReader"], names: list[str], bad: list[tuple[int, int]],
                        finish: Callable[[int, bytes], bytes] | None = None) -> Callable[[int], Awaitable[bytes]]:
        """An async function giving one segment's ciphertext (or `finish(index, ciphertext)`, run in the pool).

        Remote blocks are fetched first, local ones read in the pool; when a holder fails or a block is
        bad, the next share in `order` is tried as well."""
        loop = asyncio.get_running_loop()

        def work(index: int, usable: list[int], fetched: dict[int, bytes | None]) -> bytes:
            data = self._fetch_segment(si, manifest, metas, usable, index, bad, fetched)
            return finish(index, data) if finish else data

        async def segment(index: int) -> bytes:
            want = erasure.K
            while True:
                alive = [s for s in order if s not in readers or readers[s].failed is None]
                chosen = alive[:want]
                remote = [s for s in chosen if s in readers]
                fetched = dict(zip(remote, await asyncio.gather(*(readers[s].get(index) for s in remote))))
                usable = [s for s in chosen if fetched.get(s, b"") is not None]
                try:
                    return await loop.run_in_executor(self.pool, work, index, usable, fetched)
                except NotEnoughShares:
                    if want < len(alive):
                        want += 1
                        continue
                    down = {s: r.failed for s, r in readers.items() if r.failed is not None}
                    if not down:
                        raise
                    raise NotEnoughShares(
                        f"segment {index} cannot be rebuilt: " + _unreachable(down, names)
                        + f"; {erasure.K} intact shares are needed",
                        hint="retry when the nodes are back", segment=index,
                        unreachable_nodes=sorted({names[s] for s in down})) from None

        return segment

    def _record_damage(self, si: bytes, bad: list[tuple[int, int]]) -> None:
        by_share: dict[int, list[int]] = {}
        for s, i in bad:
            by_share.setdefault(s, []).append(i)
        for s, segments in by_share.items():
            log.warning("share %d of %s: bad or missing blocks %s; reported for repair", s, si.hex()[:16], segments)
            self.store.mark_damaged(si, s, f"bad or missing blocks in segments {sorted(segments)[:20]}")

    # --- check, verify, repair ------------------------------------------------------
    async def check(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                    names: list[str] | None = None, manifest: bytes | None = None) -> list[ShareReport]:
        """Which shares are present and not known to be damaged: metadata only (see verify).  Shares in
        `holders` are on other nodes: their metadata is checked against the manifest (an unreachable
        holder counts as missing)."""
        holders = dict(holders or {})
        names = list(names or ["this node"] * erasure.N)
        fetched = manifest
        manifest, metas, bad = await self._run(self._load, cap, frozenset(holders), fetched)
        _, remote_bad = await self._remote_metas(cap, manifest, holders, names)
        damaged = await self._run(self.store.damaged, cap.storage_index)  # reported by audits and scrubbers
        bad.update({s: f"corrupt: {damaged[s]}" for s in holders if s in damaged})
        bad.update(remote_bad)
        return [ShareReport(s, "ok" if s not in bad else "corrupt" if bad[s].startswith("corrupt")
                            or "do not match" in bad[s] else "missing", bad.get(s, "")) for s in range(erasure.N)]

    def _verify_here(self, cap: Capability, remote: frozenset[int] = frozenset(),
                     fetched: bytes | None = None) -> list[ShareReport]:
        """Read and hash every block of every share here (not those in `remote`); record what is bad."""
        manifest, metas, bad = self._load(cap, remote, fetched)
        si = cap.storage_index
        reports = []
        for s in range(erasure.N):
            if s in remote:
                continue
            if s not in metas:
                reports.append(ShareReport(s, "missing" if bad[s] == "missing" else "corrupt", bad[s]))
                continue
            wrong = [i for i in range(manifest.segment_count)
                     if (b := self.store.get_block(si, s, i)) is None or block_hash(b) != metas[s].block_hashes[i]]
            if wrong:
                self.store.mark_damaged(si, s, f"bad or missing blocks in segments {wrong[:20]}")
                reports.append(ShareReport(s, "corrupt", f"{len(wrong)} bad block(s)", wrong))
            else:
                reports.append(ShareReport(s, "ok"))
        return reports

    async def verify(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                     names: list[str] | None = None, manifest: bytes | None = None) -> list[ShareReport]:
        """Read and hash every block of every share, those on other nodes (`holders`) downloaded; record
        what is bad."""
        holders = dict(holders or {})
        names = list(names or ["this node"] * erasure.N)
        si = cap.storage_index
        fetched = manifest
        reports = {r.share: r for r in await self._run(self._verify_here, cap, frozenset(holders), fetched)}
        manifest, _, _ = await self._run(self._load, cap, frozenset(holders), fetched)
        metas, bad = await self._remote_metas(cap, manifest, holders, names)
        for s in holders:
            if s in bad:
                reports[s] = ShareReport(s, "corrupt" if "do not match" in bad[s] else "missing", bad[s])
                continue
            reader = RemoteShareReader(holders[s], si, s, manifest, self.remote_timeout)
            try:
                wrong = [i for i in range(manifest.segment_count)
                         if (b := await reader.get(i)) is None or block_hash(b) != metas[s].block_hashes[i]]
            finally:
                await reader.close()
            if reader.failed is not None:
                reports[s] = ShareReport(s, "missing", f"unreadable on node {names[s][:12]}…: {reader.failed}")
            elif wrong:
                await self._run(self.store.mark_damaged, si, s, f"bad blocks in segments {wrong[:20]}")
                reports[s] = ShareReport(s, "corrupt", f"{len(wrong)} bad block(s) on node {names[s][:12]}…", wrong)
            else:
                reports[s] = ShareReport(s, "ok")
        return [reports[s] for s in range(erasure.N)]

    async def repair(self, cap: Capability, holders: Mapping[int, Holder] | None = None,
                     names: list[str] | None = None, relocate: Relocator | None = None,
                     me: str = "this node", fetched: bytes | None = None) -> dict:
        """Rebuild missing and corrupt shares from any K good ones; never makes things worse.

        Local shares are rebuilt here (corrupt blocks rewritten in place).  A broken share on another
        node goes to the node `relocate(share, nodes already used, nodes that failed it)` names, or here
        if it names none; the file's placement record follows (`fetched`: another node's file's manifest)."""
        holders = dict(holders or {})
        names = list(names or [me] * erasure.N)
        si = cap.storage_index
        local_reports = await self._run(self._verify_here, cap, frozenset(holders), fetched)
        manifest, local_metas, _ = await self._run(self._load, cap, frozenset(holders), fetched)
        remote_metas, remote_bad = await self._remote_metas(cap, manifest, holders, names)
        damaged = await self._run(self.store.damaged, si)
        for s in holders:
            if s in damaged and s not in remote_bad:
                remote_bad[s] = f"corrupt: {damaged[s]}"
        broken_local = {r.share: r for r in local_reports if r.status != "ok"}
        if not broken_local and not remote_bad:
            return {"repaired": [], "placement": names}
        good = {**{s: m for s, m in local_metas.items() if s not in broken_local},
                **{s: m for s, m in remote_metas.items() if s not in remote_bad}}
        if len(good) < erasure.K:
            raise NotEnoughShares(f"only {len(good)} of {erasure.N} shares are intact: the file cannot be repaired",
                                  hint="retry when the nodes holding its shares are back",
                                  missing_shares=sorted(set(broken_local) | set(remote_bad)))
        rewrite_here = {s: r.bad_blocks for s, r in broken_local.items() if s in local_metas}
        rebuild_here = [s for s in broken_local if s not in local_metas]
        new_names = list(names)
        moved: dict[int, RemoteShareWriter] = {}
        for s in sorted(remote_bad):
            destination = await relocate(s, set(new_names), set()) if relocate else None
            if destination is None:
                rebuild_here.append(s)
                new_names[s] = me
            else:
                new_names[s] = destination[0]
                moved[s] = RemoteShareWriter(destination[1], destination[0], si, s)
        share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
        lease = max(m.lease_expiry for m in good.values())
        readers = {s: RemoteShareReader(holders[s], si, s, manifest, self.remote_timeout) for s in good if s in holders}
        order = sorted(good, key=lambda s: (s >= erasure.K, s in readers, s))
        read = self._segment_source(si, manifest, good, order, readers, names, [])
        rebuilt: dict[int, list[bytes]] = {s: [] for s in (*rebuild_here, *moved)}
        upload = None
        try:
            if rebuild_here:
                upload = await self._run(self.store.begin_upload, si, tuple(rebuild_here),
                                         share_bytes * len(rebuild_here))
            # A destination that cannot take its share (down, or refusing) is swapped for another one.
            replace = (lambda share, failed: relocate(share, set(new_names) | failed, failed)) if relocate else None
            await self._begin_remote(moved, new_names, si, manifest.size, manifest.segment_size, lease, replace)
            for index in range(manifest.segment_count):
                fix = [s for s, segments in rewrite_here.items() if index in segments]
                if not rebuilt and not fix:
                    continue
                blocks = await self._run(erasure.encode, await read(index))
                for s in rebuilt:
                    rebuilt[s].append(block_hash(blocks[s]))
                if upload is not None:
                    await self._run(upload.put_blocks, index, {s: blocks[s] for s in rebuild_here})
                if fix:
                    await self._run(self._rewrite_blocks, si, index, {s: blocks[s] for s in fix}, local_metas)
                for s, share in moved.items():
                    await share.add(blocks[s])
            for s, hashes in rebuilt.items():
                if root(hashes) != manifest.share_root(s):
                    raise IntegrityError(f"rebuilt share {s} does not match the manifest")
            encoded = manifest.encode()
            await gather_or_raise([r.commit(rebuilt[s], encoded) for s, r in moved.items()],
                                  [(r.node, s) for s, r in moved.items()])
            if upload is not None:
                metas = [ShareMeta(s, manifest.segment_count, share_bytes, lease, self.node_key, tuple(rebuilt[s]))
                         for s in rebuild_here]
                await self._run(self.store.publish, upload, metas, encoded)  # another node's file: its manifest too
        except BaseException:
            await asyncio.gather(*(r.undo() for r in moved.values()))
            if upload is not None:
                await self._run(self.store.abort, upload)
            raise
        finally:
            await asyncio.gather(*(r.close() for r in readers.values()))
        for s in (*rewrite_here, *remote_bad):
            await self._run(self.store.clear_damage, si, s)
        if new_names != names:
            await self._run(self.store.set_placement, si, new_names)
        # A corrupt share on a holder that still answers is dropped there (best effort: a lease ends it too).
        stale = [holders[s].delete(si, s) for s in remote_bad if s in remote_metas and new_names[s] != names[s]]
        await asyncio.gather(*stale, return_exceptions=True)
        return {"repaired": sorted(set(broken_local) | set(remote_bad)), "placement": new_names, "lease_expiry": lease}

    def _rewrite_blocks(self, si: bytes, index: int, blocks: dict[int, bytes], metas: dict[int, ShareMeta]) -> None:
        for s, block in blocks.items():
            if block_hash(block) != metas[s].block_hashes[index]:
                raise IntegrityError(f"rebuilt block {index} of share {s} does not match its hash")
        self.store.put_repaired_blocks(si, index, blocks)


def _unreachable(down: dict[int, BaseException], names: dict[int, str]) -> str:
    """Unreachable shares grouped by node, each reason said once: "shares 1, 2 on node ab12… (connection refused)"."""
    by_node: dict[tuple[str, str], list[int]] = {}
    for s, err in sorted(down.items()):
        reason = getattr(err, "details", {}).get("reason") or str(err)
        by_node.setdefault((names[s], reason), []).append(s)
    return "unreachable: " + "; ".join(
        f"{'shares' if len(shares) > 1 else 'share'} {', '.join(map(str, shares))} on node {node[:12]}… ({reason})"
        for (node, reason), shares in by_node.items())

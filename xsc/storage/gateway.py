"""The gateway: streaming put and get, check, verify and repair over a share store.

Segments are processed in a thread pool (AES-GCM, zfec and SHA-256 release the
GIL, and so does LevelDB I/O), a bounded number at a time, so both cores work
and memory stays bounded whatever the file size: at most `depth` segments are
in flight.  Get yields plaintext in order; put writes blocks as segments
complete and publishes the shares once all are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import BadRequest, IntegrityError, NotEnoughShares, NotFound
from . import erasure, layout
from .capability import Capability
from .crypto import SegmentCipher, new_key, storage_index
from .manifest import Manifest, ciphertext_hash, decode_manifest
from .merkle import block_hash, root
from .share_store import ShareMeta, ShareStore

log = logging.getLogger(__name__)

ReadFn = Callable[[int], Awaitable[bytes]]


@dataclass
class PutResult:
    capability: str
    size: int
    segments: int
    stored_bytes: int
    shares: int = erasure.N
    nodes: int = 1
    placement_note: str = (
        "all 6 shares are on this one node: the file survives the loss of any 2 shares, "
        "but not the loss of the node"
    )


@dataclass
class ShareReport:
    share: int
    status: str  # ok | missing | corrupt
    detail: str = ""
    bad_blocks: list[int] = field(default_factory=list)


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


class Gateway:
    def __init__(self, store: ShareStore, pool: Executor, *, segment_size: int, lease_duration: int,
                 node_key: bytes, depth: int = 6) -> None:
        self.store = store
        self.pool = pool
        self.segment_size = segment_size
        self.lease_duration = lease_duration
        self.node_key = node_key
        self.depth = depth

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- put -------------------------------------------------------------------------
    async def put(self, read: ReadFn, size: int | None, name: str | None = None) -> PutResult:
        """Store a stream; `size` (if known) is checked against free space before anything is written."""
        key = new_key()
        si = storage_index(key)
        cipher = SegmentCipher(key)
        seg_size = self.segment_size
        expected = layout.stored_bytes(size, seg_size) if size is not None else None
        upload = await self._run(self.store.begin_upload, si, tuple(range(erasure.N)), expected)

        def encode_segment(index: int, plaintext: bytes) -> list[bytes]:
            blocks = erasure.encode(cipher.encrypt(index, plaintext))
            upload.put_blocks(index, dict(enumerate(blocks)))
            return [block_hash(b) for b in blocks]

        loop = asyncio.get_running_loop()
        in_flight: deque[asyncio.Future] = deque()
        hashes: list[list[bytes]] = []  # per segment, the N block hashes
        total = 0
        try:
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
                    hashes.append(await in_flight.popleft())
                if size is not None and index == layout.segment_count(size, seg_size):
                    break
                if size is None and len(plaintext) < seg_size:
                    break
            while in_flight:
                hashes.append(await in_flight.popleft())
            if size is not None and await _read_full(read, 1):
                raise BadRequest(f"the upload is longer than the {size} bytes announced")
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            await self._run(self.store.abort, upload)
            raise

        count = len(hashes)
        share_hashes = [[seg[s] for seg in hashes] for s in range(erasure.N)]
        share_bytes = layout.share_bytes(total, seg_size)
        manifest = Manifest(
            size=total, segment_size=seg_size, k=erasure.K, m=erasure.M, segment_count=count,
            share_roots=tuple(root(h).hex() for h in share_hashes),
            # Commits to the whole ciphertext: the k data blocks of a segment are its padded ciphertext.
            ciphertext_hash=ciphertext_hash([h for seg in hashes for h in seg[:erasure.K]]),
        )
        encoded = manifest.encode()
        cap = Capability(key=key, manifest_hash=manifest.digest(), size=total)
        lease = int(time.time()) + self.lease_duration
        metas = [ShareMeta(s, count, share_bytes, lease, self.node_key, tuple(share_hashes[s]))
                 for s in range(erasure.N)]
        record = {"name": name or "", "size": total, "capability": str(cap), "storage_index": si.hex(),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        await self._run(self.store.publish, upload, metas, encoded, record)
        return PutResult(capability=str(cap), size=total, segments=count, stored_bytes=share_bytes * erasure.N)

    # --- reading helpers -------------------------------------------------------------
    def _load(self, cap: Capability) -> tuple[Manifest, dict[int, ShareMeta], dict[int, str]]:
        """The verified manifest, the shares whose metadata matches it, and why the others do not."""
        si = cap.storage_index
        raw = self.store.manifest(si)
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
            meta = self.store.share_meta(si, s)
            if meta is None:
                bad[s] = "missing"
            elif root(list(meta.block_hashes)) != manifest.share_root(s):
                bad[s] = "corrupt: its block hashes do not match the manifest"
            else:
                good[s] = meta
                if s in damaged:
                    bad[s] = f"corrupt: {damaged[s]}"
        return manifest, good, bad

    def _fetch_segment(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                       index: int, bad: list[tuple[int, int]]) -> bytes:
        """K verified blocks of one segment, decoded: the padded ciphertext cut to its length."""
        blocks: dict[int, bytes] = {}
        for s in order:
            block = self.store.get_block(si, s, index)
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

    def _usable(self, cap: Capability) -> tuple[Manifest, dict[int, ShareMeta], list[int], dict[int, str]]:
        manifest, metas, bad = self._load(cap)
        # Data shares first (decoding is then a copy); known-damaged shares last.
        order = sorted(metas, key=lambda s: (s in bad, s >= erasure.K, s))
        if len(metas) < erasure.K:
            missing = sorted(bad)
            raise NotEnoughShares(
                f"only {len(metas)} of {erasure.N} shares are intact ({erasure.K} are needed): "
                + ", ".join(f"share {s} {bad[s]}" for s in missing),
                hint="the file cannot be rebuilt on this node", missing_shares=missing)
        return manifest, metas, order, bad

    # --- get -------------------------------------------------------------------------
    async def open(self, cap: Capability) -> tuple[int, AsyncIterator[bytes]]:
        """Check the file can be read, then return its size and an iterator over its plaintext."""
        manifest, metas, order, _ = await self._run(self._usable, cap)
        cipher = SegmentCipher(cap.key)
        si = cap.storage_index
        bad: list[tuple[int, int]] = []

        def read_segment(index: int) -> bytes:
            return cipher.decrypt(index, self._fetch_segment(si, manifest, metas, order, index, bad))

        async def stream() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            in_flight: deque[asyncio.Future] = deque()
            next_index = 0
            try:
                while next_index < manifest.segment_count or in_flight:
                    while next_index < manifest.segment_count and len(in_flight) < self.depth:
                        in_flight.append(loop.run_in_executor(self.pool, read_segment, next_index))
                        next_index += 1
                    yield await in_flight.popleft()
            finally:
                for fut in in_flight:
                    fut.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
                if bad:
                    await self._run(self._record_damage, si, bad)

        return manifest.size, stream()

    def _record_damage(self, si: bytes, bad: list[tuple[int, int]]) -> None:
        by_share: dict[int, list[int]] = {}
        for s, i in bad:
            by_share.setdefault(s, []).append(i)
        for s, segments in by_share.items():
            log.warning("share %d of %s: bad or missing blocks %s; reported for repair", s, si.hex()[:16], segments)
            self.store.mark_damaged(si, s, f"bad or missing blocks in segments {sorted(segments)[:20]}")

    # --- check, verify, repair ------------------------------------------------------
    def check(self, cap: Capability) -> list[ShareReport]:
        """Which shares are present and not known to be damaged (reads metadata only)."""
        _, metas, bad = self._load(cap)
        return [ShareReport(s, "missing" if bad.get(s) == "missing" else "corrupt" if s in bad else "ok",
                            bad.get(s, "")) for s in range(erasure.N)]

    def verify(self, cap: Capability) -> list[ShareReport]:
        """Read and hash every block of every share; record what is bad."""
        manifest, metas, bad = self._load(cap)
        si = cap.storage_index
        reports = []
        for s in range(erasure.N):
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

    def repair(self, cap: Capability) -> dict:
        """Rebuild missing and corrupt shares from any K good ones; never makes things worse."""
        reports = self.verify(cap)
        broken = {r.share: r for r in reports if r.status != "ok"}
        if not broken:
            return {"repaired": [], "shares": [r.__dict__ for r in reports]}
        manifest, metas, _ = self._load(cap)
        good = {s: m for s, m in metas.items() if s not in broken}
        si = cap.storage_index
        order = sorted(good, key=lambda s: (s >= erasure.K, s))
        missing = tuple(s for s in broken if s not in metas)
        damaged = {s: r.bad_blocks for s, r in broken.items() if s in metas}
        upload = self.store.begin_upload(si, missing, layout.share_bytes(manifest.size, manifest.segment_size)
                                         * len(missing)) if missing else None
        rebuilt: dict[int, list[bytes]] = {s: [] for s in missing}
        try:
            for index in range(manifest.segment_count):
                need_fix = [s for s, segs in damaged.items() if index in segs]
                if not missing and not need_fix:
                    continue
                ciphertext = self._fetch_segment(si, manifest, good, order, index, [])
                blocks = erasure.encode(ciphertext)
                if upload is not None:
                    upload.put_blocks(index, {s: blocks[s] for s in missing})
                    for s in missing:
                        rebuilt[s].append(block_hash(blocks[s]))
                if need_fix:
                    self._rewrite_blocks(si, index, {s: blocks[s] for s in need_fix}, metas)
            if upload is not None:
                share_bytes = layout.share_bytes(manifest.size, manifest.segment_size)
                lease = max(m.lease_expiry for m in good.values())
                new_metas = []
                for s in missing:
                    if root(rebuilt[s]) != manifest.share_root(s):
                        raise IntegrityError(f"rebuilt share {s} does not match the manifest")
                    new_metas.append(ShareMeta(s, manifest.segment_count, share_bytes, lease, self.node_key,
                                               tuple(rebuilt[s])))
                self.store.publish(upload, new_metas)
        except BaseException:
            if upload is not None:
                self.store.abort(upload)
            raise
        for s in damaged:
            self.store.clear_damage(si, s)
        return {"repaired": sorted(broken), "shares": [r.__dict__ for r in self.verify(cap)]}

    def _rewrite_blocks(self, si: bytes, index: int, blocks: dict[int, bytes], metas: dict[int, ShareMeta]) -> None:
        for s, block in blocks.items():
            if block_hash(block) != metas[s].block_hashes[index]:
                raise IntegrityError(f"rebuilt block {index} of share {s} does not match its hash")
        self.store.put_repaired_blocks(si, index, blocks)

"""What every operation of the gateway shares: its settings and pool, the file's manifest and share metadata
checked against each other, segments read back from K verified shares, remote shares begun.

The operations are one module each: gateway_put (a put), gateway_get (a get, whole or ranged),
gateway_repair (check, verify and repair), gateway_leases (renewal); gateway.py puts them behind one `Gateway`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor

from ..errors import IntegrityError, InvalidCapability, NotEnoughShares, NotFound, PeerError, PeerUnreachable
from ..tasks import Workers
from .core import erasure, layout
from .core.capability import Capability
from .core.manifest import Manifest, decode_manifest
from .core.merkle import block_hash, root
from .core.placement import unreadable
from .remote import (SEND_AHEAD_LONG, SEND_BATCH, Holder, RemoteShareReader, RemoteShareWriter, standing,
                     summarise_refusals)
from .publisher import Publisher
from .put_budget import PutBudget
from .share_store import BlockReader, ShareMeta, ShareStore, Upload

log = logging.getLogger(__name__)

# (share, node -> how it failed the share) -> another holder for a share whose holder could not take it (None: give up)
Replacer = Callable[[int, dict], "Awaitable[tuple[str, Holder] | None]"]
# (share) -> (this node's name, a holder here) for a share no other node took for a standing reason
Keeper = Callable[[int], "tuple[str, Holder]"]
# (storage index, shares) -> the peers' uploads of those shares here aborted (holder.ShareHolder.take_over)
TakeOver = Callable[[bytes, tuple[int, ...]], Awaitable[None]]
REPLACEMENTS = 3  # other holders tried for a share whose chosen holder cannot take it

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


class GatewayCore:
    def __init__(self, store: ShareStore, pool: Executor, *, segment_size: int, lease_duration: int,
                 node_key: bytes, depth: int = 6, remote_timeout: float = 5.0,
                 publisher: Publisher | None = None, writer: Workers | None = None,
                 take_over: TakeOver | None = None) -> None:
        """`writer`: the thread a large put's block writes run on (gateway_put's docstring says why), else
        the pool.  `take_over`: the node's holder's, by which an upload of this node's own shares takes them from
        peers uploading them here (`begin_here`)."""
        self.store = store
        self.pool = pool
        self.writer = writer
        self.take_over = take_over
        self.publisher = publisher or Publisher(store, pool)  # publishes of this node's uploads: group commits
        self.segment_size = segment_size
        self.lease_duration = lease_duration
        self.node_key = node_key
        self.depth = depth
        # The segments all puts hold at once, each from before it is read until its blocks are written (put_budget.py).
        self.budget = PutBudget((depth + 1) * segment_size)
        # The blocks all puts hold for other nodes, added to their shares' writers and not yet answered: a put's
        # own most on the longest path (every share's batches in flight, and the next one filling), or two
        # segments' worth if that is more.
        self.sending = PutBudget(max((SEND_AHEAD_LONG + 1) * SEND_BATCH, 2 * segment_size // erasure.K)
                                 * (erasure.N - 1))
        self.remote_timeout = remote_timeout
        self.passing_on = 0  # gets that may be passed on by threads of their own (gateway_get); PASSED_ON_AT_ONCE most
        self.gets_open = 0  # gets opened and not yet closed (gateway_get.Plaintext): status
        self.tag_failures = 0  # segments of gets whose tag failed, read again with every block hashed: status
        self._counting = threading.Lock()  # the pool's threads count them
        # The puts under way, by storage index, with the writers of their shares on other nodes: the copies they
        # noted to delete (gateway_put `note_remote`) are theirs to place, not to release
        # (gateway_repair.release_strays), and their uploads are kept alive while they wait (`keep_alive`).
        self.putting: dict[bytes, dict[int, RemoteShareWriter]] = {}

    async def keep_alive(self) -> None:
        """Touch the uploads of the puts under way that nothing was sent to for remote.KEEP_ALIVE seconds (a put
        waiting for its budget or its client): their holders do not abort them as idle meanwhile.  A touch that fails
        is left to the put, whose next request finds the same."""
        now = time.monotonic()
        writers = [w for remote in list(self.putting.values()) for w in list(remote.values())]
        for outcome in await asyncio.gather(*(w.keep_alive(now) for w in writers), return_exceptions=True):
            if isinstance(outcome, Exception):
                log.info("could not keep an upload alive: %s", outcome)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def begin_here(self, si: bytes, shares: tuple[int, ...], expected_bytes: int | None) -> Upload:
        """An upload of this node's own shares of `si` here, once other nodes may know `si` (a repair's, a share kept
        home): begun, then the peers' uploads of those shares here taken back (`take_over`) before it writes a block.
        Begun first, so that a peer's begin from then on is refused (holder.py `_open`); the peers' uploads begun
        before would write under the same keys, and their aborts delete what it wrote."""
        upload = await self.run(self.store.begin_upload, si, shares, expected_bytes)
        if self.take_over is not None:
            try:
                await self.take_over(si, shares)
            except BaseException:
                await self.run(self.store.abort, upload)
                raise
        return upload

    def write(self, fn, *args) -> asyncio.Future:
        """fn(*args) on the writer (else in the pool): a put's block writes."""
        if self.writer is None:
            return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        return self.writer.run(fn, *args)

    def manifest(self, cap: Capability, fetched: bytes | None = None) -> Manifest:
        """The file's manifest, checked against the capability (`fetched`: as another node sent it)."""
        return self.load(cap, frozenset(range(erasure.N)), fetched)[0]

    async def start_remote(self, remote: dict[int, RemoteShareWriter], placement: list[str],
                           replace: Replacer | None, start: Callable[[RemoteShareWriter], Awaitable[None]],
                           keep: Keeper | None = None) -> list[tuple[str, int, BaseException]]:
        """Start every remote share (`start(writer)`: begin its upload, or place it whole); a holder that fails is
        replaced (at most REPLACEMENTS tries per share).  With `keep`, shares that no holder took only because of
        their holders' standing decisions about this node (`remote.standing`: a quarantine, terms, no room) or
        because they did not answer (gone before the probes tell: once they do, the market offers this node only
        and the shares stay here all the same) are kept here instead, started on `keep(share)`'s holder; those
        shares' refusals are answered (the put says why).  Any other refusal fails every share."""
        shares = list(remote)
        results = await asyncio.gather(*(start(remote[s]) for s in shares), return_exceptions=True)
        failed = {s: r for s, r in zip(shares, results) if isinstance(r, BaseException)}
        given_up: list[tuple[str, int, BaseException]] = []
        for share, err in failed.items():
            tried: dict[str, BaseException] = {placement[share]: err}  # node -> how it failed the share
            while isinstance(err, PeerError) and replace is not None and len(tried) <= REPLACEMENTS:
                log.warning("share %d: node %s could not take it (%s); choosing another", share,
                            placement[share], err)
                alternative = await replace(share, tried)
                if alternative is None:
                    break
                node, holder = alternative
                writer = remote[share].to(holder, node)
                try:
                    await start(writer)
                except PeerError as again:
                    err = tried[node] = again
                    continue
                remote[share], placement[share], err = writer, node, None
                break
            if err is not None:
                given_up.append((placement[share], share, err))
        if given_up and keep is not None and all(standing(err) or isinstance(err, PeerUnreachable)
                                                 for _, _, err in given_up):
            return await self._keep_here(remote, placement, start, keep, given_up)
        if given_up:
            if any(not isinstance(err, PeerError) for _, _, err in given_up):
                raise next(err for _, _, err in given_up if not isinstance(err, PeerError))
            message, hint, refusals = summarise_refusals(given_up)
            raise PeerError(message, hint=hint, nodes=sorted({n for n, _, _ in given_up}), refusals=refusals)
        return []

    @staticmethod
    async def _keep_here(remote: dict[int, RemoteShareWriter], placement: list[str],
                         start: Callable[[RemoteShareWriter], Awaitable[None]], keep: Keeper,
                         refused: list[tuple[str, int, BaseException]]) -> list[tuple[str, int, BaseException]]:
        """The refused shares started on this node (`start_remote`); if this node cannot take them either (no room),
        the put fails with the holders' refusals, as it would have."""
        moved = {share: remote[share].to(holder, node) for _, share, _ in refused for node, holder in [keep(share)]}
        results = await asyncio.gather(*(start(w) for w in moved.values()), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(w.undo() for w in moved.values()))
            log.warning("shares %s could not be kept here either: %s", sorted(moved), failed[0])
            message, hint, refusals = summarise_refusals(refused)
            raise PeerError(message, hint=hint, nodes=sorted({n for n, _, _ in refused}),
                            refusals=refusals) from failed[0]
        for share, writer in moved.items():
            remote[share], placement[share] = writer, writer.node
        return refused

    def load(self, cap: Capability, remote: frozenset[int] = frozenset(), fetched: bytes | None = None
              ) -> tuple[Manifest, dict[int, ShareMeta], dict[int, str]]:
        """The verified manifest, the local shares whose metadata matches it, and why the others do not
        (shares in `remote` are on other nodes: see `remote_metas`).  `fetched`: the manifest as another node
        sent it, for a file this node holds no manifest of (checked against the capability all the same)."""
        si = cap.storage_index
        raw = self.store.manifest(si) or fetched
        if raw is None:
            raise NotFound("this node holds no file with that capability",
                           hint="check the capability; `xsc store ls` lists the files this node uploaded")
        manifest = decode_manifest(raw, cap.manifest_hash)
        if manifest.size != cap.size:
            # The manifest is the capability's own (its hash checked): it is the capability that was mangled, the
            # caller's error (400), not the node's.
            raise InvalidCapability(f"the file is {manifest.size} bytes, the capability says {cap.size}",
                                 hint="check the capability: copy it whole, as `xsc store put` printed it")
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

    def fetch_segment(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                       index: int, bad: list[tuple[int, int]], fetched: Mapping[int, bytes | None] | None = None,
                       hash_local: bool = True) -> bytes:
        """K verified blocks of one segment, decoded: the padded ciphertext cut to its length."""
        return erasure.decode(*self.segment_blocks(si, manifest, metas, order, index, bad, fetched, hash_local))

    def segment_blocks(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                       index: int, bad: list[tuple[int, int]], fetched: Mapping[int, bytes | None] | None = None,
                       hash_local: bool = True, stored: BlockReader | None = None) -> tuple[dict[int, bytes], int]:
        """K verified blocks of one segment (share -> block), and the length of its ciphertext.

        Blocks of shares in `fetched` came from other nodes; the others are read here (through `stored`, a reader
        of this file's blocks its caller holds across segments, if given).  `hash_local=False`: the
        caller authenticates the ciphertext (segment_source's `finish`), so a block read here is taken unhashed
        when it has its exact length and the segment has no padding: then every byte of it is in the ciphertext."""
        plain_len = layout.plaintext_length(manifest.size, manifest.segment_size, index)
        length = layout.ciphertext_length(plain_len)
        size = erasure.block_length(length)
        trusted = not hash_local and size * erasure.K == length
        blocks: dict[int, bytes] = {}
        for s in order:
            here = not (fetched and s in fetched)
            if not here:
                block = fetched[s]
            else:
                block = self.store.get_block(si, s, index) if stored is None else stored.get(s, index)
            if block is None or not (trusted and here and len(block) == size) \
                    and block_hash(block) != metas[s].block_hashes[index]:
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
        return blocks, length

    async def remote_metas(self, cap: Capability, manifest: Manifest, holders: Mapping[int, Holder],
                            names: list[str], meanwhile: Callable[[], None] | None = None
                            ) -> tuple[dict[int, ShareMeta], dict[int, str]]:
        """Metadata of the shares on other nodes, each checked against the manifest's share root; `meanwhile()` is
        called once they are asked."""
        si = cap.storage_index

        async def one(share: int, holder: Holder) -> ShareMeta:
            try:
                async with asyncio.timeout(self.remote_timeout):  # in this task: asked before what `meanwhile` asks
                    m = await holder.meta(si, share, manifest.segment_count)
            except TimeoutError:
                raise TimeoutError(f"no answer within {self.remote_timeout:g} s") from None
            if root(list(m["block_hashes"])) != manifest.share_root(share):
                raise IntegrityError("its block hashes do not match the manifest")
            return ShareMeta(share, m["segment_count"], m["stored_bytes"], m["lease_expiry"], b"",
                             tuple(m["block_hashes"]))

        asked = asyncio.gather(*(one(s, h) for s, h in holders.items()), return_exceptions=True)
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                asked.cancel()
                raise
        results = await asked
        metas: dict[int, ShareMeta] = {}
        bad: dict[int, str] = {}
        for share, result in zip(holders, results):
            if isinstance(result, BaseException):
                bad[share] = unreadable(names[share], result)
            else:
                metas[share] = result
        return metas, bad

    async def usable(self, cap: Capability, holders: Mapping[int, Holder], names: list[str],
                      rank: Mapping[int, float], fetched: bytes | None = None,
                      meanwhile: Callable[[Manifest], None] | None = None
                      ) -> tuple[Manifest, dict[int, ShareMeta], list[int], dict[int, str]]:
        """The manifest, the intact shares' metadata, the order to read them in and why the others are not usable;
        `meanwhile(manifest)` is called once the holders are asked for metadata, before they answer (the metadata
        asked first takes the connections the pool keeps to them: a small answer there, rather than a fresh
        connection's handshakes, whose first packet lost costs a second)."""
        manifest, metas, bad = await self.run(self.load, cap, frozenset(holders), fetched)
        start = None if meanwhile is None else lambda: meanwhile(manifest)
        if holders:
            remote_metas, remote_bad = await self.remote_metas(cap, manifest, holders, names, start)
            metas.update(remote_metas)
            bad.update(remote_bad)
        # Data shares first (decoding is then a copy), then the fastest holders; known-damaged shares last.
        order = sorted(metas, key=lambda s: (s in bad, s >= erasure.K, rank.get(s, 0.0), s))
        if len(metas) < erasure.K:
            missing = sorted(bad)
            by_reason: dict[str, list[int]] = {}  # shares unread for one reason (a node down) named together
            for s in missing:
                by_reason.setdefault(bad[s], []).append(s)
            raise NotEnoughShares(
                f"only {len(metas)} of {erasure.N} shares are intact ({erasure.K} are needed): "
                + ", ".join(f"share{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))} {why}"
                            for why, ss in by_reason.items()),
                hint="the file cannot be rebuilt now; if nodes are down, retry when they are back",
                missing_shares=missing)
        return manifest, metas, order, bad

    def segment_reader(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], bad: list[tuple[int, int]],
                       finish: Callable[[int, list], bytes] | None = None) -> Callable[..., bytes]:
        """A blocking function giving one segment's ciphertext (or `finish(index, pieces)`: the ciphertext as
        erasure.pieces gives it, the data blocks as they came, which `finish` reads without joining), from the
        shares in `usable`, in order (`fetched`: the blocks that came from other nodes; the others are read here,
        through `stored` if given: see segment_blocks).

        `finish` authenticates the ciphertext (AES-GCM: it raises IntegrityError when the tag fails), so the blocks
        read here are not hashed first: every block was hashed as it was written (a put hashes what it writes, a
        holder refuses a share whose blocks do not hash to what its uploader says, a repair hashes what it
        rebuilds), and a byte of one changed since then fails the tag.  Then the segment is read again with every
        block hashed, so the bad ones are found, reported and rebuilt from the other shares as ever
        (docs/storage.md, "Get")."""

        def work(index: int, usable: list[int], fetched: Mapping[int, bytes | None],
                 stored: BlockReader | None = None) -> bytes:
            if finish is None:
                return self.fetch_segment(si, manifest, metas, usable, index, bad, fetched)
            seen: list[tuple[int, int]] = []  # the blocks found missing or bad, kept if the tag holds
            try:
                return finish(index, erasure.pieces(*self.segment_blocks(si, manifest, metas, usable, index, seen,
                                                                         fetched, False, stored)))
            except IntegrityError:
                seen.clear()
                with self._counting:
                    self.tag_failures += 1
                return finish(index, erasure.pieces(*self.segment_blocks(si, manifest, metas, usable, index, bad,
                                                                         fetched, True, stored)))
            finally:
                bad.extend(seen)

        return work

    def segment_source(self, si: bytes, manifest: Manifest, metas: dict[int, ShareMeta], order: list[int],
                        readers: dict[int, "RemoteShareReader"], names: list[str], bad: list[tuple[int, int]],
                        finish: Callable[[int, list], bytes] | None = None) -> Callable[[int], Awaitable[bytes]]:
        """An async function giving one segment (as `segment_reader`'s, run in the pool).  Remote blocks are
        fetched first, local ones read in the pool; when a holder fails or a block is bad, the next share in
        `order` is tried as well, and a share that gave a bad block is tried after the others from then on."""
        loop = asyncio.get_running_loop()
        work = self.segment_reader(si, manifest, metas, bad, finish)

        async def segment(index: int) -> bytes:
            want = erasure.K
            while True:
                alive = [s for s in order if s not in readers or readers[s].failed is None]
                # A share that gave a bad block is read last: its holder may send only garbage, and every segment
                # read from it first would be read twice.
                suspect = {s for s, _ in bad}
                alive.sort(key=suspect.__contains__)
                chosen = alive[:want]
                remote = [s for s in chosen if s in readers]
                for s in remote:  # every share's range asked before any is waited for
                    readers[s].ask_for(index)
                fetched = {s: await readers[s].get(index) for s in remote}
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

    def record_damage(self, si: bytes, bad: list[tuple[int, int]], remote: Mapping[int, str] | None = None) -> None:
        """Mark the shares of these (share, segment) blocks damaged; a block is in `bad` once per read that found it
        (a segment read again with one more share finds it again).  `remote`: the node of each share read from
        another node, which its mark names."""
        by_share: dict[int, set[int]] = {}
        for s, i in bad:
            by_share.setdefault(s, set()).add(i)
        for s, segments in by_share.items():
            log.warning("share %d of %s: bad or missing blocks %s; reported for repair", s, si.hex(),
                        sorted(segments)[:20])
            self.store.mark_damaged(si, s, f"bad or missing blocks in segments {sorted(segments)[:20]}",
                                    (remote or {}).get(s))


def _unreachable(down: dict[int, BaseException], names: dict[int, str]) -> str:
    """Unreachable shares grouped by node, each reason said once: "shares 1, 2 on node NODE-ID (connection refused)"."""
    by_node: dict[tuple[str, str], list[int]] = {}
    for s, err in sorted(down.items()):
        reason = getattr(err, "details", {}).get("reason") or str(err)
        by_node.setdefault((names[s], reason), []).append(s)
    return "unreachable: " + "; ".join(
        f"{'shares' if len(shares) > 1 else 'share'} {', '.join(map(str, shares))} on node {node} ({reason})"
        for (node, reason), shares in by_node.items())

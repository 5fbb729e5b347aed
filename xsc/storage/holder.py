"""The holder's side of share transfer: a gateway places one share of a file on this node.

An upload stages blocks with the share store (invisible, and deleted on restart, until published) and
publishes the share only once every block has arrived in order, its hashes are the ones the holder
computed and their root is the manifest's root for that share.  Whatever fails, the upload is aborted:
nothing stays staged.  The holder cannot check the manifest against the capability (it never sees
the capability); readers do.  The protocol is storage/core/wire.py; the routes node/http/shares.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import codec
from ..errors import (DiskFull, DuplicateJsonKey, Forbidden, InvalidArgument, PayloadTooLarge, QuotaExceeded,
                      RangeNotSatisfiable, SegmentOutOfOrder, ShareExists, ShareMismatch, ShareNotFound, StorageFull,
                      UploadIncomplete, UploadNotFound, XscError)
from ..identity import public_id
from ..ids import unique_bytes
from ..ledger.core.pricing import price_storage, storage_given_back
from ..tasks import in_pool, periodic
from .core import erasure, layout, leases
from .deals import HolderTerms
from .core.merkle import block_hash, proof, root
from .block_answers import BlockAnswers, BlocksAnswer
from .bodies import BodyRoom
from .publisher import Publisher
from .share_store import ShareMeta, ShareStore, Upload, restaged, writing
from .core.wire import (HEX_HASH, MAX_BODIES_PER_SENDER, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
                        block_lengths, commit_limit, cut_commit, json_int, parse_manifest, put_limit, split_blocks,
                        whole_blocks_at_least)

log = logging.getLogger(__name__)

DESCRIBE_BYTES = 1024  # a share's metadata besides its block hashes, the manifest included (an estimate)
DESCRIBE_BYTES_PER_SEGMENT = 67  # one block hash in hex, quoted, and its comma

IDLE_TIMEOUT = 600.0  # seconds without a block staged before an upload in progress is aborted
REAP_INTERVAL = 30.0
# What one sender may make this node spend on uploads it has not finished (peers are strangers).  An honest gateway
# begins one upload per put on each holder it places a share on (two or three on a network of fewer than six
# providers), and its puts at once are bounded by bytes, not by count (storage/put_budget.py): sixteen puts, or a
# multipart upload's ten parts and a few puts, on three holders are 32-48 uploads in progress here.
MAX_UPLOADS_PER_SENDER = 64
# Node ids are cheap (a proof of work) and addresses are not: the senders at one network (an IPv4 /24, an IPv6 /64:
# the route's `net.addresses.network_key`) together, four busy gateways' worth.
MAX_UPLOADS_PER_NETWORK = 256
# All senders together: past it a begin makes room by aborting the least recently active upload idle for ROOM_IDLE of
# the network that holds the most among those holding more than the begin's would with it, and is refused (429)
# otherwise: a flood from a few networks cannot keep a newcomer out, and never gets past what the others hold.
MAX_UPLOADS = 4096
# Seconds an upload must have been idle (no block staged, no touch, since its begin) before it may be aborted to make
# room.  An honest gateway begins its uploads as a put starts, then may wait for its byte budget (put_budget.py) or
# for its client: under a flood from many networks its network may hold the most, and its uploads must not go to a
# newcomer while it waits (it touches them meanwhile: remote.KEEP_ALIVE).  A flood's uploads that send nothing are
# taken once idle this long; touched, each is still aborted at its deadline, as one fed at a trickle is.
ROOM_IDLE = 60.0
# Of the capacity, reserved by the uploads in progress of one sender, and of all the senders of one network together
# (node ids are cheap: one network with many ids reserves no more than one id).
MAX_RESERVED_FRACTION = 0.5
MAX_SEGMENTS_PER_SHARE = 65_536  # bounds the metadata one share makes every read of it load
TURN_WAIT = 60.0  # seconds a body sent ahead of its turn waits for those before it
MIN_UPLOAD_RATE = 64 * 1024  # bytes/s: an upload slower than this on the whole is aborted
# A body read at less than MIN_BODY_RATE over any BODY_STALL seconds is cut off (node/http/shares.py), its room in
# memory given back at once (bodies.py): an honest gateway sends a batch it holds whole, at the speed of its path, and
# its uploads must average MIN_UPLOAD_RATE, two bodies in flight each; a body that stalls would hold its room to its
# deadline.
MIN_BODY_RATE = MIN_UPLOAD_RATE // 4
BODY_STALL = 10.0
# Uploads of one share at once, from other senders and networks: anyone who learnt a storage index (a co-holder of
# the file) could otherwise begin its shares here and never commit them, and the honest uploader would be refused
# until their deadline.  The first upload of a share stages under the share's keys, the others under keys of their
# own; the first to commit a share that checks out keeps it and the others are dropped.
MAX_RIVALS = 4


@dataclass(eq=False)
class Claim:
    """One upload of a share, from its begin on."""

    uploader: bytes
    network: str
    own_keys: bool  # stages under the share's keys (else under a storage index of its own, moved once it commits)
    incoming: "Incoming | None" = None  # None while its begin is under way
    lost: bool = False  # the share was published or taken by another upload while this one was being begun


class Claims:
    """The uploads of each share in progress here, begins under way included (one sender and one network each, at most
    MAX_RIVALS), and which of them stages under the share's keys: one at a time, so no two write the same keys."""

    def __init__(self) -> None:
        self._claims: dict[tuple[bytes, int], list[Claim]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def check(self, si: bytes, share: int, uploader: bytes, network: str) -> None:
        claims = self._claims.get((si, share), ())
        whose = "by you" if any(c.uploader == uploader for c in claims) else \
            f"from your network {network}" if any(c.network == network for c in claims) else \
            f"by {len(claims)} other nodes, the most at once" if len(claims) >= MAX_RIVALS else None
        if whose:
            raise ShareExists(f"share {share} of {si.hex()} is already being uploaded to this node {whose}",
                              hint="finish or abort that upload first, or place this share on another node")

    def claim(self, si: bytes, share: int, uploader: bytes, network: str) -> Claim:
        claims = self._claims.setdefault((si, share), [])
        claim = Claim(uploader, network, own_keys=not any(c.own_keys for c in claims))
        claims.append(claim)
        self._count += 1
        return claim

    def losing(self, si: bytes, share: int, claim: Claim | None, owners: bool = False) -> list["Incoming"]:
        """The other uploads of the share than `claim` (None: all of them; `owners`: those staging under its keys)
        marked lost; answers those begun, to abort (a begin under way aborts itself)."""
        lost = [c for c in self._claims.get((si, share), ()) if c is not claim and (c.own_keys or not owners)]
        for c in lost:
            c.lost = True
        return [c.incoming for c in lost if c.incoming is not None]

    def release(self, si: bytes, share: int, claim: Claim) -> None:
        claims = self._claims.get((si, share), [])
        if claim in claims:
            claims.remove(claim)
            self._count -= 1
            if not claims:
                del self._claims[(si, share)]


@dataclass(eq=False)
class Incoming:
    """An upload of one share to this node, in progress."""

    upload: Upload
    share: int
    size: int
    segment_size: int
    segment_count: int
    share_bytes: int
    lease_expiry: int
    uploader: bytes
    last_activity: float
    hashes: list[bytes] = field(default_factory=list)  # computed here, one per segment received
    lock: asyncio.Condition = field(default_factory=asyncio.Condition)  # notified as blocks are staged
    closed: bool = False
    terms: dict | None = None  # the deal it is placed under (kept with the share when it publishes)
    started: float = 0.0
    receiving: int = 0  # segment bodies being read for it now
    cost: int = 0  # the lease's price, set aside on the uploader's trust line until it publishes or is aborted
    line: str = ""  # the uploader's node id (whose trust line)
    network: str = ""  # where the uploader sent its begin from (MAX_UPLOADS_PER_NETWORK)
    si: bytes = b""  # the share's storage index (its upload's, until one begun beside another commits: Claim)
    claim: Claim | None = None

    @property
    def deadline(self) -> float:
        """When it is aborted, finished or not: an upload may not hold its reservation at a trickle."""
        return self.started + IDLE_TIMEOUT + self.share_bytes / MIN_UPLOAD_RATE

    def __post_init__(self) -> None:
        self.id = self.upload.id.hex()  # kept when its blocks are staged again under another upload (Claim)

    @property
    def next_segment(self) -> int:
        return len(self.hashes)


class UploadsHeld:
    """What the uploads in progress and begins under way hold, counted as they are claimed and let go (never scanned
    for): per sender and per network their uploads and the bytes they reserve; a key is dropped at zero, so what is
    kept is bounded by the uploads in progress, whatever the ids and addresses cycled through."""

    def __init__(self) -> None:
        self._senders: dict[bytes, list[int]] = {}  # [uploads, bytes reserved]
        self._networks: dict[str, list[int]] = {}

    def status(self) -> dict[str, int]:
        return {"senders": len(self._senders), "networks": len(self._networks)}

    def check(self, sender: bytes, network: str, share_bytes: int, capacity: int) -> None:
        uploads, reserved = self._senders.get(sender, (0, 0))
        network_uploads, network_reserved = self._networks.get(network, (0, 0))
        if uploads >= MAX_UPLOADS_PER_SENDER:
            raise QuotaExceeded(f"already {uploads} uploads of yours in progress on this node (at most "
                                f"{MAX_UPLOADS_PER_SENDER})", hint="finish or abort some first", retry_after=30)
        if network_uploads >= MAX_UPLOADS_PER_NETWORK:
            raise QuotaExceeded(f"already {network_uploads} uploads in progress on this node from your network "
                                f"{network} (at most {MAX_UPLOADS_PER_NETWORK}, all its node ids together)",
                                hint="finish or abort some first", retry_after=30)
        most = int(MAX_RESERVED_FRACTION * capacity)
        if reserved + share_bytes > most:
            raise QuotaExceeded(f"your uploads in progress would reserve {reserved + share_bytes} bytes, more than "
                                f"{MAX_RESERVED_FRACTION:.0%} of this node's capacity ({most})",
                                hint="finish the uploads in progress first", retry_after=60)
        if network_reserved + share_bytes > most:
            raise QuotaExceeded(f"the uploads in progress from your network {network} would reserve "
                                f"{network_reserved + share_bytes} bytes, more than {MAX_RESERVED_FRACTION:.0%} of "
                                f"this node's capacity ({most}, all its node ids together)",
                                hint="finish the uploads in progress first, or place this share on another node",
                                retry_after=60)

    def count(self, sender: bytes, network: str, share_bytes: int, sign: int) -> None:
        for held_by, key in ((self._senders, sender), (self._networks, network)):
            held = held_by.setdefault(key, [0, 0])
            held[0] += sign
            held[1] += sign * share_bytes
            if not held[0]:
                del held_by[key]

    def crowding(self, network: str, uploads: Iterable[Incoming], total: int, now: float) -> Incoming:
        """The upload aborted to make room for a begin from `network` when the node has MAX_UPLOADS: of the uploads
        idle for ROOM_IDLE (and no body being read, no request holding it) whose network holds more than `network`
        would with this begin (then it holds more than its share, which a flood does and a newcomer does not), the
        least recently active of the network that holds the most."""
        mine = self._networks.get(network, (0, 0))[0]
        most = max(n for n, _ in self._networks.values())
        if mine + 1 >= most:
            raise QuotaExceeded(f"this node has {total} uploads in progress, the most it takes at "
                                f"once, and {mine} of them are from your network {network}, as many as any",
                                hint="try again later, or place this share on another node", retry_after=30)
        crowded = [i for i in uploads if self._networks.get(i.network, (0, 0))[0] > mine + 1
                   and not i.closed and not i.receiving and not i.lock.locked()]
        idle = [i for i in crowded if now - i.last_activity >= ROOM_IDLE]
        if not idle:
            soonest = min((i.last_activity + ROOM_IDLE - now for i in crowded), default=ROOM_IDLE)
            raise QuotaExceeded(f"this node has {total} uploads in progress, the most it takes at once, and none "
                                f"of the networks holding more than yours has one idle for {ROOM_IDLE:g} s that it "
                                "may abort for yours", hint="try again later, or place this share on another node",
                                retry_after=max(1, math.ceil(soonest)))
        victim = min(idle, key=lambda i: (-self._networks[i.network][0], i.last_activity))
        log.info("aborting upload %s of share %d to make room: idle for %.0f s, and its network %s holds %d "
                 "uploads in progress", victim.id, victim.share, now - victim.last_activity, victim.network,
                 self._networks[victim.network][0])
        return victim


class ShareHolder:
    """The uploads in progress on this node and what a holder does with them."""

    def __init__(self, store: ShareStore, pool: Executor, terms: HolderTerms, *,
                 clock: Callable[[], float] = time.monotonic, trust: Any = None,
                 publisher: Publisher | None = None) -> None:
        self.store = store
        self.publisher = publisher or Publisher(store, pool)  # shared with the node's gateway: one group commit
        self.trust = trust  # xsc.ledger.trust.TrustLines: uploads from peers stay within their line (None: none)
        self.pool = pool
        self.terms = terms
        self.clock = clock
        self._incoming: dict[str, Incoming] = {}
        self._claims = Claims()
        self.bodies = BodyRoom()
        self.answers = BlockAnswers(store, pool)  # reads of the shares held here
        self._held = UploadsHeld()

    def __len__(self) -> int:
        return len(self._incoming)

    def status(self) -> dict[str, int]:
        """Uploads in progress, the senders and networks they are from, and their bodies in memory (BodyRoom)."""
        return {"in_progress": len(self._incoming), **self._held.status(), **self.bodies.status()}

    async def _run(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def begin(self, uploader: bytes, si: bytes, share: int, size: int, segment_size: int,
                    lease_expiry: int, terms: dict | None = None, network: str = "") -> Incoming:
        """`network`: where the uploader is (`net.addresses.network_key` of its address), counted as one sender."""
        count = layout.segment_count(size, segment_size)
        share_bytes = layout.share_bytes(size, segment_size)
        self.store.check_fits(share_bytes)
        if count > MAX_SEGMENTS_PER_SHARE:
            raise InvalidArgument(f"a share of {count} segments is more than the {MAX_SEGMENTS_PER_SHARE} this node "
                                  "holds", hint="use a larger segment size")
        while True:  # checked again after each upload aborted to make room: others may have begun meanwhile
            self._held.check(uploader, network, share_bytes, self.store.capacity)
            self._claims.check(si, share, uploader, network)
            if len(self._claims) < MAX_UPLOADS:  # uploads in progress and begins under way
                break
            await self.abort(self._held.crowding(network, self._incoming.values(), len(self._claims),
                                                 self.clock()))
        # Claimed before looking: an upload that publishes meanwhile is seen; counted before the first await, so that
        # begins sent at once are bounded as uploads in progress are.
        claim = self._claims.claim(si, share, uploader, network)
        self._held.count(uploader, network, share_bytes, 1)
        try:
            upload = await self._run(self._open, uploader, si, share, share_bytes, claim.own_keys)
            if claim.lost:  # it staged nothing, so its abort leaves the share's keys to the upload that took them
                await self._run(self.store.abort, upload)
                raise ShareExists(f"share {share} of {si.hex()} was placed on this node by another upload meanwhile",
                                  hint="place this share on another node")
        except BaseException:
            self._claims.release(si, share, claim)
            self._held.count(uploader, network, share_bytes, -1)
            raise
        now = self.clock()
        incoming = Incoming(upload, share, size, segment_size, count, share_bytes, lease_expiry, uploader, now,
                            terms=terms, started=now, network=network, si=si, claim=claim)
        claim.incoming = incoming
        self._incoming[incoming.id] = incoming
        return incoming

    def _open(self, uploader: bytes, si: bytes, share: int, share_bytes: int, own_keys: bool) -> Upload:
        for meta in self.store.share_metas(si):
            if meta.share == share or meta.uploader != uploader:
                whose = "yours" if meta.uploader == uploader else f"placed by {public_id(meta.uploader)}"
                raise ShareExists(f"this node already holds share {meta.share} of {si.hex()} ({whose})",
                                  hint="delete it first to replace it" if meta.uploader == uploader else
                                  "only the node that placed a file's shares may place more of them here")
        if own_keys and writing(self.store, si, share):  # this node's own put or repair writes the share's keys
            raise ShareExists(f"this node is writing share {share} of {si.hex()} itself",
                              hint="only the node that placed a file's shares may place more of them here")
        return self.store.begin_upload(si if own_keys else unique_bytes(len(si)), (share,), share_bytes)

    @contextlib.asynccontextmanager
    async def body_room(self, incoming: Incoming, size: int):
        """Room for one body of `incoming` (`BodyRoom.room`, counted in the network it was begun from); the upload is
        not reaped while it is read."""
        incoming.receiving += 1
        try:
            async with self.bodies.room(incoming.uploader, incoming.network, size):
                yield
        finally:
            incoming.receiving -= 1

    def get(self, upload_id: str, sender: bytes) -> Incoming:
        incoming = self._incoming.get(upload_id)
        if incoming is None or incoming.closed:
            raise UploadNotFound(f"no upload {upload_id[:40]} in progress on this node",
                                 hint="it was committed, aborted, idle for too long, or lost in a restart: "
                                      "begin a new one")
        if incoming.uploader != sender:
            raise Forbidden("only the node that began an upload may send to, commit or abort it")
        return incoming

    async def put(self, incoming: Incoming, first: int, body: bytes | bytearray | Sequence[bytes]) -> int:
        """Stage the blocks of segments first.. (in order), from a body or the chunks it arrived in; returns the
        next segment expected."""
        async with incoming.lock:
            self._check_open(incoming)
            self.check_order(incoming, first)
            if first != incoming.next_segment:
                await self._turn(incoming, first)
            blocks = split_blocks(body, incoming.size, incoming.segment_size, first)
            try:
                await self._run(self._stage, incoming, first, blocks)
            except asyncio.CancelledError:
                raise
            except BaseException:
                await self._abort_locked(incoming)  # a block half-staged: the upload cannot go on
                raise
            incoming.last_activity = self.clock()
            incoming.lock.notify_all()  # a body waiting its turn may be next now
            return incoming.next_segment

    @staticmethod
    def _stage(incoming: Incoming, first: int, blocks: Sequence[bytes]) -> None:
        # Counted as each block is written, so the state says what is staged even if the request is cancelled
        # while this thread runs on.
        for i, block in enumerate(blocks):
            digest = block_hash(block)
            incoming.upload.put_blocks(first + i, {incoming.share: block})
            incoming.hashes.append(digest)

    async def _turn(self, incoming: Incoming, first: int) -> None:
        """Wait, the upload's lock let go meanwhile, until the blocks before segment `first` are staged (the bodies
        carrying them are on their way on other connections), at most TURN_WAIT seconds."""
        try:
            await asyncio.wait_for(incoming.lock.wait_for(lambda: incoming.closed or incoming.next_segment >= first),
                                   TURN_WAIT)
        except asyncio.TimeoutError:
            raise SegmentOutOfOrder(f"segment {incoming.next_segment} is next and did not come within {TURN_WAIT:g} s "
                                    f"of segment {first}", hint="send the next segment",
                                    expected=incoming.next_segment) from None
        self._check_open(incoming)
        self.check_order(incoming, first)  # another body covered this one's first segment meanwhile: refused

    def touch(self, incoming: Incoming) -> None:
        """Activity without a block, for a gateway's put that waits (ROOM_IDLE); the upload's deadline stands."""
        incoming.last_activity = self.clock()

    def _check_open(self, incoming: Incoming) -> None:
        if incoming.closed:
            raise UploadNotFound(f"upload {incoming.id} was aborted")

    def check_order(self, incoming: Incoming, first: int) -> None:
        """Segments arrive in order: a body for the next one, or for one at most a few bodies ahead of it (sent
        while those before it are still on their way: it waits its turn in `put`)."""
        ahead, expected = first - incoming.next_segment, incoming.next_segment
        block = block_lengths(incoming.size, incoming.segment_size, 0, 1)[0]
        if ahead < 0 or ahead > 0 and (first >= incoming.segment_count
                                       or ahead * block > (MAX_BODIES_PER_SENDER - 1) * self.put_limit(incoming)):
            raise SegmentOutOfOrder(f"segments must arrive in order: segment {expected} is next, not {first}",
                                    hint="send the next segment", expected=expected)

    async def put_last(self, incoming: Incoming, first: int, body: Sequence[bytes]) -> ShareMeta:
        """Stage the share's last blocks (segments first.. to its last) and commit it, from a body of those blocks
        followed by the commit's JSON (wire.py: one round trip less than a body and a commit); a body that is not one
        aborts the upload, as a commit that does not check out does."""
        try:
            blocks, raw = cut_commit(body, sum(block_lengths(incoming.size, incoming.segment_size, first,
                                                             max(incoming.segment_count - first, 0))))
            most = self.commit_limit(incoming)
            if len(raw) > most:
                raise PayloadTooLarge(f"the commit after the last blocks is {len(raw)} bytes; at most {most} are "
                                      "accepted", limit=most)
            commit = codec.loads(raw, unique_keys=True)
            if not isinstance(commit, dict):
                raise ValueError("not an object")
        except codec.DuplicateKey as err:
            await self.abort(incoming)
            raise DuplicateJsonKey.within("the commit", err.key) from None
        except ValueError:
            await self.abort(incoming)
            raise InvalidArgument("the blocks' body must end with the commit's JSON object",
                                  hint='send the last blocks, then {"block_hashes": [...], "manifest": hex}') from None
        except XscError:
            await self.abort(incoming)
            raise
        await self.put(incoming, first, blocks)
        return await self.commit(incoming, commit.get("block_hashes"), commit.get("manifest"))

    async def commit(self, incoming: Incoming, block_hashes: Any, manifest_hex: Any) -> ShareMeta:
        """Check everything, then publish the share; on any failure the upload is aborted."""
        async with incoming.lock:
            self._check_open(incoming)
            meta = await self._publish(incoming, _checked, self.store, incoming, block_hashes, manifest_hex)
        await self._drop_rivals(incoming)
        return meta

    async def _publish(self, incoming: Incoming, check: Callable[..., tuple[ShareMeta, bytes]], *args) -> ShareMeta:
        """Publish `incoming` (its lock held) once check(*args) in the pool has passed; aborted if anything fails."""
        try:
            meta, manifest = await self._run(check, *args)
            if not incoming.claim.own_keys:
                await self._take_keys(incoming)
            also = {} if incoming.terms is None else self.terms.entry(incoming.si, incoming.share, incoming.terms)
            await self.publisher.publish(incoming.upload, [meta], manifest=manifest, also=also)
        except BaseException:
            await self._abort_locked(incoming)
            raise
        if incoming.cost and self.trust is not None:  # the lease is taken on: used on the uploader's line
            self.trust.use(incoming.line, incoming.cost, reserved=incoming.cost)
            incoming.cost = 0
        self._forget(incoming)
        return meta

    async def _take_keys(self, incoming: Incoming) -> None:
        """An upload begun beside another one of its share commits a share that checks out: the share's keys are its
        now.  The upload staging under them is dropped (unless it published first), and its blocks moved there."""
        # Those with the keys now, taken as it takes them (no await between): of two such commits at once, the later
        # waits for the earlier and never the other way round.
        owners = self._claims.losing(incoming.si, incoming.share, incoming.claim, owners=True)
        incoming.claim.own_keys = True  # begins from now on stage beside it
        for other in owners:
            await self.abort(other)
        if await self._run(self.store.share_meta, incoming.si, incoming.share) is not None or \
                await self._run(writing, self.store, incoming.si, incoming.share):
            raise ShareExists(f"share {incoming.share} of {incoming.si.hex()} was placed on this node by another "
                              "upload first", hint="place this share on another node")
        incoming.upload = await self._run(restaged, self.store, incoming.upload, incoming.si)

    async def _drop_rivals(self, incoming: Incoming) -> None:
        """The share is published: the other uploads of it are dropped, their room given back."""
        for other in self._claims.losing(incoming.si, incoming.share, incoming.claim):
            await self.abort(other)

    async def take_over(self, si: bytes, shares: Iterable[int]) -> None:
        """This node's own put or repair has begun writing these shares of `si` here (its upload is begun: a peer's
        begin of one is refused from now on, `_open`): the peers' uploads of them begun before are aborted, their
        blocks deleted, before the put or repair writes any, so that no peer's body lands under the keys of a share it
        publishes and no peer's abort deletes what it wrote.  A share a peer published here first is ended as its
        uploader's delete ends it (`_taken_back`): the node's blocks would overwrite its first ones and leave the rest,
        uncounted, and its deal would outlive it, for the unpaid collector to end by deleting the node's own share."""
        for share in shares:
            for incoming in self._claims.losing(si, share, None):
                log.info("aborting upload %s of share %d of %s: this node writes that share itself", incoming.id,
                         share, si.hex())
                await self.abort(incoming)
            taken = await self._run(_taken_back, self.store, self.terms, si, share)
            if taken is not None:
                log.info("ended share %d of %s placed here by %s: this node writes that share itself", share, si.hex(),
                         taken[0]["uploader"])
                self._give_back(*taken)

    async def abort(self, incoming: Incoming) -> None:
        async with incoming.lock:
            await self._abort_locked(incoming)

    async def _abort_locked(self, incoming: Incoming) -> None:
        if incoming.closed:
            return
        incoming.closed = True
        incoming.lock.notify_all()  # bodies waiting their turn: the upload is gone
        try:
            # The share stays claimed until its staged blocks are gone: a new upload would write the same keys.
            await self._run(self.store.abort, incoming.upload)
        finally:
            self._forget(incoming)

    def _forget(self, incoming: Incoming) -> None:
        if incoming.cost and self.trust is not None:
            self.trust.release(incoming.line, incoming.cost)
            incoming.cost = 0
        incoming.closed = True
        if self._incoming.pop(incoming.id, None) is not None:
            self._held.count(incoming.uploader, incoming.network, incoming.share_bytes, -1)
        self._claims.release(incoming.si, incoming.share, incoming.claim)

    async def reap(self, now: float | None = None) -> int:
        """Abort uploads idle for IDLE_TIMEOUT (not those with a request being handled) and those past their
        deadline (whatever is under way for them); returns how many."""
        now = self.clock() if now is None else now
        # Idle: no block staged for IDLE_TIMEOUT (a refused request is no activity), never while a body is being
        # read for it (reads have their own timeout) or a request holds it.  Past its deadline, even then: bodies
        # kept in flight one after another (each cut off at its own deadline, or refused once its turn never came)
        # would otherwise hold the upload's reservation for ever without staging a block.
        idle = [i for i in list(self._incoming.values())
                if now >= i.deadline or (now - i.last_activity >= IDLE_TIMEOUT
                                         and not i.receiving and not i.lock.locked())]
        for incoming in idle:
            log.info("aborting upload %s of share %d: idle for %.0f s", incoming.id, incoming.share,
                     now - incoming.last_activity)
            await self.abort(incoming)
        return len(idle)

    # --- the operations of the peer API (node/http/shares.py), checked here ---------------------
    async def begin_upload(self, sender: bytes, sender_id: str, si: bytes, share: int, body: dict,
                           network: str = "") -> dict:
        """Reserve room for a share under the deal the gateway names (refused under this node's ask); `network`:
        where the sender is (`begin`)."""
        size = json_int(body, "size")
        segment_size = json_int(body, "segment_size", minimum=MIN_SEGMENT_SIZE, maximum=MAX_SEGMENT_SIZE)
        # As renewals: up to the longest lease from now, with a day for the clocks of two nodes to differ.
        now = int(time.time())
        lease_expiry = json_int(body, "lease_expiry", minimum=now + 1, maximum=now + leases.MAX_DURATION + 86400)
        # Nothing is stored for another node without a priced deal at or above this node's ask.  The terms are
        # written with the share when it publishes: a refused or abandoned upload leaves nothing behind.
        try:  # no room here is said first: the ask this node offered is gone once it has none (check_price)
            self.store.check_fits(layout.share_bytes(size, segment_size))
        except StorageFull as err:
            raise _no_room_for_uploader(err) from None
        price = self.terms.check_price(body.get("price"))
        payer = self.terms.check_payer(body.get("payer"))
        terms = self.terms.new(sender_id, price, layout.share_bytes(size, segment_size), now, payer)
        # Credit only along recognition: the whole lease is set aside on the uploader's trust line first (a
        # stranger must have prepaid it: 402 prepayment-required), and used when the share publishes.
        cost = price_storage(terms["bytes"], lease_expiry - now, price) if self.trust is not None else 0
        if cost:
            self.trust.reserve(sender_id, cost, f"a share of {terms['bytes']} bytes for "
                                                f"{(lease_expiry - now) / 86400:.1f} days")
        try:
            incoming = await self.begin(sender, si, share, size, segment_size, lease_expiry, terms=terms,
                                        network=network)
        except BaseException as err:
            if cost:
                self.trust.release(sender_id, cost)
            if type(err) in (StorageFull, DiskFull):
                raise _no_room_for_uploader(err) from None
            raise
        incoming.cost, incoming.line = cost, sender_id
        return {"upload": incoming.id, "segment_count": incoming.segment_count, "share_bytes": incoming.share_bytes,
                "max_put_bytes": put_limit(incoming.size, incoming.segment_size)}

    def check_room_for_whole(self, length: int) -> None:
        """Refuse a body of whole shares of `length` bytes (said in its Content-Length) before it is read, if this
        node has no room for the fewest block bytes it can hold, on its disk or in its capacity: the uploader places
        them elsewhere, as after each share's begin, which checks its own share again once the body is read."""
        try:
            self.store.check_fits(whole_blocks_at_least(length))
        except StorageFull as err:
            raise _no_room_for_uploader(err) from None

    async def place_whole(self, sender: bytes, sender_id: str, si: bytes, share: int, terms: dict,
                          block: bytes, network: str = "") -> ShareMeta:
        """A share of one segment in one request: begun, staged and committed as by its three requests, with each
        one's checks (`terms` are begin's, with commit's "block_hash" and "manifest"); nothing of it is left if
        one refuses."""
        begun = await self.begin_upload(sender, sender_id, si, share, terms, network)
        incoming = self._incoming[begun["upload"]]
        async with incoming.lock:
            if incoming.segment_count != 1:
                await self._abort_locked(incoming)
                raise InvalidArgument(f"a share of {incoming.segment_count} segments is placed in parts, not whole",
                                      hint="begin an upload, send its segments, then commit it")

            def staged_and_checked() -> tuple[ShareMeta, bytes]:  # one trip to the pool for a small share
                self._stage(incoming, 0, split_blocks(block, incoming.size, incoming.segment_size, 0))
                return _checked(self.store, incoming, [terms.get("block_hash")], terms.get("manifest"))

            meta = await self._publish(incoming, staged_and_checked)
        await self._drop_rivals(incoming)
        return meta

    @staticmethod
    def put_limit(incoming: Incoming) -> int:
        return put_limit(incoming.size, incoming.segment_size)

    @staticmethod
    def commit_limit(incoming: Incoming) -> int:
        return commit_limit(incoming.segment_count)

    async def held(self, si: bytes, share: int) -> ShareMeta:
        meta = await self._run(self.store.share_meta, si, share)
        if meta is None:
            raise ShareNotFound(f"this node holds no share {share} of {si.hex()}")
        return meta

    async def held_for(self, si: bytes, share: int, sender: bytes, action: str) -> ShareMeta:
        """A share held here, for a request that only the node that placed it may make."""
        meta = await self.held(si, share)
        if meta.uploader != sender:
            raise Forbidden(f"only the node that placed share {share} may {action}", uploader=public_id(meta.uploader))
        return meta

    async def describe(self, si: bytes, share: int, pay: Callable[[int], None]) -> dict:
        """A share's metadata; `pay(size)` is charged the answer's size (about DESCRIBE_BYTES_PER_SEGMENT a
        segment: its block hashes) before the answer is built, so a share of many segments costs its reader."""
        meta = await self.held(si, share)
        pay(DESCRIBE_BYTES + DESCRIBE_BYTES_PER_SEGMENT * meta.segment_count)
        manifest = await self._run(self.store.manifest, si)
        return {"segment_count": meta.segment_count, "stored_bytes": meta.stored_bytes,
                "lease_expiry": meta.lease_expiry, "uploader": public_id(meta.uploader),
                "block_hashes": [h.hex() for h in meta.block_hashes],
                "manifest": manifest.hex() if manifest is not None else None}

    async def first_blocks(self, si: bytes, share: int, first: int, count: int, pay: Callable[[int], None],
                           network: str = "") -> tuple[int, BlocksAnswer]:
        """A read of blocks of a share held here, for a reader at `network` (`BlockAnswers.first`)."""
        return await self.answers.first(await self.held(si, share), si, first, count, pay, network)

    async def delete(self, si: bytes, share: int, sender: bytes) -> None:
        meta = await self.held_for(si, share, sender, "delete it")

        def delete() -> bool:
            deleted = self.store.delete_share(si, share)
            self.store.forget_manifest_if_unused(si)
            return deleted

        terms = await self._run(self.terms.get, si, share) if self.trust is not None else None
        if await self._run(delete) and terms is not None:
            self._give_back(terms, meta)

    def _give_back(self, terms: dict, meta: ShareMeta) -> None:
        """The whole lease was used on the uploader's line when the share was placed, and its uploader stops paying
        once the share is gone: the rest is given back, or each file put and removed would eat its line for good
        until its puts here were refused."""
        if self.trust is not None and meta.lease_expiry > time.time():
            self.trust.give_back(terms["uploader"], storage_given_back(
                terms["bytes"], meta.lease_expiry - int(time.time()), terms["price"]))

    async def renew(self, si: bytes, share: int, sender: bytes, body: dict) -> dict:
        meta = await self.held_for(si, share, sender, "renew its lease")
        # Up to the longest lease from now, with a day for the clocks of two nodes to differ.
        lease_expiry = json_int(body, "lease_expiry", maximum=int(time.time()) + leases.MAX_DURATION + 86400)
        if leases.renewed(meta.lease_expiry, lease_expiry) == meta.lease_expiry:
            # Nothing to extend, so nothing written: each renewal is a synced write, and one that adds no time is
            # paid for by nothing.
            return {"share": share, "lease_expiry": meta.lease_expiry, "previous": meta.lease_expiry}
        # The extension is taken on like an upload: within the uploader's trust line, for the time it adds from now
        # on (the time a share spent expired is not sold again: what its uploader pays, `leases.extension_seconds`).
        terms = self.terms.get(si, share) if self.trust is not None else None
        adds = leases.extension_seconds(meta.lease_expiry, lease_expiry, int(time.time()))
        cost = price_storage(terms["bytes"], adds, terms["price"]) if terms is not None and adds > 0 else 0
        if cost:
            self.trust.reserve(terms["uploader"], cost, f"a lease extension of {adds} s")
        try:
            done = await self._run(self.store.renew, si, lease_expiry, (share,))
        except BaseException:
            if cost:
                self.trust.release(terms["uploader"], cost)
            raise
        if share not in done:  # collected or deleted since it was looked up
            if cost:
                self.trust.release(terms["uploader"], cost)
            raise ShareNotFound(f"this node holds no share {share} of {si.hex()}")
        previous, new = done[share]
        if cost:
            used = price_storage(terms["bytes"], leases.extension_seconds(previous, new, int(time.time())),
                                 terms["price"])
            self.trust.use(terms["uploader"], min(used, cost), reserved=cost)
        if new != previous:
            log.info("lease of share %d of %s renewed to %d (was %d)", share, si.hex(), new, previous)
        return {"share": share, "lease_expiry": new, "previous": previous}

    async def audit(self, si: bytes, share: int, body: dict, pay: Callable[[int], None]) -> bytes:
        """A random block the uploader asks for, with its Merkle path: proof that the share is still here.  The
        answer's JSON (the block in hex: up to 32 MiB of a 64 MiB segment's share) is made in the pool, and `pay(size)`
        is charged the block's length before it is read, so a small request costs what its answer does."""
        meta = await self.held(si, share)
        segment = json_int(body, "segment")
        if segment >= meta.segment_count:
            raise RangeNotSatisfiable(f"share {share} has {meta.segment_count} blocks, not a block {segment}",
                                      segment_count=meta.segment_count)
        pay(await self._run(_block_length, self.store, si, meta, segment))
        raw = await self._run(_audit_answer, self.store, si, meta, segment)
        if raw is None:
            raise ShareNotFound(f"block {segment} of share {share} is missing on this node", segment=segment)
        return raw

    def start(self) -> None:
        pass

    def loops(self) -> dict[str, Any]:
        return {"upload-reaper": periodic("upload-reaper", REAP_INTERVAL, self.reap)}

    async def close(self) -> None:  # after its loop stopped
        for incoming in list(self._incoming.values()):
            try:
                await self.abort(incoming)
            except Exception:
                log.exception("could not abort upload %s at shutdown (it is cleaned up on the next start)",
                              incoming.id)


def _checked(store: ShareStore, incoming: Incoming, block_hashes: Any, manifest_hex: Any) -> tuple[ShareMeta, bytes]:
    """A commit of `incoming` checked: the share's metadata and the manifest to publish."""
    if incoming.next_segment != incoming.segment_count:
        raise UploadIncomplete(f"only {incoming.next_segment} of {incoming.segment_count} segments arrived",
                               hint="send every segment before committing", received=incoming.next_segment,
                               segment_count=incoming.segment_count)
    if not isinstance(block_hashes, list) or not all(isinstance(h, str) and HEX_HASH.fullmatch(h)
                                                     for h in block_hashes):
        raise InvalidArgument("block_hashes must be a list of SHA-256 hashes in lower-case hex")
    if len(block_hashes) != incoming.segment_count:
        raise ShareMismatch(f"{len(block_hashes)} block hashes given for {incoming.segment_count} segments")
    for i, (given, computed) in enumerate(zip(block_hashes, incoming.hashes)):
        if bytes.fromhex(given) != computed:
            raise ShareMismatch(f"the block of segment {i} does not match its given hash", segment=i,
                                hint="the block was damaged on its way here, or the hash is wrong")
    if not isinstance(manifest_hex, str) or len(manifest_hex) % 2 or not re.fullmatch(r"[0-9a-f]*",
                                                                                       manifest_hex):
        raise InvalidArgument("manifest must be the manifest's canonical encoding in lower-case hex")
    raw = bytes.fromhex(manifest_hex)
    manifest = parse_manifest(raw)
    expected = {"size": incoming.size, "segment_size": incoming.segment_size, "k": erasure.K, "m": erasure.M,
                "segment_count": incoming.segment_count}
    wrong = [f"{k} {getattr(manifest, k)} (expected {v})" for k, v in expected.items() if getattr(manifest, k) != v]
    if wrong:
        raise ShareMismatch("the manifest does not describe this upload: " + ", ".join(wrong))
    if root(incoming.hashes) != manifest.share_root(incoming.share):
        raise ShareMismatch(f"the Merkle root of the blocks is not the manifest's root of share {incoming.share}")
    held = store.manifest(incoming.si)
    if held is not None and held != raw:
        raise ShareExists("this node holds another manifest for that storage index",
                          hint="a storage index has one manifest: send the same one for every share")
    meta = ShareMeta(incoming.share, incoming.segment_count, incoming.share_bytes, incoming.lease_expiry,
                     incoming.uploader, tuple(incoming.hashes))
    return meta, raw


def _taken_back(store: ShareStore, terms: HolderTerms, si: bytes, share: int) -> tuple[dict, ShareMeta] | None:
    """A share of `si` a peer placed here under a deal, deleted (its blocks, its bytes in `used`) with its deal: the
    deal and the share's metadata, to give the rest of its lease back (None: no peer's share is here)."""
    deal, meta = terms.get(si, share), store.share_meta(si, share)
    if deal is None or meta is None or public_id(meta.uploader) != deal.get("uploader"):
        return None
    store.delete_share(si, share)
    terms.forget(si, share)
    return deal, meta


def _block_length(store: ShareStore, si: bytes, meta: ShareMeta, segment: int) -> int:
    """The length of a share's block of `segment`, from its file's manifest (at most its stored bytes)."""
    raw = store.manifest(si)
    if raw is None:
        return meta.stored_bytes
    manifest = parse_manifest(raw)
    return min(meta.stored_bytes, block_lengths(manifest.size, manifest.segment_size, segment, 1)[0])


def _audit_answer(store: ShareStore, si: bytes, meta: ShareMeta, segment: int) -> bytes | None:
    """An audit's answer, JSON: the block of `segment` in hex and its Merkle path (None: the block is missing)."""
    block = store.get_block(si, meta.share, segment)
    if block is None:
        return None
    path = proof(list(meta.block_hashes), segment)
    return codec.dumps({"block": block.hex(), "proof": [[left, h.hex()] for left, h in path]})


def _no_room_for_uploader(err: StorageFull) -> StorageFull:
    """The store's refusal of a share for want of room as its uploader is told it: the store's hint is for this node's
    own user, and no room on the disk is no room to the uploader (storage-full, which a gateway places elsewhere),
    whatever the capacity says."""
    return StorageFull(err.message, hint="place this share on another node: this one has no room for it", **err.details)


__all__ = ["IDLE_TIMEOUT", "Incoming", "ShareHolder"]


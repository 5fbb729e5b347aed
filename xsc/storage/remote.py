"""Shares on other nodes, as the gateway sees them: the holder interface, ordered batched writes, and
batched reads with read-ahead and a deadline.

The gateway never speaks HTTP itself: it is given `Holder` objects (xsc.net.RemoteHolder)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..errors import PeerError, PeerUnreachable
from ..tasks import stop
from ..units import credits_argument
from .core import layout
from .core.manifest import Manifest
from .core.wire import MAX_BODIES_PER_SENDER
from .put_budget import PutBudget

log = logging.getLogger(__name__)

SEND_BATCH = 4 * 1024 * 1024  # bytes of one share's blocks sent to its holder per request
# Batches of one share in flight at once, each on its own connection (the holder stages them in order): on a
# long path the next batch is on its way while the holder answers the one before, and the connections' windows
# open side by side.  Fewer than the bodies a holder takes from one sender (wire.MAX_BODIES_PER_SENDER).
SEND_AHEAD = 2
# On a long path (the probes' average round trip to the holder over LONG_PATH seconds), as many as a holder takes
# from one sender: a fresh connection opens its window a doubling per round trip, so the share's first 16 MiB are
# on their way at once on four connections rather than half of them on two, the other half waiting a cold
# connection's second of ramp for an answer; and a share slowed by a loss holds the put's other shares back less
# (each segment's blocks go to every share in turn).  Memory stays bounded: SEND_AHEAD_LONG x SEND_BATCH bytes per
# share at most.  On a short path the CPU bounds a put: four in flight there showed no gain (docs/peers.md).
# Two shares of a put going to one holder share its quota: the bodies past it wait their turn in the sender's lane
# (holder_client.SenderLanes).
SEND_AHEAD_LONG = MAX_BODIES_PER_SENDER
LONG_PATH = 0.05
# Seconds a begun share may go without a request to its holder (the put waiting for its budget or its client)
# before the gateway touches its upload there: well within the holder's holder.ROOM_IDLE, past which an idle upload
# may be aborted to make room for another network's, and its IDLE_TIMEOUT.
KEEP_ALIVE = 20.0
# A holder with no room in memory for a body within its wait answers 503 storage-busy and says when to send it again
# (Retry-After; its upload is as it was): a share's bodies refused so are sent once more after that long, waiting at
# most BUSY_WAIT_MOST, once per share (those refused before its wait ends are sent again as it ends), rather than the
# share dropped from that holder at once.  A begin or a whole share refused so, or 429 for less than BUSY_WAIT_MOST (a
# holder rate limiting this node's requests, or holding all the uploads it takes: a whole share's own refusal in its
# request says so too), is sent once more the same way, rather than the share placed on another holder.
BUSY_WAIT_MOST = 5.0
READ_BATCH = 16  # segments of one share fetched from its holder per request
READ_AHEAD = 1  # requests asked ahead of the one being read
# On a long path (the probes' average round trip to the holder over LONG_PATH seconds) a share's next
# READ_AHEAD_LONG + 1 ranges of READ_BATCH_LONG segments are asked at once, each on a connection of its own: a holder
# sends on the cold direction of a connection, whose window opens a doubling per round trip, so its first round
# trips bound a read there, not the bytes asked, and ranges asked side by side arrive in about the time of one
# (docs/peers.md), where with one range ahead each further range waited for the slowest share's range before it.
# Memory stays bounded: (READ_AHEAD_LONG + 1) x READ_BATCH_LONG blocks per share at most, at 1 MiB segments as many
# bytes as SEND_AHEAD_LONG batches of a put.
READ_BATCH_LONG = 8
READ_AHEAD_LONG = 7


class Holder(Protocol):
    """A share holder on another node, as the gateway uses it (xsc.net.RemoteHolder)."""

    round_trip: float | None  # seconds: the probes' average round trip to its node (None: not known)

    async def begin(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int) -> str: ...
    async def place_whole(self, si: bytes, share: int, size: int, segment_size: int, lease_expiry: int,
                          block: bytes, block_hash: bytes, manifest: bytes) -> None: ...
    async def put_segments(self, upload: str, first: int, blocks: list[bytes]) -> None: ...
    async def commit(self, upload: str, block_hashes: list[bytes], manifest: bytes, *, first: int = 0,
                     blocks: list[bytes] | None = None) -> None:
        """Publish the share; `blocks`: its last blocks (segments first.. to its last), sent with the commit."""
        ...
    async def abort(self, upload: str) -> None: ...
    async def touch(self, upload: str) -> None:
        """Keep an upload nothing was sent to for a while from counting as idle on its holder."""
        ...
    async def meta(self, si: bytes, share: int, segment_count: int | None = None, *,
                   size: int | None = None) -> dict: ...
    async def blocks(self, si: bytes, share: int, first: int, count: int, lengths: list[int],
                     *, timeout: float | None = None) -> list[bytes]: ...
    async def delete(self, si: bytes, share: int) -> None: ...
    async def renew(self, si: bytes, share: int, lease_expiry: int) -> dict:
        """Extend the share's lease to `lease_expiry` (never shortened): {"lease_expiry", "previous"}."""
        ...


class RemoteShareWriter:
    """One share being written to a holder on another node: begun, fed in ordered batches, committed with its last
    batch (one request: the commit's round trip is the last batch's); or, a share of one segment, its block kept until
    it is placed whole (`place_whole`: one request)."""

    def __init__(self, holder: Holder, node: str, si: bytes, share: int, sending: PutBudget | None = None,
                 may_lose: bool = False) -> None:
        """`sending`: the gateway's budget of blocks on their way to holders (put_budget.py), of which the blocks
        added here were taken: each batch gives its bytes back once its request has ended, `undo` those not sent.
        `may_lose`: a holder lost once begun (`holder_lost`) loses the share (`lost`), not its caller (a put's: it
        goes on with the other shares); else it fails the caller as any error does."""
        self.holder, self.node, self.si, self.share = holder, node, si, share
        self.sending, self.may_lose = sending, may_lose
        self.upload: str | None = None
        self.committed = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._next = 0  # the first segment of the pending batch
        self._segments: int | None = None  # the share's segments (from `begin`): its last batch waits for the commit
        self._commit_sent = False
        self._sending: deque[asyncio.Task] = deque()  # batches in flight, oldest first: at most `ahead`
        self.ahead = SEND_AHEAD_LONG if (holder.round_trip or 0.0) > LONG_PATH else SEND_AHEAD
        self.last_sent = 0.0  # (monotonic) when the last request about the upload was sent
        self.lost: PeerError | None = None  # how its holder failed the share once begun (`holder_lost`)
        self.held_before = False  # its holder held this very share already (`held`): nothing is sent
        self._busy_until: float | None = None  # (monotonic) the end of the share's one wait for a busy holder

    async def begin(self, size: int, segment_size: int, lease_expiry: int) -> None:
        """Begin the share's upload; a holder busy or rate limiting this node is asked once more after its Retry-After
        (`busy_wait`)."""
        for again in (False, True):
            try:
                self.upload = await self.holder.begin(self.si, self.share, size, segment_size, lease_expiry)
                break
            except PeerError as err:
                wait = busy_wait(err)
                if again or wait is None:
                    raise
                log.info("share %d: node %s is busy (%s); its begin sent again in %.0f s", self.share, self.node,
                         err, wait)
            await asyncio.sleep(wait)
        self._segments = layout.segment_count(size, segment_size)
        self.last_sent = time.monotonic()

    def held(self) -> None:
        """Its holder holds this very share already (placed by this node: a copy an earlier repair committed and never
        recorded), found by its caller as the begin was refused: it counts as placed, nothing is sent, committed or
        taken back."""
        self.held_before = self.committed = True

    async def keep_alive(self, now: float) -> None:
        """Touch the upload if no request about it was sent for KEEP_ALIVE seconds and none is under way."""
        if self.upload is None or self._commit_sent or self.lost is not None or now - self.last_sent < KEEP_ALIVE \
                or any(not sending.done() for sending in self._sending):
            return
        self.last_sent = now
        await self.holder.touch(self.upload)

    def to(self, holder: Holder, node: str) -> RemoteShareWriter:
        """The same share for another holder, with the blocks not sent yet (a whole share's block, taken of no
        budget: a begun share's blocks come after its begin, so a share moved as it begins has none)."""
        other = RemoteShareWriter(holder, node, self.si, self.share, self.sending, self.may_lose)
        other._pending, other._pending_bytes = list(self._pending), self._pending_bytes
        return other

    async def place_whole(self, size: int, segment_size: int, lease_expiry: int, block_hashes: list[bytes],
                          manifest: bytes) -> None:
        """The share of one segment, its block added and never sent, placed in one request."""
        block, = self._pending
        for again in (False, True):  # a holder busy or rate limiting, for this share alone: as a begin (`begin`)
            try:
                await self.holder.place_whole(self.si, self.share, size, segment_size, lease_expiry, block,
                                              block_hashes[0], manifest)
                break
            except PeerError as err:
                wait = busy_wait(err)
                if again or wait is None:
                    raise
                log.info("share %d: node %s is busy (%s); sent again in %.0f s", self.share, self.node, err, wait)
            await asyncio.sleep(wait)
        self.committed = True

    async def add(self, block: bytes) -> None:
        if self.lost is not None or self.held_before:  # its holder is gone, or has it: nothing more goes there
            if self.sending is not None:
                self.sending.give(len(block))
            return
        self._pending.append(block)
        self._pending_bytes += len(block)
        if self._pending_bytes >= SEND_BATCH and (self._segments is None
                                                  or self._next + len(self._pending) < self._segments):
            await self._flush()

    @property
    def unsent(self) -> int:
        """Bytes of blocks added and not yet on their way."""
        return self._pending_bytes

    async def flush(self) -> None:
        """The blocks added so far on their way, however few (once the share is begun)."""
        if self.upload is not None:
            await self._flush()

    async def _flush(self) -> None:
        await self._answered_so_far()
        if self.lost is not None:
            self._drop_pending()
            return
        if self._pending:
            batch, first, size = self._pending, self._next, self._pending_bytes
            self._pending, self._pending_bytes, self._next = [], 0, first + len(batch)
            self._send(lambda: self.holder.put_segments(self.upload, first, batch), size)

    def _send(self, request: Callable[[], Awaitable[None]], size: int) -> None:
        """One more request of this share under way, carrying `size` bytes of blocks (stopped by `undo` if the put
        fails)."""
        sending = asyncio.ensure_future(self._unless_busy(request))
        self.last_sent = time.monotonic()
        sending.add_done_callback(self._answered)
        if self.sending is not None and size:
            sending.add_done_callback(lambda _: self.sending.give(size))
        self._sending.append(sending)

    async def _unless_busy(self, request: Callable[[], Awaitable[None]]) -> None:
        """`request()`, sent once more if the holder was busy (BUSY_WAIT_MOST)."""
        try:
            return await request()
        except PeerError as err:
            wait = busy_wait(err)
            now = time.monotonic()
            if wait is None or self._busy_until is not None and now > self._busy_until:
                raise
            if self._busy_until is None:
                self._busy_until = now + wait
                log.info("share %d: node %s is busy (%s); sent again in %.0f s", self.share, self.node, err, wait)
        await asyncio.sleep(self._busy_until - time.monotonic())
        await request()

    def _answered(self, _: object) -> None:
        self.last_sent = time.monotonic()  # the holder's last activity was its answer's

    async def _oldest(self) -> None:
        """The oldest request in flight answered.  A holder that failed it as `holder_lost` says has lost the
        share: the put goes on without it (gateway_put `_OnePut.drop_lost`); any other failure fails the put."""
        try:
            await self._sending.popleft()
        except PeerError as err:
            if not (self.may_lose and holder_lost(err)):
                raise
            if self.lost is None:
                log.warning("share %d: node %s failed it during the put (%s); the put goes on without it",
                            self.share, self.node, err)
                self.lost = err

    async def _answered_so_far(self) -> None:
        """The requests answered so far seen (a holder lost is known before more is sent to it), and room made for one
        more in flight."""
        while self._sending and self.lost is None and (len(self._sending) >= self.ahead or self._sending[0].done()):
            await self._oldest()

    @property
    def commit_sent(self) -> bool:
        """Whether its commit went to the holder (which may then hold the share, whatever the answer)."""
        return self._commit_sent

    def _drop_pending(self) -> None:
        if self.sending is not None and self._pending_bytes:
            self.sending.give(self._pending_bytes)
        self._pending, self._pending_bytes = [], 0

    async def commit(self, block_hashes: list[bytes], manifest: bytes) -> None:
        """Send the last batch with the commit, while the batches before it may still be on their way (the holder
        stages them in order, then commits)."""
        if self.held_before:
            return
        await self._answered_so_far()
        if self.lost is not None:
            self._drop_pending()
            return
        last, first, size = self._pending, self._next, self._pending_bytes
        self._pending, self._pending_bytes, self._next = [], 0, first + len(last)
        self._commit_sent = True
        self._send(lambda: self.holder.commit(self.upload, block_hashes, manifest, first=first, blocks=last), size)
        while self._sending and self.lost is None:
            await self._oldest()
        self.committed = self.lost is None

    async def undo(self) -> None:
        """Leave nothing behind on the holder, whatever state the share is in (best effort).  A holder that lost the
        share as no answer or no upload is not asked again (`answers_for`), and a share it held before (`held`) is
        left there."""
        await stop(*self._sending)  # a batch still on its way would wait its turn on the holder for nothing
        self._drop_pending()
        for sending in self._sending:
            if not sending.cancelled():
                sending.exception()  # seen: the put's own error says what failed
        self._sending.clear()
        if self.lost is not None and not answers_for(self.lost) or self.held_before:
            return
        try:
            if self.committed:
                await self.holder.delete(self.si, self.share)
            elif self.upload is not None:
                try:
                    await self.holder.abort(self.upload)
                except PeerError:
                    if not self._commit_sent:
                        raise
                    # The commit may have gone through, its answer lost or stopped here: no upload to abort then,
                    # but a share to take back.
                    await self.holder.delete(self.si, self.share)
        except Exception as exc:  # the holder is gone: it drops staged uploads when it restarts
            log.warning("could not undo share %d on node %s: %s", self.share, self.node, exc)


class RemoteShareReader:
    """Blocks of one share on another node, fetched `batch` segments per request, `ahead` requests ahead of the one
    being read (more of both on a long path: READ_BATCH_LONG, READ_AHEAD_LONG).

    Once the holder fails (unreachable, refused, a cut answer) the reader answers None for every
    block, so the get moves on to other shares instead of waiting on it again."""

    def __init__(self, holder: Holder, si: bytes, share: int, manifest: Manifest, timeout: float,
                 segments: range | None = None) -> None:
        self.holder, self.si, self.share, self.manifest = holder, si, share, manifest
        self.timeout = timeout  # a holder slower than this is left for the other shares
        self.failed: BaseException | None = None
        self._batches: dict[int, asyncio.Future] = {}
        long = (holder.round_trip or 0.0) > LONG_PATH
        self.batch = READ_BATCH_LONG if long else READ_BATCH
        self.ahead = READ_AHEAD_LONG if long else READ_AHEAD
        # Only these segments are ever fetched (a ranged read): batches start at the first.
        segments = segments if segments is not None else range(manifest.segment_count)
        self._base, self._end = segments.start, segments.stop

    def _fetch(self, batch: int) -> asyncio.Future | None:
        first = self._base + batch * self.batch
        if batch not in self._batches and first < self._end:
            count = min(self.batch, self._end - first)
            m = self.manifest
            lengths = [layout.segment_block_length(layout.plaintext_length(m.size, m.segment_size, i))
                       for i in range(first, first + count)]
            task = asyncio.ensure_future(self.holder.blocks(self.si, self.share, first, count, lengths,
                                                            timeout=self.timeout))
            task.add_done_callback(_seen)  # a range asked ahead and never read fails unremarked (get() says why)
            self._batches[batch] = task
        return self._batches.get(batch)

    def ask(self) -> None:
        """Ask for the first ranges now, before the first block is wanted."""
        for batch in range(self.ahead + 1):
            self._fetch(batch)

    def ask_for(self, index: int) -> asyncio.Future | None:
        """The range holding block `index` asked (and the ranges after it, `ahead`), without waiting for it."""
        if self.failed is not None:
            return None
        batch = (index - self._base) // self.batch
        task = self._fetch(batch)
        for ahead in range(batch + 1, batch + 1 + self.ahead):
            self._fetch(ahead)
        for old in [b for b in self._batches if b < batch - 1]:
            self._batches.pop(old)
        return task

    async def get(self, index: int) -> bytes | None:
        task = self.ask_for(index)
        if task is None:
            return None
        try:
            # A range already here (all but a range's first block, as a get goes) is taken without a turn of the
            # loop and a timer of its own.
            blocks = task.result() if task.done() else await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except asyncio.TimeoutError:
            self.failed = TimeoutError(f"no answer within {self.timeout:g} s")
            return None
        except Exception as exc:
            self.failed = exc
            return None
        return blocks[(index - self._base) % self.batch]

    async def close(self) -> None:
        await stop(*self._batches.values())


def _seen(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


async def gather_or_raise(calls: list[Awaitable], places: list[tuple[str, int]]) -> None:
    """Run calls to several holders at once (`places`: the node and share of each); if any fails, raise one
    PeerError summarising every refusal (`summarise_refusals`)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [(node, share, r) for (node, share), r in zip(places, results) if isinstance(r, BaseException)]
    if failed:
        message, hint, refusals = summarise_refusals(failed)
        raise PeerError(message, hint=hint, nodes=sorted({n for n, _, _ in failed}), refusals=refusals)


# What the user can do about a peer's refusal, by its problem code (the rest: see `xsc --verbose`).
REMEDIES = {
    "prepayment-required": "ask for credit, or if it owes you: xsc ledger prepay {node} CREDITS",
    "quota-exceeded": "it is busy with this node's uploads: retry in a moment",
    "storage-busy": "it is busy with other senders' uploads: retry in a moment, or place the file elsewhere",
    "deal-refused": "its ask changed: put the file again",
    "storage-full": "it has no room: free space or add nodes",
    "quarantined": "it quarantined this node; its operator can lift that (xsc peers quarantine rm)",
    "not-admitted": "it does not admit this node (its proof of work or grid secret)",
    "share-exists": "it holds another node's share of this file's storage index, placed there first by a node that "
                    "learnt the index",
}
# Refusals that are the peer's own standing decision about this node (its terms, its room, its quarantine), or its
# standing state (share-exists: it holds a share of the file's storage index that another node placed first: a
# stranger's squat, as a holder cannot tell a share of the file from one of its own making), which no retry of the
# same request changes and the user cannot act on now: a put keeps such a share at home rather than fail
# (gateway_core.start_remote).  Any other refusal (a request the holder found wrong, a busy holder) fails it.
STANDING = frozenset({"prepayment-required", "storage-full", "quarantined", "not-admitted", "share-exists"})


def holder_lost(err: BaseException) -> bool:
    """Whether a holder failed a share after its upload began in a way that loses it the share, not the put: no
    answer, a cut one or none in time (PeerUnreachable: it was killed, restarted or stopped answering), its upload
    gone (404 upload-not-found: aborted to make room for another's, past its deadline, dropped as it restarted), a
    share of the file's storage index another node committed there first (409 share-exists at the commit: a
    stranger's squat, LOST_TO), or a fault of its own (5xx).  Any other refusal (a request it found wrong) still fails
    the put."""
    if isinstance(err, PeerUnreachable):
        return True
    details = (err.details or {}) if isinstance(err, PeerError) else {}
    status = details.get("peer_status")
    return details.get("peer_code") in LOST_TO or (isinstance(status, int) and status >= 500)


# A holder's refusals of a request about an upload it took that leave it without the upload (it aborted it).
LOST_TO = frozenset({"upload-not-found", "share-exists"})


def busy_wait(err: BaseException) -> float | None:
    """The seconds to wait before sending a request a busy holder refused again: 503 storage-busy (its Retry-After, at
    most BUSY_WAIT_MOST), or 429 with a Retry-After of at most BUSY_WAIT_MOST (a holder rate limiting this node's
    requests); None for any other failure, and for a 429 that names a longer wait (a holder holding all the uploads it
    takes from this node: 30 s and more), which a put does not spend waiting: the share goes to another holder."""
    details = (err.details or {}) if isinstance(err, PeerError) else {}
    if details.get("peer_code") == "storage-busy":
        return min(float(details.get("peer_retry_after", 1)), BUSY_WAIT_MOST)
    wait = details.get("peer_retry_after")
    if details.get("peer_status") == 429 and wait is not None and wait <= BUSY_WAIT_MOST:
        return float(wait)
    return None


def answers_for(err: PeerError) -> bool:
    """Whether a holder that lost a share so (`holder_lost`) is worth asking to take back its upload: not one that
    did not answer (asked again, it would keep a put waiting as long; it drops its staged uploads as it restarts, or
    at their deadline, and a copy it may have committed is noted to delete), nor one that holds no upload (LOST_TO)."""
    return not isinstance(err, PeerUnreachable) and (err.details or {}).get("peer_code") not in LOST_TO


def standing(err: BaseException) -> bool:
    """Whether a holder's refusal is one of its STANDING decisions about this node."""
    return isinstance(err, PeerError) and (err.details or {}).get("peer_code") in STANDING


def summarise_refusals(refused: list[tuple[str, int, BaseException]]) -> tuple[str, str, list[dict]]:
    """(one line, what to do, the details) of shares other nodes did not take: who refused which shares, why
    (each reason said once), and the remedy of the first; the details keep every refusal whole (`--verbose`)."""
    by_node: dict[tuple[str, str], list[int]] = {}
    details = []
    for node, share, err in refused:
        code = (getattr(err, "details", {}) or {}).get("peer_code") or getattr(err, "code", "peer-error")
        by_node.setdefault((node, code), []).append(share)
        details.append({"node": node, "share": share, "code": code, "detail": str(err)})
    parts = [f"node {node} refused {'shares' if len(shares) > 1 else 'share'} "
             f"{', '.join(map(str, sorted(shares)))} ({code})" for (node, code), shares in by_node.items()]
    node, code = next(iter(by_node))
    remedy = REMEDIES.get(code, "`xsc health status` shows which peers are up; details: xsc --verbose")
    # What that node said its shares miss, each checked as it was read (net/peer_client.py), is a stranger's figure
    # this node has no price at hand to bound: said as its claim, never put in the command the user is told to run.
    said = ""
    if code == "prepayment-required" and (missing := sum((getattr(err, "details", {}) or {}).get("peer_missing") or 0
                                                         for n, _, err in refused if n == node)):
        said = f" (it says its shares miss {credits_argument(missing)} credits)"
    return "; ".join(parts[:2]) + ("; …" if len(parts) > 2 else ""), remedy.format(node=node) + said, details


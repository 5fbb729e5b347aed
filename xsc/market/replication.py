"""The book's replication between peers: commitments taken from peers (checked, within each sender's quota, a
batch at a time), this node's commitment pushed to its audience, digests swapped (anti-entropy), and the book kept
in LevelDB (`MarketStore`).  The market service (xsc.market.service) publishes this node's offer into it and reads
it; who this node wants commitments of (`interested`) is the market's to say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .. import codec
from ..allocation.core.subscriptions import Subscribers, commitment_audience, differing, parse_digest, short_hash
from ..errors import InvalidArgument, PeerError, QuotaExceeded, UnknownPeer, XscError
from ..net.peer_client import dumps
from ..tasks import Quota, now_ms
from .core.book import Book, MarketCommitment, parse_commitment
from .store import MarketStore

log = logging.getLogger(__name__)

MAX_COMMITMENTS = 1001  # per exchange: one per peer the directory can hold, and this node's
BYTES_PER_CHECK = 2048  # bytes of a message of commitments per commitment to check its sender must have left
RECEIVE_BATCH = 16  # commitments checked (an Ed25519 verify each: ~0.4 ms of CPU at load 20) before the loop is let go
# ... or fewer: the seconds of checking after which the loop is let go all the same.  A /health request takes some
# five turns of the loop, and each waited behind a whole batch of 16 (3-8 ms at load 2): 40-80 ms in a flood.
RECEIVE_SLICE = 0.001
DIGEST_BYTES = 1024**2  # commitments a digest is answered with, in bytes (then one more at most; the rest next time)
# Bytes of a peer's answer read at most.  A commitment travels in a push, whose body is at most the peer API's
# (node/peer_routes.py: JSON_MAX), so none an honest node holds is longer; a push is answered with a count and a
# digest, a pull with one commitment at most for each participant its digest names, DIGEST_BYTES of them and the one
# past them at most, and a digest.
COMMITMENT_BYTES = 1024**2
PUSH_ANSWER = 4 * 1024
CHANGES_KEPT = 4096  # the newest changes of the book remembered (`changed_since`); more since: made again whole
FRAMING = 4 * 1024


def pull_answer_bound(participants: int) -> int:
    """The most bytes an honest answer to a digest of `participants` takes."""
    return min(participants * COMMITMENT_BYTES, DIGEST_BYTES + COMMITMENT_BYTES) + FRAMING


def stored_book(store: MarketStore, peers: Any, me: str, bucket_seconds: int) -> Book:
    """The book as LevelDB holds it: the commitments that still parse, of nodes still known (the others deleted)."""
    book = Book(bucket_seconds=bucket_seconds)
    for value in store.commitments():
        try:
            commitment = parse_commitment(codec.loads(value))
        except (XscError, ValueError) as err:
            log.warning("dropping a stored market commitment that no longer parses: %s", err)
            continue
        if peers is not None and commitment.participant != me and not peers.known(commitment.participant):
            store.forget(commitment.participant)  # compacted on restart: a node no longer known is not kept
            continue
        book.receive(commitment)
    return book


class BookReplication:
    def __init__(self, *, me: str, store: MarketStore, peers: Any, bucket_seconds: int,
                 interested: Callable[[], set[str]], subscribers: Subscribers | None,
                 limiter: Quota | None = None) -> None:
        self.me = me
        self.store = store
        self.peers = peers  # xsc.market.service.PeerView; None: a node on its own (tests)
        self.book = stored_book(store, peers, me, bucket_seconds)
        self.interested = interested  # () -> the participants whose commitments this node wants
        self.subscribers = subscribers  # who gets our commitment (None: every peer up)
        self.limiter = limiter  # each peer's quota of commitments to check (None: no quota)
        self.version = 0  # grows whenever the book changes
        self.on_change: list[Callable[[], None]] = []  # called whenever the book changed (clearing, allocation)
        self._payload: tuple[int, list[dict]] = (-1, [])  # the book as JSON, and the version it was made of
        self._jsons: dict[str, tuple[str, dict]] = {}  # participant -> (signature, JSON) of its held commitment
        self.peer_digests: dict[str, str] = {}  # peer -> the digest of its book at our last exchange
        self._kinds_pushed: set[str] = set()
        self._changes: deque[tuple[int, str]] = deque(maxlen=CHANGES_KEPT)  # (version, participant) of each change
        self.bytes_sent = 0  # bodies of the commitment pushes, digests and answers this node sent

    def show(self, commitment: MarketCommitment) -> None:
        """This node's own commitment, newly signed and stored, into the book."""
        self.book.receive(commitment)
        self.changed_book((commitment.participant,))

    def forget(self, participant: str) -> bool:
        """A node was removed: its commitment leaves the book and LevelDB; whether it was held."""
        self._jsons.pop(participant, None)
        if not self.book.forget(participant):
            return False
        self.store.forget(participant)
        self.peer_digests.pop(participant, None)
        self.changed_book((participant,))
        return True

    def receive(self, items: Any) -> int:
        """Peers' commitments; returns how many changed the book.  Invalid ones are skipped (logged).  All at once:
        a message from the network goes through `take`, which lets the event loop go between batches."""
        return self._take([c for item in self._commitment_list(items) if (c := self._check(item)) is not None])

    def check_quota(self, sender: str, size: int) -> None:
        """Before a peer's message of commitments (`size` bytes) is even parsed: QuotaExceeded unless its quota
        (`market.commitment_rate`) has one commitment to check left per BYTES_PER_CHECK of the message, or as many
        as its last message refused for its commitments wanted (`RateLimiter.require`).  A
        flood's messages of 1,000 new commitments were parsed only to be refused, ~17 a second of ~700 KB; the
        held commitments a message may carry cost nothing, but are bytes to parse all the same."""
        if self.limiter is not None:
            self.limiter.require(sender, time.monotonic(), f"peer {sender}", size / BYTES_PER_CHECK)

    async def take(self, items: Any, sender: str | None = None) -> int:
        """`receive`, RECEIVE_BATCH commitments (or RECEIVE_SLICE seconds) at a time with the event loop let go
        between batches: a full message (MAX_COMMITMENTS, each an Ed25519 verify) held the loop some 400 ms of CPU
        at once.

        The commitments worth checking are charged to `sender`'s quota (`market.commitment_rate`) before any is
        checked: past it, QuotaExceeded and nothing is read (a peer's flood of new commitments kept the loop
        busy back to back, where its request rate was far inside the peer rate limit)."""
        worth = [item for item in self._commitment_list(items) if self._worth_checking(item)]
        if self.limiter is not None and sender is not None and worth:
            self.limiter.check(sender, time.monotonic(), f"peer {sender}", len(worth))
        changed, at = 0, 0
        while at < len(worth):
            checked, until = [], time.perf_counter() + RECEIVE_SLICE
            for item in worth[at:at + RECEIVE_BATCH]:
                at += 1
                if (commitment := self._parsed(item)) is not None:
                    checked.append(commitment)
                if time.perf_counter() >= until:
                    break
            changed += self._take(checked)
            await asyncio.sleep(0)
        return changed

    @staticmethod
    def _commitment_list(items: Any) -> list:
        if not isinstance(items, list):
            raise InvalidArgument("commitments must be a list", hint='send {"commitments": [...]}')
        if len(items) > MAX_COMMITMENTS:
            raise InvalidArgument(f"at most {MAX_COMMITMENTS} commitments per message")
        return items

    def _worth_checking(self, item: Any) -> bool:
        """Cheap tests before a commitment's signature is checked."""
        claimed = item.get("participant") if isinstance(item, dict) else None
        if claimed == self.me or (self.peers is not None and not (isinstance(claimed, str)
                                                                   and self.peers.known(claimed))):
            return False  # ours echoed back, or not a peer's: not worth checking its signature
        held = self.book.get(claimed)
        # the very commitment held (gossip sends the whole book each time): nothing to check
        return held is None or item.get("signature") != held.signature

    def _check(self, item: Any) -> MarketCommitment | None:
        """A peer's commitment parsed and its signature checked, or None for one not worth taking."""
        return self._parsed(item) if self._worth_checking(item) else None

    def _parsed(self, item: Any) -> MarketCommitment | None:
        """A commitment worth checking (`_worth_checking`), parsed and its signature checked, or None."""
        try:
            commitment = parse_commitment(item, now_ms=now_ms())  # future-dated ones refused too
        except XscError as err:
            log.info("ignoring a market commitment: %s", err)
            return None
        if commitment.participant == self.me:
            return None  # our own, echoed back: ours is always the newest
        if self.peers is not None and not self.peers.known(commitment.participant):
            return None  # only peers take part: a stranger's key (or a removed node) is never in the book
        return commitment

    def _take(self, commitments: list[MarketCommitment]) -> int:
        taken = []
        for commitment in commitments:
            if self.book.receive(commitment).value != "stale":
                held = self.book.get(commitment.participant)
                taken.append((held.participant, dumps(self._json_of(held))))
        self.store.keep(taken)
        if taken:
            self.changed_book([participant for participant, _ in taken])
        return len(taken)

    def changed_book(self, participants: Iterable[str]) -> None:
        """The commitments of `participants` were taken, replaced or forgotten: a new version of the book."""
        self.version += 1
        self._changes.extend((self.version, p) for p in participants)
        for hook in self.on_change:
            hook()

    def changed_since(self, version: int) -> set[str] | None:
        """The participants whose commitment changed after `version` of the book, or None when they are no longer all
        remembered (CHANGES_KEPT): who takes part and the clearing are kept up with the changes alone, not the book."""
        if version > self.version:
            return None
        complete = len(self._changes) < CHANGES_KEPT or self._changes[0][0] <= version
        if not complete:
            return None
        changed = set()
        for at, participant in reversed(self._changes):
            if at <= version:
                break
            changed.add(participant)
        return changed

    def payload(self) -> list[dict]:
        """Every held commitment as JSON, made once per version of the book (a gossip round sends it to every
        peer, and each swap answers with it: 1,000 commitments are tens of ms of CPU)."""
        if self._payload[0] != self.version:
            self._payload = (self.version, [self._json_of(c) for c in self.book.commitments()])
        return self._payload[1]

    def _json_of(self, commitment: MarketCommitment) -> dict:
        """A held commitment as JSON, made once (when it was taken, a batch at a time)."""
        made = self._jsons.get(commitment.participant)
        if made is None or made[0] != commitment.signature:
            made = self._jsons[commitment.participant] = (commitment.signature, commitment.to_json())
        return made[1]

    def _count(self, message: dict, times: int = 1) -> None:
        # orjson (`dumps`): json.dumps of a 1,000-commitment answer held the loop ~40 ms, for a counter
        self.bytes_sent += len(dumps(message)) * times

    async def push_own(self, everyone: bool = False) -> None:
        """Send our commitment to its audience (the subscribers; every peer up without subscriptions, or when
        `everyone`: a node that leaves tells every peer)."""
        own = self.book.get(self.me)
        if self.peers is None or own is None:
            return
        kinds = {b.slot.kind for b in own.bids}
        targets = self.peers.up_peers()
        if self.subscribers is not None and not everyone:
            audience = commitment_audience(self.subscribers, kinds, self._kinds_pushed, now_ms())
            targets = [d for d in targets if d.id in audience]
        self._kinds_pushed = kinds
        message = {"commitments": [own.to_json()], "push": True, "digest": self.book.digest()}
        self._count(message, len(targets))
        results = await asyncio.gather(*(self._send_own(d, message) for d in targets), return_exceptions=True)
        for d, result in zip(targets, results):
            if isinstance(result, PeerError):
                log.debug("market push to %s failed: %s", d.id, result)
            elif isinstance(result, BaseException):
                log.error("market push to %s failed", d.id, exc_info=result)

    async def _send_own(self, d, message: dict) -> None:
        response = await self.peers.request(d.url, "POST", "/v1/peer/market", json=message, to=d.id,
                                            max_size=PUSH_ANSWER)
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("digest"), str):
            self.peer_digests[d.id] = body["digest"]

    async def pull(self, d, participants) -> int:
        """Anti-entropy with one peer: our digest of `participants` ({participant: short hash, "" when we hold
        none}); it answers with the commitments it holds that we lack or hold another of."""
        digest = {}
        for p in sorted(set(participants) - {self.me}):
            held = self.book.get(p)
            digest[p] = short_hash(held.signature) if held is not None else ""
        if not digest:
            return 0
        message = {"commitments": digest}
        self._count(message)
        response = await self.peers.request(d.url, "POST", "/v1/peer/market/digest", json=message, to=d.id,
                                            max_size=pull_answer_bound(len(digest)))
        body = response.json()
        if not isinstance(body, dict):
            response.shapeless(f"peer {d.id} answered a digest of the book with something else")  # struck
            return 0
        answered = body.get("commitments", [])
        if isinstance(answered, list):  # only those asked for: a peer cannot fill the book through a pull
            answered = [c for c in answered if isinstance(c, dict) and c.get("participant") in digest]
        try:
            changed = await self.take(answered, d.id)
        except QuotaExceeded as err:
            log.info("not taking %s's answer now: %s", d.id, err)
            return 0
        if isinstance(body.get("digest"), str):
            self.peer_digests[d.id] = body["digest"]
        return changed

    def _missing(self) -> list:
        """Peers we want the commitment of, not known to be down, whose commitment this node has not got."""
        peers = self.peers
        if peers is None or not peers.peers():  # a node on its own wants nobody's (a put asks each time)
            return []
        # From those wanted (the market keeps them): the book holds a neighbourhood's commitments, not every peer's.
        # Sorted once found: every round asks, and nearly always lacks nobody.
        book = self.book
        lacking = sorted(p for p in self.interested() if book.get(p) is None and peers.up(p))
        return [d for d in map(peers.get, lacking) if d is not None]

    async def fill_book(self, timeout: float = 2.0) -> None:
        """Ask at once the peers we want but hold no commitment of (a node that just joined), before matching."""
        missing = self._missing()
        if missing:
            await self.pull_own(missing, timeout)

    async def pull_own(self, peers: list, timeout: float) -> None:
        """Each of `peers` asked at once for its own commitment, for at most `timeout` seconds."""
        await asyncio.wait({asyncio.ensure_future(self.pull_quietly(d, [d.id])) for d in peers}, timeout=timeout)

    async def pull_quietly(self, d, participants) -> None:
        try:
            await self.pull(d, participants)
        except PeerError as err:
            log.debug("market digest exchange with %s failed: %s", d.id, err)

    async def exchange_answer(self, items: Any, push: bool = False, sender: str | None = None,
                        digest: Any = None) -> dict[str, Any]:
        """A peer's side of a book swap: take its commitments, answer with ours and the digest after (a `push`:
        only how many changed the book, and the digest).  `digest`: the sender's book's, as it sent it."""
        changed = await self.take(items, sender)
        known = sender is not None and (self.peers is None or self.peers.known(sender))
        if known and isinstance(digest, str) and len(digest) == 64:
            self.peer_digests[sender] = digest
        out = {"changed": changed, "digest": self.book.digest()} if push else {
            "commitments": self.payload(), "digest": self.book.digest()}
        self._count(out)
        return out

    def digest_answer(self, sender: str, body: Any) -> dict[str, Any]:
        """A peer's digest {"commitments": {participant: short hash}}: the commitments held here that it lacks or
        holds another of (DIGEST_BYTES of them and the one past them at most: the rest at its next digest), and our
        book's digest.  Bounded before anything is read; a stranger refused (403)."""
        if not isinstance(body, dict):
            raise InvalidArgument('send {"commitments": {participant: hash}}')
        digest = parse_digest(body.get("commitments"), "commitments")
        if self.peers is not None and not self.peers.known(sender):
            raise UnknownPeer(f"{sender} is not a known peer of this node",
                              hint="a node joins first (xsc peers add); only peers exchange digests")
        held = {p: self.book.get(p) for p in digest if self.book.get(p) is not None}
        commitments: list[dict] = []
        room = DIGEST_BYTES
        for commitment in differing(digest, held):
            if room < 0:
                break
            form = self._json_of(commitment)
            commitments.append(form)
            room -= len(dumps(form)) + 1
        out = {"commitments": commitments, "digest": self.book.digest()}
        self._count(out)
        return out

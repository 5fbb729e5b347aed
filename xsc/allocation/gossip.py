"""Allocation gossip: subscriptions, pushes and anti-entropy digests of allocation records between peers.

- **Subscriptions** (`xsc.allocation.core.subscriptions`): at each peer the node subscribes to what its rounds read
  of it (the seed's derived subgroups: mutual partners everything, one-way beneficiaries their needs and receipts,
  providers for it their commitments and states), renews every third of SUBSCRIPTION_TTL, and keeps who subscribed
  to it (bounded, expiring).  The market's commitment goes to the same subscribers (the market holds the same
  `Subscribers`).
- **Pushes**: a record a round published goes to the parties it names (now or in the record before) and its
  subscribers (`POST /v1/peer/allocation`).
- **Anti-entropy**: `pull` sends one peer a digest of what this node holds of the publishers it wants (`POST
  /v1/peer/allocation/digest`), and takes the records it lacks or holds another of from the answer: at most
  DIGEST_BYTES of them an answer (the rest come at the next pull, the digest then showing what came).

A peer's answer is read only as far as an honest one goes (ANSWER_BYTES), and one longer is refused and counted
(`oversized`).  A record travels in a push, whose body is at most the peer API's (RECORD_BYTES), so no record an
honest node passes on is longer: a push is answered with at most the answerer's own state and receipt, a
subscription with those and its market commitment, a digest with DIGEST_BYTES of records and the record past them.

The records themselves are held by `AllocationService` (its `states` and `receipts`), which receives what arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from ..errors import InvalidArgument, PeerError, PeerRefused, UnknownPeer, XscError
from ..identity import Identity
from ..net.peer_client import dumps
from ..tasks import at_most, now_ms
from .core.records import Held, ReceiptRecord, StateRecord, refusal_reason
from .core.subscriptions import (
    MAX_SUBSCRIPTIONS,
    Subscribers,
    differing,
    parse_digest,
    parse_subscription,
    short_hash,
    sign_subscription,
)

log = logging.getLogger(__name__)

PEER_PATH = "/v1/peer/allocation"
SUBSCRIBE_PATH = "/v1/peer/allocation/subscribe"
DIGEST_PATH = "/v1/peer/allocation/digest"
SUBSCRIPTION_TTL = 60.0  # seconds a subscription lives; renewed every third of it (and when its topics change)
SUBSCRIBE_RETRY = 5.0  # seconds before a subscription that failed is sent again
SUBSCRIPTIONS_AT_ONCE = 64  # subscriptions in flight at most (as probes: peers/probes.py)
RECORD_BYTES = 1024**2  # a record's JSON at most: a push's body is at most this (node/peer_routes.py: JSON_MAX)
DIGEST_BYTES = 1024**2  # records a digest is answered with, in bytes (then one more at most)
FRAMING = 4 * 1024  # an answer's other fields ("changed", "refused", "accepted") and its brackets
ANSWER_BYTES = {  # bytes of a peer's answer read at most, by the path asked
    PEER_PATH: 2 * RECORD_BYTES + FRAMING,
    SUBSCRIBE_PATH: 3 * RECORD_BYTES + FRAMING,
    DIGEST_PATH: DIGEST_BYTES + RECORD_BYTES + FRAMING,
}


class AllocationGossip:
    """Who subscribed to this node's records, where it subscribes, and the bytes it sends for either."""

    def __init__(self, *, identity: Identity, peers: Any, market: Any, subscribers: Subscribers, states: Held,
                 receipts: Held, receive: Callable[[dict], dict], refuse: Callable[[str], None],
                 wake: Callable[[], None]) -> None:
        self.identity = identity
        self.me = identity.id
        self.peers = peers  # a PeerView (None: a node on its own)
        self.market = market  # the book, and what this node subscribes to (`interests`)
        self.subscribers = subscribers  # who subscribed to this node's records (and its market commitment)
        self.states, self.receipts = states, receipts  # the records held (AllocationService's)
        self.receive = receive  # takes a message of records (AllocationService.receive)
        self.refuse = refuse  # counts a refusal by its reason
        self.wake = wake  # the allocation loop runs again soon
        self.subscribed: dict[str, tuple[frozenset[str], float]] = {}  # peer -> (topics, when sent) we asked it for
        self.bytes_sent = 0
        self.bytes_by: dict[str, int] = {"records": 0, "subscriptions": 0, "digests": 0}  # what bytes_sent was for
        self._named: dict[str, set[str]] = {"state": set(), "receipt": set()}  # named in our last published record
        self._greeted: set[str] = set()  # peers that took a subscription of ours since we started
        self._retry_at: dict[str, float] = {}  # peer -> when to try a subscription that failed again

    def check_peer(self, sender: str) -> None:
        """Refuse (UnknownPeer) a message from a node this one does not know, before any of it is read."""
        if self.peers is not None and not self.peers.known(sender):
            self.refuse("unknown peer")
            raise UnknownPeer(f"{sender} is not a known peer of this node",
                              hint="a node joins first (xsc peers add); only peers subscribe or exchange digests")

    def subscribe(self, sender: str, body: Any) -> dict:
        """A peer's subscriptions to this node's records: {"subscriptions": [signed Subscription, ...]}.  In this
        order: at most MAX_SUBSCRIPTIONS (else 400); the sender a known peer (else 403, before any signature is
        checked); each one the sender's own and addressed to this node; then parsed and its signature checked;
        then kept (at most `Subscribers.max_total` subscribers).  Answers with this node's current records of
        the topics it took, so a new subscriber starts full."""
        if not isinstance(body, dict) or not isinstance(body.get("subscriptions"), list):
            raise InvalidArgument('send {"subscriptions": [...]}')
        items = body["subscriptions"]
        if len(items) > MAX_SUBSCRIPTIONS:
            self.refuse("oversized")
            raise InvalidArgument(f"{len(items)} subscriptions in one message (at most {MAX_SUBSCRIPTIONS})")
        self.check_peer(sender)
        now = now_ms()
        taken: set[str] = set()
        before = self.subscribers.topics(sender, now)
        if (not before or body.get("fresh") is True) and sender in self.subscribed:
            # A subscriber new here or that says it just started (so it lost our subscription): subscribe again.
            self.subscribed[sender] = (frozenset(), 0.0)
            self.wake()
        for item in items:
            if not isinstance(item, dict) or item.get("subscriber") != sender or item.get("publisher") != self.me:
                self.refuse("not the sender's")
                raise InvalidArgument("a subscription names its sender as subscriber and this node as publisher")
            try:
                sub = parse_subscription(item, now_ms=now)
            except XscError as err:
                self.refuse(refusal_reason(err))
                raise
            if not self.subscribers.add(sub, now):
                self.refuse("too many subscribers")
                raise InvalidArgument(f"this node keeps at most {self.subscribers.max_total} subscribers",
                                      hint="try again later")
            taken |= set(sub.topics)
        taken -= before  # a renewal is answered with nothing more: the pushes kept it current
        out: dict[str, Any] = {"accepted": len(items)}
        state, receipt = self.states.get(self.me), self.receipts.get(self.me)
        if "state" in taken and state is not None:
            out["states"] = [state.to_json()]
        if "receipt" in taken and receipt is not None:
            out["receipts"] = [receipt.to_json()]
        mc = self.market.book.get(self.me)
        kinds = {b.slot.kind for b in mc.bids} if mc is not None else set()
        if mc is not None and ("commitment" in taken or any(f"needs:{k}" in taken for k in kinds)):
            out["commitments"] = [mc.to_json()]
        self.count("subscriptions", out)
        return out

    def digest_answer(self, sender: str, body: Any) -> dict:
        """A peer's digest {"states": {publisher: hash}, "receipts": {...}}: the records held here that it lacks
        or holds another of.  Bounded before anything is read (MAX_DIGEST per kind), a stranger refused (403)."""
        if not isinstance(body, dict):
            raise InvalidArgument('send {"states": {publisher: hash}, "receipts": {publisher: hash}}')
        try:
            states, receipts = parse_digest(body.get("states"), "states"), parse_digest(body.get("receipts"), "receipts")
        except XscError:
            self.refuse("oversized")
            raise
        self.check_peer(sender)
        out: dict[str, list] = {"states": [], "receipts": []}
        room = DIGEST_BYTES
        for kind, digest, held in (("states", states, self.states), ("receipts", receipts, self.receipts)):
            for record in differing(digest, dict(held.items())):
                if room <= 0:
                    break  # the rest at the peer's next digest, which shows what this answer brought
                form = record.to_json()
                size = len(dumps(form)) + 1
                if size > RECORD_BYTES:
                    continue  # one no push could carry, nor any peer read
                room -= size
                out[kind].append(form)
        self.count("digests", out)
        return out

    def interests(self) -> dict[str, frozenset[str]]:
        """peer -> the topics this node subscribes to at it (`MarketService.interests`)."""
        return self.market.interests()

    def count(self, what: str, message: dict) -> int:
        size = len(dumps(message))
        self.bytes_sent += size
        self.bytes_by[what] += size
        return size

    async def maintain_subscriptions(self) -> None:
        """Subscribe where `interests` changed, renew what is due (every third of SUBSCRIPTION_TTL), and say
        so where nothing is wanted any more (an empty subscription)."""
        if self.peers is None:
            return
        want = self.interests()
        now = time.monotonic()
        calls = []
        # Those wanted and those subscribed at, not every peer: this runs twice a second.
        for peer_id in sorted(want.keys() | self.subscribed.keys()):
            topics = want.get(peer_id, frozenset())
            held = self.subscribed.get(peer_id)
            if held is None and not topics:
                continue
            if held is not None and held[0] == topics and now - held[1] < SUBSCRIPTION_TTL / 3:
                continue
            d = self.peers.get(peer_id)
            if d is None:
                continue
            if not self.peers.up(d.id) or self._retry_at.get(d.id, 0.0) > now:
                continue
            if topics:
                self.subscribed[d.id] = (topics, now)
            else:
                self.subscribed.pop(d.id, None)
            calls.append((d, topics))
        # signed as they go, a few at a time: a directory of 1,000 peers recognising this node asked for 1,000
        await at_most(SUBSCRIPTIONS_AT_ONCE, (self._send_subscription(d, topics) for d, topics in calls))

    async def _send_subscription(self, d, topics: frozenset[str]) -> None:
        sub = sign_subscription(self.identity, d.id, topics, now_ms() + int(SUBSCRIPTION_TTL * 1000))
        message: dict[str, Any] = {"subscriptions": [sub.to_json()]}
        if d.id not in self._greeted:
            message["fresh"] = True  # our first since we started: it re-subscribes here (we hold none of its)
        self.count("subscriptions", message)
        try:
            response = await self.peers.request(d.url, "POST", SUBSCRIBE_PATH, json=message, to=d.id,
                                                max_size=ANSWER_BYTES[SUBSCRIBE_PATH])
            answer = response.json()
        except PeerError as err:
            self.subscribed.pop(d.id, None)  # asked again after SUBSCRIBE_RETRY (a slow peer must not hold up rounds)
            self._retry_at[d.id] = time.monotonic() + SUBSCRIBE_RETRY
            self._count_cut_off(err)
            log.debug("subscription at %s failed: %s", d.id, err)
            return
        except Exception:  # noqa: BLE001 -- one peer's bad answer must not end the pass
            self.subscribed.pop(d.id, None)
            self._retry_at[d.id] = time.monotonic() + SUBSCRIBE_RETRY
            log.exception("subscription at %s failed", d.id)
            return
        self._retry_at.pop(d.id, None)
        self._greeted.add(d.id)
        if isinstance(answer, dict):
            if isinstance(answer.get("commitments"), list):
                self.market.receive(answer["commitments"][:1])
            self.receive({"states": answer.get("states", [])[:1] if isinstance(answer.get("states"), list) else [],
                          "receipts": answer.get("receipts", [])[:1]
                          if isinstance(answer.get("receipts"), list) else []})

    def digest(self) -> dict[str, dict[str, str]]:
        """What this node holds of the publishers it wants (its interests, and whatever it holds): a digest."""
        want = self.interests()
        out: dict[str, dict[str, str]] = {}
        for kind, held in (("state", self.states), ("receipt", self.receipts)):
            owners = {p for p, t in want.items() if kind in t} | {p for p in held.owners() if p != self.me}
            out[kind + "s"] = {p: short_hash(held.get(p).signature) if held.get(p) is not None else ""
                               for p in sorted(owners)}
        return out

    async def pull(self, d) -> int:
        """Anti-entropy with one peer: send it our digest, take the records it answers; returns how many
        changed what is held."""
        message = self.digest()
        if not message["states"] and not message["receipts"]:
            return 0
        self.count("digests", message)
        try:
            response = await self.peers.request(d.url, "POST", DIGEST_PATH, json=message, to=d.id,
                                                max_size=ANSWER_BYTES[DIGEST_PATH])
            answer = response.json()
        except PeerError as err:
            self._count_cut_off(err)
            log.debug("allocation digest exchange with %s failed: %s", d.id, err)
            return 0
        if not isinstance(answer, dict):
            return 0
        try:
            return self.receive({"states": answer.get("states", []), "receipts": answer.get("receipts", [])})["changed"]
        except XscError as err:  # a peer's answer that is not lists of records: counted, as a push of it would be
            self.refuse(refusal_reason(err))
            log.debug("allocation digest exchange with %s: %s", d.id, err)
            return 0

    # --- sending ------------------------------------------------------------------------------------
    def own(self) -> dict:
        state, receipt = self.states.get(self.me), self.receipts.get(self.me)
        return {"states": [state.to_json()] if state else [], "receipts": [receipt.to_json()] if receipt else []}

    def targets(self) -> list:
        if self.peers is None:
            return []
        return self.peers.up_peers()

    def _audience(self, record) -> set[str]:
        """Who gets `record`: the parties it names (now, and in the record before it) and its subscribers."""
        if isinstance(record, StateRecord):
            kind = "state"
            named = {r for _, r, _, _, _ in record.allocations} | {r for r, _ in record.wanted}
        else:
            kind = "receipt"
            named = {p for e in record.needs.values() for p in (*e.by_provider, *e.wanting)}
        out = named | self._named[kind] | self.subscribers.of(kind, now_ms())
        self._named[kind] = named
        out.discard(self.me)
        return out

    async def push(self, records: list, *, everyone_asks: bool = False, only: list | None = None) -> int:
        """Send each of `records` to its audience (`_audience`) among the peers that are up (or to `only`, all
        of them); returns the bytes sent."""
        targets = only if only is not None else self.targets()
        audiences = {id(r): self._audience(r) for r in records} if only is None else None
        sent = 0
        calls = []
        for d in targets:
            mine = [r for r in records if audiences is None or d.id in audiences[id(r)]]
            if not mine:
                continue
            message: dict[str, Any] = {"states": [r.to_json() for r in mine if isinstance(r, StateRecord)],
                                       "receipts": [r.to_json() for r in mine if isinstance(r, ReceiptRecord)]}
            if everyone_asks:
                message["ask"] = True
            sent += self.count("records", message)
            calls.append(self._send(d, message))
        await asyncio.gather(*calls)
        return sent

    async def _send(self, d, message: dict) -> None:
        try:
            response = await self.peers.request(d.url, "POST", PEER_PATH, json=message, to=d.id,
                                                max_size=ANSWER_BYTES[PEER_PATH])
            answer = response.json()
            if isinstance(answer, dict) and ("states" in answer or "receipts" in answer):
                self.receive({"states": answer.get("states", []), "receipts": answer.get("receipts", [])})
        except PeerError as err:
            self._count_cut_off(err)
            log.debug("allocation push to %s failed: %s", d.id, err)
        except XscError as err:  # its answer is not lists of records: counted, not logged with a traceback
            self.refuse(refusal_reason(err))
            log.debug("allocation push to %s: %s", d.id, err)
        except Exception:  # noqa: BLE001 -- one peer's bad answer must not end the round
            log.exception("allocation push to %s failed", d.id)

    def _count_cut_off(self, err: PeerError) -> None:
        """A peer's answer longer than an honest one (ANSWER_BYTES) is refused as a record past its bounds is."""
        if isinstance(err, PeerRefused) and "answer_limit" in err.details:
            self.refuse("oversized")

    def forget(self, participant: str) -> None:
        """A node was removed: neither its subscriptions nor ours at it are kept (our next one, if it comes back,
        says it is fresh: it lost its subscriptions here too)."""
        self.subscribers.forget(participant)
        self.subscribed.pop(participant, None)
        self._retry_at.pop(participant, None)
        self._greeted.discard(participant)

    def view(self) -> dict[str, Any]:
        return {"bytes_sent": self.bytes_sent, "bytes_by": dict(self.bytes_by),
                "subscribers": self.subscribers.view(now_ms()),
                "subscribed": {p: sorted(t) for p, (t, _) in sorted(self.subscribed.items())}}

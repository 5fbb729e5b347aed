"""The market on a node: its own offer, the replicated book, clearing and matching (the asyncio and
LevelDB shell around the pure core of this package).  Routes: node/http/market.py.

- **Offer.** The node publishes capacity slots for what it really has -- free storage bytes and
  compute fuel -- for the current time bucket and the next, each with an ask from its pricing
  policy (the ask rises with utilization: `self.offer`, xsc.market.offer).  Need slots of puts and invokes in
  progress are published with it.  The commitment is signed and stamped with an Interval Tree Clock; the stamp
  is kept in LevelDB so it only grows across restarts.
- **Book.** Commitments travel between peers (`POST /v1/peer/market`): pushed on every change
  (debounced by `market.publish_delay`) to the subscribers (`audience`, from the allocation service;
  every peer without it), and pulled by digest (`POST /v1/peer/market/digest`) from a random peer
  we want every third of the freshness window.  Stale ones are ignored, concurrent ones merged
  (xsc.market.Book); `digest` says which book a node holds.  The replication is `BookReplication`
  (xsc.market.replication), its records `MarketStore` (xsc.market.store).
- **Clearing.** The call market is cleared per kind and bucket over the orders of those taking part, by the rule
  every deal matches by (xsc.market.clearing), whenever the book or who takes part changed (lazily, on the next read
  or round), and each new clearing price is kept in LevelDB for `xsc market prices`.
- **Recognition.** The weights this node publishes: what the user set (`xsc market recognize`),
  else derived: earned by the money exchanged with a peer (what it paid us, what we paid it for work
  it delivered), a peer that is up a precondition (xsc.market.recognition).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol


from .. import codec
from ..db import Database
from ..itc import Stamp
from ..allocation.core.subscriptions import Subscribers, interests
from ..errors import InvalidArgument, PeerError, quoted
from ..config import MarketSection
from ..identity import Identity, parse_public_id
from ..net.peer_client import dumps
from .core.backing import backed
from .clearing import ShownClearing
from .availability import PeerAvailability
from .core.book import MarketCommitment, sign_commitment
from .core.models import Bid
from .lookup import ProviderLookup, providers_in
from .needs import NeedRegistry
from .offer import Offer
from .prices import Prices
from .recognition import Recognition, RecognisingMe, check_weight
from .replication import BookReplication
from .store import MarketStore
from ..tasks import Quota, in_pool, now_ms, woken

log = logging.getLogger(__name__)



class PeerView(Protocol):
    """The peers as the market sees them (xsc.peers.PeerService)."""

    def peers(self) -> list: ...
    def get(self, node_id: str) -> Any: ...
    def state_version(self) -> tuple: ...
    def flips_version(self) -> tuple: ...  # (these four optional: a view without them is looked at whole)
    def flipped_since(self, version: tuple) -> set[str] | None: ...
    def availability_version(self) -> tuple: ...
    def availability_changed_since(self, version: tuple) -> set[str] | None: ...
    def known(self, node_id: str) -> bool: ...
    def availability(self, node_id: str) -> Any: ...
    def up(self, node_id: str) -> bool: ...
    def up_peers(self) -> list: ...
    async def request(self, peer_url: str, method: str, path: str, **kwargs: Any) -> Any: ...


class MarketService:
    def __init__(self, *, config: MarketSection, identity: Identity, db: Database, peers: PeerView | None,
                 needs: NeedRegistry, weights: Recognition, subscribers: Subscribers | None, compute_threads: int,
                 storage_usage: Callable[[], tuple[int, int]], gossip_interval: float,
                 pool: Executor | None = None, limiter: Quota | None = None, credit_lines: Any = None,
                 find_providers: Callable[[str, int, dict], Awaitable[Any]] | None = None,
                 web: bool = False) -> None:
        self.config = config
        self.pool = pool  # where matchings run (None: asyncio's default executor)
        self.identity = identity
        self.me = self.identity.id
        self.db = db
        self.peers = peers  # None: a node on its own (tests)
        self.offer = Offer(me=self.me, config=config, compute_threads=compute_threads, storage_usage=storage_usage,
                           web=web, is_leaving=lambda: self.leaving, touch=self.touch)
        self.gossip_interval = gossip_interval
        self.store = MarketStore(db)
        # Whose commitments this node wants and who gets its own are the market's to say (recognition, offer).
        self.replication = BookReplication(me=self.me, store=self.store, peers=peers,
                                           bucket_seconds=config.bucket_seconds, interested=self.interested,
                                           subscribers=subscribers, limiter=limiter)
        self.book = self.replication.book
        # Providers the book lacks, found through the hash table (None: no table, or a node on its own).
        self.lookup = None if find_providers is None or peers is None else ProviderLookup(
            replication=self.replication, peers=peers, active=self.active, find=find_providers, freshness=config.freshness)
        self.on_change = self.replication.on_change  # called whenever the book changed (allocation rounds)
        raw = self.store.own_state()
        state = codec.loads(raw) if raw else {}
        self.stamp = Stamp.decode(bytes.fromhex(state["stamp"])) if "stamp" in state else Stamp.seed()
        self._own_lock = threading.Lock()  # our commitment's writes (`_store_own`), from the loop or the pool
        self._own_signed = self._own_stored = 0  # how many of our commitments were signed, and the last written
        self.availability = PeerAvailability(self.me, peers)  # the peers' as matching weighs it
        self.weights = weights  # the recognition this node publishes (xsc.market.recognition)
        weights.watch(self.touch)
        self.needs = needs  # this node's open needs (puts in progress, standing needs): published with its offer
        needs.watch(self.touch)
        self.credit_lines = credit_lines  # xsc.ledger.trust.TrustLines: set_credit, line (None: no credit lines)
        self._published: tuple | None = None
        # Shutting down: it publishes no offer and refuses its peers' work; its own puts under way keep its offer.
        self.leaving = False
        self.prices = Prices(db, config.bucket_seconds)  # the clearing prices seen, for `xsc market prices`
        self.shown = ShownClearing(self)  # the clearing `xsc market book` and `xsc market prices` show
        self._interests: tuple | None = None  # (what they were made of, what `interests` made of it)
        self._recognising = RecognisingMe(self.me, self.replication)
        self._changed = asyncio.Event()
        self._announce = False  # the offer published at start differs from the one the peers hold
        # Who subscribed to its commitment (the allocation service's): who gets ours, whose we want.  None: every peer.
        self.subscribers = subscribers

    # --- recognition (xsc.market.recognition) ----------------------------------------------
    def note_paid(self, peer: str, amount: int, *, by_them: bool) -> None:
        self.weights.note_paid(peer, amount, by_them=by_them)

    def set_recognition(self, peer: str, weight: Decimal | None) -> None:
        self.weights.set_weight(peer, weight)
        if self.credit_lines is not None:  # only a recognised peer gets a credit line
            self.credit_lines.recognition_changed()

    def recognition(self) -> dict[str, Decimal]:
        return self.weights.weights()

    def recognition_view(self) -> list[dict]:
        return self.weights.view(self.book)

    # --- publishing ------------------------------------------------------------------------
    def touch(self) -> None:
        """Something this node offers or needs changed: re-publish soon (debounced)."""
        self._changed.set()

    def publish(self, *, force: bool = False) -> bool:
        """Sign and publish this node's commitment if it changed (or `force`); returns whether it did.  Its synced
        write runs on the calling thread (at start, at leave); the market's rounds use `republish`."""
        signed = self._sign_own(force)
        if signed is None:
            return False
        try:
            self._store_own(*signed)
        except BaseException:
            self._not_stored()
            raise
        self.replication.show(signed[0])
        return True

    async def republish(self, *, force: bool = False) -> bool:
        """`publish`, its synced write in the CPU pool: on the event loop, the fsync held it up to 46 ms while the
        user's puts wrote their shares.  The book (and so every peer) sees the commitment only once it is on disk."""
        signed = self._sign_own(force)
        if signed is None:
            return False
        try:
            await in_pool(self.pool, self._store_own, *signed)
        except BaseException:
            self._not_stored()
            raise
        self.replication.show(signed[0])
        return True

    def _not_stored(self) -> None:
        """A commitment signed but not written (a full disk, a cancelled round): nobody saw it, and the next
        round signs one again, the counters with it (else the round took the offer for published until the
        heartbeat forced it)."""
        self._published = None
        self.weights.unsaved = True

    def _sign_own(self, force: bool) -> tuple[MarketCommitment, int, bytes] | None:
        asks = [] if self.leaving else self.offer.own_asks()
        bids, recognition = self.needs.published(), self.recognition()
        content = (tuple(asks), bids, tuple(recognition.items()))
        if content == self._published and not force:
            return None
        self.stamp = self.stamp.event()
        commitment = sign_commitment(self.identity, asks=tuple(asks), bids=bids, recognition=recognition,
                                     stamp=self.stamp, timestamp=now_ms())
        self._published = content
        self.offer.published(commitment.timestamp, asks)
        self._own_signed += 1
        self.weights.unsaved = False
        return commitment, self._own_signed, self._self_state()

    def _store_own(self, commitment: MarketCommitment, number: int, self_state: bytes) -> None:
        """Write our commitment `number` (the how-manieth signed) and the counters, synced, from any thread; one
        signed after it and already written is never overwritten by it."""
        with self._own_lock:
            if number <= self._own_stored:
                return
            self.store.keep_own(self.me, dumps(commitment.to_json()), self_state)
            self._own_stored = number

    def _self_state(self) -> bytes:
        return codec.dumps({"stamp": self.stamp.encode().hex(), **self.weights.counters()})

    def _save_self(self) -> None:
        self.weights.unsaved = False
        self.store.save_state(self._self_state())

    def save_counters(self) -> None:
        """Write the recognition counters if they changed since they were last written (each round, at close)."""
        if self.weights.unsaved:
            self._save_self()

    # --- the book's replication (xsc.market.replication), as routes and other services ask for it -------------
    @property
    def version(self) -> int:
        return self.replication.version

    def receive(self, items: Any) -> int:
        return self.replication.receive(items)

    def check_quota(self, sender: str, size: int) -> None:
        self.replication.check_quota(sender, size)

    async def exchange_answer(self, items: Any, push: bool = False, sender: str | None = None,
                              digest: Any = None) -> dict[str, Any]:
        return await self.replication.exchange_answer(items, push, sender, digest)

    def digest_answer(self, sender: str, body: Any) -> dict[str, Any]:
        return self.replication.digest_answer(sender, body)

    async def fill_book(self, timeout: float = 2.0, kind: str | None = None, wanted: int = 0, needed: float = 0.0) -> None:
        """Before a matching: the commitments of the peers we want and lack, and when the book holds fewer than
        `wanted` providers of `kind` whose offers last `needed` s more, those the hash table knows (ProviderLookup)."""
        await self.replication.fill_book(timeout)
        if kind is not None and self.lookup is not None:
            await self.lookup.fill(kind, wanted, timeout, needed=needed)

    def interests(self) -> dict[str, frozenset[str]]:
        """peer -> the topics this node subscribes to at it (`xsc.allocation.core.subscriptions.interests`), from the
        recognition it publishes, the peers' commitments and who subscribed to its receipts or needs."""
        mine_mc = self.book.get(self.me)
        mine = self.recognition()  # what it publishes next (the book's copy may lag a new peer)
        offered = frozenset(a.slot.kind for a in (mine_mc.asks if mine_mc is not None else self.offer.own_asks()))
        recognisers = frozenset() if self.subscribers is None else self.subscribers.recognisers(now_ms())
        # Made again only when what they are made of changed (asked three times a second), of the commitments of
        # those this node recognises and of those recognising it, kept with the book's changes.
        made_of = (self.version, tuple(mine.items()), offered, recognisers)
        if self._interests is None or self._interests[0] != made_of:
            theirs = self._recognising.theirs(mine)
            self._interests = (made_of, interests(self.me, mine, theirs, offered, recognisers))
        return {p: t for p, t in self._interests[1].items() if self.peers is None or self.peers.known(p)}

    def interested(self) -> set[str]:
        """The participants whose commitments this node wants (`interests`), else every peer (a bare market)."""
        if self.subscribers is not None:
            return {p for p, t in self.interests().items() if "commitment" in t or any(x.startswith("needs:") for x in t)}
        return set(self._peer_ids())

    async def _run(self, announce: bool = False) -> None:
        """Re-publish on change (debounced) and at every bucket boundary; swap books with new peers at
        once and with a random peer every gossip interval.  `announce`: the offer published at start differs
        from the one the peers hold (a restarted node: they hold its last one, or the empty one it left with),
        so every peer gets it at once (it has no subscribers yet)."""
        if announce:
            try:
                await self.replication.push_own(everyone=True)
            except Exception:  # noqa: BLE001 -- the peers get it at the next change or heartbeat anyway
                log.exception("announcing this node's offer failed")
        interval = max(self.gossip_interval, self.config.freshness / 3)  # digests; changes are pushed at once
        next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
        heartbeat = self.config.freshness / 3
        next_heartbeat = time.monotonic() + heartbeat
        while True:
            seconds = self.config.bucket_seconds
            to_boundary = seconds - time.time() % seconds + 0.05
            if await woken(self._changed, min(1.0, to_boundary)):
                await asyncio.sleep(self.config.publish_delay)
            self._changed.clear()
            try:
                fresh_again = time.monotonic() >= next_heartbeat
                if fresh_again:
                    next_heartbeat = time.monotonic() + heartbeat
                if await self.republish(force=fresh_again):
                    # Our offer changed, or must be re-signed to stay current: every subscriber should know at once.
                    await self.replication.push_own()
                elif time.monotonic() >= next_gossip:
                    next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
                    wanted = self.interested()
                    targets = [d for d in self.peers.up_peers() if d.id in wanted] if self.peers is not None else []
                    if targets:  # anti-entropy: digests with one random peer we want
                        await self.replication.pull_quietly(random.choice(targets), wanted)
                else:
                    await self.replication.fill_book()
                await self.shown.refresh()  # cleared again once the book or who takes part changed (its price kept)
                self.save_counters()
            except Exception:  # a round must never end the market
                log.exception("market round failed")

    def start(self) -> None:
        """Publish this node's offer (written before the node serves); `loops` then announces it if it changed."""
        self._announce = self.publish(force=self._published is None and self.book.get(self.me) is None)

    def loops(self) -> dict[str, Callable[[], Any]]:
        """The market's rounds, run by the node's supervisor (xsc.tasks.Supervisor)."""
        return {"market": self._rounds}

    def _rounds(self) -> Any:
        announce, self._announce = self._announce, False  # a loop started again does not announce again
        return self._run(announce=announce)

    async def close(self) -> None:
        """After the supervisor stopped the rounds: the counters written, and the peers told we leave."""
        self.save_counters()
        await self.leave()

    async def leave(self, timeout: float = 2.0) -> None:
        """Say we leave: publish an offer of nothing, tell the peers (briefly); the stop does it first (node/app.py)."""
        self.leaving = True
        if self.publish():
            try:
                await asyncio.wait_for(self.replication.push_own(everyone=True), timeout)
            except (asyncio.TimeoutError, PeerError):
                pass

    # --- clearing and matching -------------------------------------------------------------
    def clearings(self) -> dict:
        """The call market of those taking part now (`clearing.taking_part`), as `market book` shows it."""
        return self.shown.now()

    def credible_bids(self, bids: Sequence[Bid] | None = None) -> list[Bid]:
        """The book's bids (or `bids`: whole participants' bids), other participants' only as far as their trust lines
        here back them (core/backing.py)."""
        return backed(self.book.bids() if bids is None else bids,
                      self.credit_lines.backing if self.credit_lines else None, self.me)

    def backing_version(self) -> int | None:
        """Changes whenever what `credible_bids` weighs the bids by may have: a trust line here."""
        return self.credit_lines.version if self.credit_lines is not None else None

    def peers_version(self) -> tuple | None:
        """Changes whenever a peer's availability may have (peers/service.py: `state_version`)."""
        return self.peers.state_version() if self.peers is not None else None

    def availability_map(self) -> dict[str, Decimal]:
        """Every participant's availability as matching weighs it (xsc.market.availability)."""
        return self.availability.map()

    def down(self) -> frozenset[str]:
        """The participants at availability 0: they take part in no clearing (`clearing.taking_part`)."""
        return self.availability.down()

    def recognition_version(self) -> tuple:
        """Changes whenever this node's part of `recognition_map` may (the book's parts change with `version`)."""
        return self.weights.version()

    def recognition_map(self) -> dict[str, dict[str, Decimal]]:
        out = {c.participant: dict(c.recognition) for c in self.book.commitments()}
        out[self.me] = self.recognition()
        return out

    def active(self, participant: str, within: float = 0.0) -> bool:
        """May `participant` be matched: this node, or a peer known, not known down, whose newest offer is current
        (signed within `market.freshness`: a node that stopped re-signing has left) and still `within` s from now."""
        if participant == self.me:
            return True
        held = self.book.get(participant)
        if held is None or held.timestamp < now_ms() - (self.config.freshness - within) * 1000:
            return False
        return self.peers is None or (self.peers.known(participant) and self.peers.up(participant))

    def forget(self, participant: str) -> None:
        """A node was removed: its commitment leaves the book (and LevelDB) and it is never matched again."""
        if self.replication.forget(participant):
            self.touch()

    # --- views -----------------------------------------------------------------------------
    def book_view(self, kind: str | None = None) -> dict[str, Any]:
        rows: dict[tuple[str, int], dict] = {}
        # An ask's tags (`web`: its provider serves web functions), by the id its orders carry (orders.market_orders)
        tags = {f"ask/{a.slot.owner}/{a.slot.id}": list(a.slot.tags) for a in self.book.asks()}
        for order in self.book.orders():
            if kind and order.kind != kind:
                continue
            row = rows.setdefault((order.kind, order.bucket), {"kind": order.kind, "bucket": order.bucket,
                                                               "asks": [], "bids": []})
            shown = {"owner": order.owner, "id": order.id, "quantity": order.quantity, "price": order.price}
            if order.side == "ask":
                shown["tags"] = tags.get(order.id, [])
            row["asks" if order.side == "ask" else "bids"].append(shown)
        clearings = self.clearings()
        for key, row in rows.items():
            row["asks"].sort(key=lambda o: (o["price"], o["owner"]))
            row["bids"].sort(key=lambda o: (-o["price"], o["owner"]))
            c = clearings.get(key)
            row["clearing"] = None if c is None else {"price": c.price, "low": c.low, "high": c.high,
                                                      "traded": c.traded}
            row["bucket_start"] = key[1] * self.config.bucket_seconds
        return {"digest": self.book.digest(), "participants": len(self.book.commitments()),
                "books": sorted(rows.values(), key=lambda r: (r["kind"], r["bucket"]))}

    def _convergence_reason(self, peers: list[str], known: list[str]) -> str | None:
        if len(known) < len(peers):
            return f"{len(peers) - len(known)} of {len(peers)} peers' offers not here yet"
        differ = [p for p in peers if self.replication.peer_digests.get(p) != self.book.digest()]
        if differ:
            return f"{len(differ)} of {len(peers)} peers held another book at the last swap"
        return None

    def _peer_ids(self) -> list[str]:
        return [d.id for d in self.peers.peers()] if self.peers is not None else []

    def offer_view(self) -> dict[str, Any]:
        c = self.config
        offer = self.offer
        used, capacity = offer.storage_usage()
        return {
            "storage": {"offered": c.offer_storage, "capacity": capacity, "used": used, "ask": offer.ask("storage"),
                        "floor": c.storage_ask_floor, "ceiling": c.storage_ask_ceiling, "unit": "GiB-hour"},
            "compute": {"offered": c.offer_compute, "fuel_per_bucket": offer.compute_capacity(),
                        "used": offer.fuel_used.get(offer.bucket(), 0), "ask": offer.ask("compute"),
                        "floor": c.compute_ask_floor, "ceiling": c.compute_ask_ceiling, "unit": "million fuel"},
            "exponent": c.ask_exponent, "bucket_seconds": c.bucket_seconds,
            "slots": self._asks_view(),
        }

    def price_view(self, kind: str | None, limit: int) -> list[dict]:
        self.clearings()  # records a new clearing price, if the book changed since
        return self.prices.history(kind, limit)

    def recognize(self, peer: Any, weight: Any, credit: Any = False) -> dict:
        """Set a user weight from the API (a decimal text or number; None: back to the derived one), and with
        `credit` the credit line this node gives that peer (micro-credits; None: back to ledger.peer_credit)."""
        if not isinstance(peer, str):
            raise InvalidArgument("send {\"peer\": NODE_ID, \"weight\": \"0.5\"} (weight null: back to the derived one)")
        if credit is not False and credit is not None and (type(credit) is not int or credit < 0):
            raise InvalidArgument(f"a credit line is a number of micro-credits, not {quoted(credit)}")
        if weight is not None:
            try:
                weight = Decimal(str(weight))
            except InvalidOperation:
                raise InvalidArgument(f"not a number: {quoted(weight)}", hint="a weight is a decimal from 0 to 1000") from None
            check_weight(weight)
        parse_public_id(peer)
        if peer == self.me:  # the allocator ignores a weight for oneself: it would be stored and do nothing
            raise InvalidArgument("a node does not recognise itself: that is this node's own id",
                                  hint="see the ids of its peers with: xsc peers ls")
        # What it was, so that a line this takes away (`auto`, 0: the peer no longer recognised) can be said and given
        # back: the user's weight, and the line.
        user_weight = self.weights.user_weights.get(peer)
        before = {"weight": None if user_weight is None else str(user_weight),
                  "credit": None if self.credit_lines is None else self.credit_lines.line(peer)["credit"]}
        # Both checked before either is written: a refused credit line left the weight set, and the peer recognised.
        if credit is not False and self.credit_lines is not None:
            self.credit_lines.set_credit(peer, credit)
        self.set_recognition(peer, weight)
        row = next((r for r in self.recognition_view() if r["peer"] == peer), None) or {"peer": peer, "weight": None}
        if self.credit_lines is not None:
            row["credit_line"] = self.credit_lines.line(peer)
        return {**row, "before": before}

    def _asks_view(self) -> list[dict[str, Any]]:
        mine = self.book.get(self.me)
        return [{"id": a.slot.id, "kind": a.slot.kind, "quantity": a.slot.quantity, "price": a.price,
                 "start": a.slot.start, "end": a.slot.end} for a in (mine.asks if mine else ())]

    def status(self) -> dict[str, Any]:
        peers = self._peer_ids()
        if self.subscribers is not None:
            wanted = self.interested()
            peers = [p for p in peers if p in wanted]  # with subscriptions: the peers whose commitments we want
        known = [p for p in peers if self.book.get(p) is not None]
        digest = self.book.digest()  # once (a hash over every participant's signature)
        seen = self.replication.peer_digests
        return {
            "node": self.me,
            "stamp": self.stamp.encode().hex(),
            "digest": digest,
            "participants": len(self.book.commitments()),
            "peers_in_book": len(known),
            "peers": len(peers),
            # Every peer's offer is here, and every peer held this very book at our last exchange with it.
            "peers_agreeing": sum(seen.get(p) == digest for p in peers),
            "converged": len(known) == len(peers) and all(seen.get(p) == digest for p in peers),
            "converged_reason": self._convergence_reason(peers, known),
            "asks": self._asks_view(),
            "needs": [{"id": b.slot.id, "kind": b.slot.kind, "quantity": b.slot.quantity, "price": b.price}
                      for b in self.needs.bids()],
            "bytes_sent": self.replication.bytes_sent,
            "signed": self._own_signed,  # commitments this node signed since it started
            "providers": {kind: len(providers_in(self.book, self.active, kind)) for kind in ("storage", "compute")},
            "found_through_table": 0 if self.lookup is None else self.lookup.found,
        }

"""The market on a node: its own offer, the replicated book, clearing and matching (the asyncio and
LevelDB shell around the pure core of this package).  Routes: node/http/market.py.

- **Offer.** The node publishes capacity slots for what it really has -- free storage bytes and
  compute fuel -- for the current time bucket and the next, each with an ask from its pricing
  policy (the ask rises with utilization).  Need slots of puts and invokes in progress are
  published with it.  The commitment is signed and stamped with an Interval Tree Clock; the stamp
  is kept in LevelDB so it only grows across restarts.
- **Book.** Commitments travel between peers (`POST /v1/peer/market`): pushed on every change
  (debounced by `market.publish_delay`) to the subscribers (`audience`, from the allocation service;
  every peer without it), and pulled by digest (`POST /v1/peer/market/digest`) from a random peer
  we want every third of the freshness window.  Stale ones are ignored, concurrent ones merged
  (xsc.market.Book); `digest` says which book a node holds.
- **Clearing.** The call market is cleared per kind and bucket whenever the book changed (lazily, on
  the next read), and each new clearing price is kept in LevelDB for `xsc market prices`.
- **Recognition.** The weights this node publishes: what the user set (`xsc market recognize`),
  else derived from health (availability over 24 h, last audit) and from the ledger (what the peer
  paid us, what we paid it for work it delivered).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import replace
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol


from .. import codec, keys
from ..db import Database
from ..allocation import CapacitySlot
from ..itc import Stamp
from ..allocation.models import bounded_decimal
from ..allocation.subscriptions import differing, parse_digest, short_hash
from ..errors import (InvalidArgument, MarketNoDeal, NeedNotFound, PeerError, QuotaExceeded, UnknownPeer,
                      XscError)
from ..config import MarketSection
from ..identity import Identity, parse_public_id, public_id
from ..net.peer_client import dumps
from .auction import clear_book
from .book import Book, MarketCommitment, parse_commitment, sign_commitment
from .matching import Assignment, match_needs
from .models import Ask, Bid, need_key, units_cost
from .needs import NeedRegistry
from .orders import market_orders
from .pricing import PricingPolicy, ask_price
from .supply import cap_supply, spread_groups
from ..tasks import Quota, in_pool, stop, woken

log = logging.getLogger(__name__)

MAX_RECOGNITION = Decimal(1000)
PRICE_HISTORY = 1000  # clearing prices kept per kind
GOSSIP_FANOUT = 3
# A node never proven up (no probe answered yet) is not recognised: it was 0.5, so every node a stranger's message
# named was subscribed to, pulled from and named in this node's commitment at that stranger's word.
DERIVED_NO_PROBES = Decimal("0")
HONOUR_SECONDS = 60  # a published ask is honoured this long after a newer, higher one replaced it


EXPLAINED = 1000  # needs whose explanation is kept (in memory) for `xsc market explain`
MAX_COMMITMENTS = 1001  # per exchange: one per peer the directory can hold, and this node's
BYTES_PER_CHECK = 2048  # bytes of a message of commitments per commitment to check its sender must have left
RECEIVE_BATCH = 16  # commitments checked (an Ed25519 verify each: ~0.4 ms of CPU at load 20) before the loop is let go
# ... or fewer: the seconds of checking after which the loop is let go all the same.  A /health request takes some
# five turns of the loop, and each waited behind a whole batch of 16 (3-8 ms at load 2): 40-80 ms in a flood.
RECEIVE_SLICE = 0.001


def now_ms() -> int:
    return int(time.time() * 1000)


Steps = Generator[tuple[Callable[..., Any], dict], Any, Any]  # see MarketService._deal


def _matched(asks: list[Ask], bids: list[Bid], **kwargs: Any):
    """The pure matching of `MarketService.match`: supply capped and groups spread, then `match_needs`."""
    needs = spread_groups(asks, bids)
    return match_needs(cap_supply(asks, needs), needs, **kwargs)


def _clear_book(asks: list[Ask], bids: list[Bid], bucket_seconds: int) -> dict:
    """What `Book.orders` and `clear_book` make of the book's asks and bids (pure)."""
    return clear_book(market_orders(asks, bids, bucket_seconds))


def _call(fn: Callable[..., Any], kwargs: dict) -> Any:
    return fn(**kwargs)


class PeerView(Protocol):
    """The peers as the market sees them (xsc.peers.PeerService)."""

    def peers(self) -> list: ...
    def state_version(self) -> tuple: ...
    def known(self, node_id: str) -> bool: ...
    def availability(self, node_id: str) -> Any: ...
    def up(self, node_id: str) -> bool: ...
    def up_peers(self) -> list: ...
    async def request(self, peer_url: str, method: str, path: str, **kwargs: Any) -> Any: ...


class Explanations(OrderedDict):
    """The newest EXPLAINED explanations of matchings this node ran, by need."""

    def __init__(self, me: str) -> None:
        super().__init__()
        self.me = me

    def keep(self, result, bids: dict[str, Bid] | None = None, best_asks: dict[str, int] | None = None) -> None:
        """Keep a matching's explanations, with the figures of this node's needs (`bids` by need key) and
        the lowest ask of each kind (`best_asks`)."""
        if result is None:
            return
        for key, explanation in result.explanations.items():
            # This node's needs by their bare id (as a put or invoke prints them); others' as OWNER/ID.
            name = explanation.need_id if explanation.recipient == self.me else key
            bid = (bids or {}).get(key)
            best = (best_asks or {}).get(bid.slot.kind) if bid is not None else None
            self[name] = {"need": explanation.need_id, "recipient": explanation.recipient, "code": explanation.code,
                          "message": explanation.message, "clearing_price": explanation.clearing_price,
                          "assignment": _assignment(result.assignments.get(key)),
                          "kind": bid.slot.kind if bid else None, "bid": bid.price if bid else None,
                          "quantity": bid.slot.quantity if bid else None, "best_ask": best,
                          "would_match": _would_match(explanation, bid, best)}
            self.move_to_end(name)
        while len(self) > EXPLAINED:
            self.popitem(last=False)

    def recent(self, count: int = 20) -> list[str]:
        """This node's needs most recently matched, newest first: what `market explain` can be asked about."""
        return [name for name in reversed(self) if "/" not in name][:count]

    def explain(self, need: str) -> dict:
        found = self.get(need)
        if found is None:
            raise NeedNotFound(f"no recent need {need!r} on this node",
                               hint="need ids are printed by a put or invoke the market refused, and by xsc market status")
        return found


def _would_match(explanation, bid: Bid | None, best_ask: int | None) -> str | None:
    """What would have made a need match, in the user's words (None: it matched, or nothing is known)."""
    code, clearing = explanation.code, explanation.clearing_price
    if code == "matched":
        return None
    if code == "below_clearing_price" and clearing is not None:
        return f"a bid of at least {clearing}"
    if code == "no_trade" and best_ask is not None:
        return f"a bid of at least the lowest ask, {best_ask}"
    if code == "no_compatible_slot" and bid is not None:
        return f"a provider offering at least {bid.slot.quantity} for the need's whole window"
    if code == "capacity_taken":
        return "more free capacity, or a bid above the needs that took it" + (
            f" (they cleared at {clearing})" if clearing is not None else "")
    if code == "filtered_out":
        return "fewer filters (--avoid, --prefer, --min-availability)"
    return None


def _repriced(a: Assignment, clearing, bid: Bid | None) -> Assignment:
    price = None if clearing is None else clearing.price
    if bid is None or price is None or not a.price <= price <= bid.price:
        return a
    return replace(a, price=price, cost=units_cost(a.kind, a.quantity, bid.slot.end - bid.slot.start, price))


def _assignment(a) -> dict | None:
    if a is None:
        return None
    return {"provider": a.provider, "capacity_slot": a.capacity_slot, "quantity": a.quantity, "price": a.price,
            "tier": a.tier}


class MarketService:
    def __init__(self, *, config: MarketSection, identity: Identity, db: Database, peers: PeerView | None,
                 needs: NeedRegistry, storage_usage: Callable[[], tuple[int, int]], compute_threads: int,
                 gossip_interval: float, pool: Executor | None = None, limiter: Quota | None = None) -> None:
        self.config = config
        self.pool = pool  # where matchings run (None: asyncio's default executor)
        self.limiter = limiter  # each peer's quota of commitments to check (None: no quota)
        self._dealing = asyncio.Lock()
        self.identity = identity
        self.me = self.identity.id
        self.db = db
        self.peers = peers  # None: a node on its own (tests)
        self.storage_usage = storage_usage  # () -> (bytes used, capacity) of this node's share store
        self._compute_policy: tuple[tuple[int, int, int], PricingPolicy] | None = None  # (its config, it)
        self.compute_threads = compute_threads
        self.gossip_interval = gossip_interval
        self.book = Book(bucket_seconds=self.config.bucket_seconds)
        for key, value in self.db.iterator(prefix=keys.MARKET_COMMITMENTS):
            try:
                commitment = parse_commitment(codec.loads(value))
            except (XscError, ValueError) as err:
                log.warning("dropping a stored market commitment that no longer parses: %s", err)
                continue
            if peers is not None and commitment.participant != identity.id and not peers.known(commitment.participant):
                self.db.delete(key)  # compacted on restart: a node no longer known is not kept
                continue
            self.book.receive(commitment)
        raw = self.db.get(keys.MARKET_SELF)
        state = codec.loads(raw) if raw else {}
        self.stamp = Stamp.decode(bytes.fromhex(state["stamp"])) if "stamp" in state else Stamp.seed()
        self.paid_by: dict[str, int] = state.get("paid_by", {})  # peer -> micro-credits its user paid us
        self._self_unsaved = False  # paid_by or delivered_by changed since _self_state was last written
        self._own_lock = threading.Lock()  # our commitment's writes (`_store_own`), from the loop or the pool
        self._own_signed = self._own_stored = 0  # how many of our commitments were signed, and the last written
        self.delivered_by: dict[str, int] = state.get("delivered_by", {})  # peer -> what we paid it
        self._recognition: tuple[Any, dict[str, Decimal]] | None = None  # (peers' state_version, recognition())
        self._availability: tuple[Any, dict[str, Decimal]] | None = None  # the same for availability_map()
        self.user_weights: dict[str, Decimal] = {
            public_id(k[len(keys.MARKET_RECOGNITION):]): Decimal(v.decode())
            for k, v in self.db.iterator(prefix=keys.MARKET_RECOGNITION)}
        self.needs = needs  # this node's open needs (puts in progress, standing needs): published with its offer
        needs.watch(self.touch)
        self.credit_lines: Any = None  # xsc.ledger.trust.TrustLines (set by the composition root): set_credit, line
        self.fuel_used: dict[int, int] = {}  # bucket -> fuel this node ran in it
        self._published: tuple | None = None
        self._asks_published: deque[tuple[int, str, int]] = deque(maxlen=256)  # (ms, kind, ask) as published
        self.last_results = None  # the newest MarketResult of a match this node ran
        self.last_bids: dict[str, Bid] = {}  # its needs, by need key
        self.explanations = Explanations(self.me)  # for `xsc market explain`
        self.leaving = False  # shutting down: it offers nothing more
        self.version = 0  # grows whenever the book changes
        self._payload: tuple[int, list[dict]] = (-1, [])  # the book as JSON, and the version it was made of
        self._jsons: dict[str, tuple[str, dict]] = {}  # participant -> (signature, JSON) of its held commitment
        self._prices_written = 0
        self.peer_digests: dict[str, str] = {}  # peer -> the digest of its book at our last exchange
        self._compute_deals: dict[tuple, Any] = {}  # (version, fuel bucket, max price) -> assignment
        self._clearings: dict | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.on_change: list[Callable[[], None]] = []  # called whenever the book changed (allocation rounds)
        # Subscriptions (set by app.py from the allocation service): who gets our commitment, given the kinds of
        # its bids now and before; whose commitments we want.  None: every peer (a market without allocation).
        self.audience: Callable[[set[str], set[str]], set[str]] | None = None
        self.interest: Callable[[], set[str]] | None = None
        self._kinds_pushed: set[str] = set()
        self.bytes_sent = 0  # bodies of the commitment pushes, digests and answers this node sent
        # kind -> provider -> units the converged allocation gives this node's needs (set by app.py)
        self.allocated: Callable[[str], dict[str, int]] | None = None
        self._allocation_seen: dict[str, dict[str, int]] = {}
        self._allocation_spent: dict[str, dict[str, int]] = {}  # kind -> provider -> units served since it changed
        self.allocation_served = {"needs": 0, "units": 0}

    # --- what this node offers ------------------------------------------------------------
    def policy(self, kind: str) -> PricingPolicy:
        c = self.config
        return PricingPolicy(floor=getattr(c, f"{kind}_ask_floor"), ceiling=getattr(c, f"{kind}_ask_ceiling"),
                             exponent=c.ask_exponent)

    def bucket(self, at_s: int | None = None) -> int:
        return (int(time.time()) if at_s is None else at_s) // self.config.bucket_seconds

    def compute_capacity(self) -> int:
        return self.compute_threads * self.config.fuel_per_second * self.config.bucket_seconds

    def own_asks(self) -> list[Ask]:
        """Capacity slots for the current bucket and the next, priced by the pricing policy."""
        if self.leaving:
            return []
        seconds = self.config.bucket_seconds
        now_bucket = self.bucket()
        asks = []
        used, capacity = self.storage_usage()
        for b in (now_bucket, now_bucket + 1):
            start, end = b * seconds, (b + 1) * seconds
            if self.config.offer_storage and capacity > used:
                asks.append(Ask(slot=CapacitySlot(id=f"storage-{b}", owner=self.me, kind="storage",
                                                  quantity=capacity - used, start=start, end=end),
                                price=ask_price(self.policy("storage"), used, capacity)))
            offered = self._compute_offer(b)
            if offered is not None:
                asks.append(Ask(slot=CapacitySlot(id=f"compute-{b}", owner=self.me, kind="compute",
                                                  quantity=offered[0], start=start, end=end), price=offered[1]))
        return asks

    def _compute_offer(self, b: int) -> tuple[int, int] | None:
        """The fuel this node offers in bucket `b` and its ask for it (None: no compute offered)."""
        fuel = self.compute_capacity()
        # Offered in steps of a thousandth of the bucket: every invoke must not re-sign and re-send the offer.
        step = max(1, fuel // 1000)
        fuel_used = min(-(-self.fuel_used.get(b, 0) // step) * step, fuel)
        if not self.config.offer_compute or fuel <= fuel_used:
            return None
        c = self.config
        policy = self._compute_policy
        if policy is None or policy[0] != (c.compute_ask_floor, c.compute_ask_ceiling, c.ask_exponent):
            policy = self._compute_policy = ((c.compute_ask_floor, c.compute_ask_ceiling, c.ask_exponent),
                                             self.policy("compute"))
        return fuel - fuel_used, ask_price(policy[1], fuel_used, fuel)

    def ask(self, kind: str) -> int | None:
        """This node's ask now for `kind`, None if it does not offer it."""
        b = self.bucket()
        if kind == "compute":  # without building every offer (a provider asks it for every paid call)
            offered = None if self.leaving else self._compute_offer(b)
            return None if offered is None else offered[1]
        return next((a.price for a in self.own_asks() if a.slot.kind == kind and a.slot.id.endswith(f"-{b}")), None)

    def honoured_ask(self, kind: str) -> int | None:
        """The lowest price this node takes a deal at: its ask now, or a lower one it published within the
        last HONOUR_SECONDS (a gateway matched on that offer before our newer one reached it)."""
        now = self.ask(kind)
        if now is None:
            return None
        horizon = now_ms() - HONOUR_SECONDS * 1000
        recent = [price for at, k, price in self._asks_published if k == kind and at >= horizon]
        return min([now, *recent])

    def note_fuel(self, fuel: int) -> None:
        b = self.bucket()
        self.fuel_used[b] = self.fuel_used.get(b, 0) + fuel
        for old in [k for k in self.fuel_used if k < b]:
            del self.fuel_used[old]
        self.touch()

    def note_paid(self, peer: str, amount: int, *, by_them: bool) -> None:
        """A peer's user paid us (`by_them`), or we paid a peer for work it delivered: both raise recognition."""
        table = self.paid_by if by_them else self.delivered_by
        table[peer] = table.get(peer, 0) + amount
        self._self_unsaved = True  # written by the next market round (within a second), not by every paid call
        self._recognition = None

    # --- recognition ----------------------------------------------------------------------
    def set_recognition(self, peer: str, weight: Decimal | None) -> None:
        key = parse_public_id(peer)
        if weight is None:
            self.db.delete(keys.market_recognition(key), sync=True)
            self.user_weights.pop(peer, None)
        else:
            if not weight.is_finite() or not 0 <= weight <= MAX_RECOGNITION:
                raise InvalidArgument(f"a recognition weight must be between 0 and {MAX_RECOGNITION}, not {weight}")
            try:
                bounded_decimal(weight)  # what a commitment may carry (it could not be published otherwise)
            except ValueError as exc:
                raise InvalidArgument(f"a recognition weight: {exc}") from None
            self.db.put(keys.market_recognition(key), str(weight).encode(), sync=True)
            self.user_weights[peer] = weight
        self._recognition = None
        self.touch()

    def derived_weight(self, peer: str, exchanged_total: int | None = None) -> Decimal:
        """From health and the ledger: availability over 24 h, cut to a tenth after a failed audit,
        plus a bonus for the share of money exchanged with that peer (both directions).  `exchanged_total`:
        `_exchanged_total()`, when the caller weighs every peer (summed once, not once per peer)."""
        availability = self.peers.availability(peer) if self.peers is not None else None
        if availability is None or availability.ratio_24h is None:
            weight = DERIVED_NO_PROBES
        else:
            weight = Decimal(str(round(availability.ratio_24h, 4)))
        if availability is not None and availability.last_audit and not availability.last_audit.get("ok", True):
            weight /= 10
        total = self._exchanged_total() if exchanged_total is None else exchanged_total
        if total:
            exchanged = self.paid_by.get(peer, 0) + self.delivered_by.get(peer, 0)
            weight += Decimal(exchanged) / Decimal(total)
        return weight.quantize(Decimal("0.0001"))

    def _exchanged_total(self) -> int:
        return sum(self.paid_by.values()) + sum(self.delivered_by.values())

    def recognition(self) -> dict[str, Decimal]:
        """This node's recognition of its peers, made again only when what it is made of changed (peers'
        availability, money exchanged, user weights): with 1,000 peers it was ~15 ms of loop CPU per put."""
        state = self.peers.state_version() if self.peers is not None else None
        if self._recognition is not None and self._recognition[0] == state:
            return dict(self._recognition[1])
        total = self._exchanged_total()
        weights = {p: self.derived_weight(p, total) for p in self._peer_ids()}
        weights.update(self.user_weights)
        made = {p: w for p, w in sorted(weights.items()) if w > 0 and p != self.me}
        self._recognition = (state, made)
        return dict(made)

    def recognition_view(self) -> list[dict]:
        peers, total = set(self._peer_ids()), self._exchanged_total()
        rows = []
        for peer in sorted(peers | set(self.user_weights)):
            theirs = self.book.get(peer)
            derived = self.derived_weight(peer, total)  # once per peer (it reads the peer's availability)
            rows.append({"peer": peer, "weight": str(self.user_weights.get(peer, derived)),
                         "set_by_user": peer in self.user_weights, "derived": str(derived),
                         "theirs": str(theirs.recognition.get(self.me, 0)) if theirs else None})
        return rows

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
        self._show_own(signed[0])
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
        self._show_own(signed[0])
        return True

    def _not_stored(self) -> None:
        """A commitment signed but not written (a full disk, a cancelled round): nobody saw it, and the next
        round signs one again, the counters with it (else the round took the offer for published until the
        heartbeat forced it)."""
        self._published = None
        self._self_unsaved = True

    def _sign_own(self, force: bool) -> tuple[MarketCommitment, int, bytes] | None:
        asks, bids, recognition = self.own_asks(), self.needs.bids(), self.recognition()
        content = (tuple(asks), bids, tuple(recognition.items()))
        if content == self._published and not force:
            return None
        self.stamp = self.stamp.event()
        commitment = sign_commitment(self.identity, asks=tuple(asks), bids=bids, recognition=recognition,
                                     stamp=self.stamp, timestamp=now_ms())
        self._published = content
        self._asks_published.extend((commitment.timestamp, a.slot.kind, a.price) for a in asks
                                    if a.slot.id.endswith(f"-{self.bucket()}"))
        self._own_signed += 1
        self._self_unsaved = False
        return commitment, self._own_signed, self._self_state()

    def _store_own(self, commitment: MarketCommitment, number: int, self_state: bytes) -> None:
        """Write our commitment `number` (the how-manieth signed) and the counters, synced, from any thread; one
        signed after it and already written is never overwritten by it."""
        with self._own_lock:
            if number <= self._own_stored:
                return
            with self.db.write_batch(sync=True) as batch:
                batch.put(keys.market_commitment(self.identity.public_key), dumps(commitment.to_json()))
                batch.put(keys.MARKET_SELF, self_state)
            self._own_stored = number

    def _show_own(self, commitment: MarketCommitment) -> None:
        self.book.receive(commitment)
        self._changed_book()

    def _self_state(self) -> bytes:
        return codec.dumps({"stamp": self.stamp.encode().hex(), "paid_by": self.paid_by,
                            "delivered_by": self.delivered_by})

    def _save_self(self) -> None:
        # Not synced: recognition counters a crash may lose a few increments of (the next publish syncs them).
        self._self_unsaved = False
        self.db.put(keys.MARKET_SELF, self._self_state())

    def save_counters(self) -> None:
        """Write the recognition counters if they changed since they were last written (each market round,
        and at close)."""
        if self._self_unsaved:
            self._save_self()

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
            self.limiter.require(sender, time.monotonic(), f"peer {sender[:12]}…", size / BYTES_PER_CHECK)

    async def take(self, items: Any, sender: str | None = None) -> int:
        """`receive`, RECEIVE_BATCH commitments (or RECEIVE_SLICE seconds) at a time with the event loop let go
        between batches: a full message (MAX_COMMITMENTS, each an Ed25519 verify) held the loop some 400 ms of CPU
        at once.

        The commitments worth checking are charged to `sender`'s quota (`market.commitment_rate`) before any is
        checked: past it, QuotaExceeded and nothing is read (a peer's flood of new commitments kept the loop
        busy back to back, where its request rate was far inside the peer rate limit)."""
        worth = [item for item in self._commitment_list(items) if self._worth_checking(item)]
        if self.limiter is not None and sender is not None and worth:
            self.limiter.check(sender, time.monotonic(), f"peer {sender[:12]}…", len(worth))
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
        changed = 0
        with self.db.write_batch() as batch:
            for commitment in commitments:
                outcome = self.book.receive(commitment)
                if outcome.value != "stale":
                    changed += 1
                    held = self.book.get(commitment.participant)
                    batch.put(keys.market_commitment(parse_public_id(held.participant)), dumps(self._json_of(held)))
        if changed:
            self._changed_book()
        return changed

    def _changed_book(self) -> None:
        self._clearings = None
        self._compute_deals.clear()
        self.version += 1
        for hook in self.on_change:
            hook()

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

    def _up(self) -> list:
        return self.peers.up_peers()

    def interested(self) -> set[str]:
        """The participants whose commitments this node wants: its subscriptions' (`interest`), else every peer."""
        if self.interest is not None:
            return set(self.interest())
        return set(self._peer_ids())

    async def _push_own(self, everyone: bool = False) -> None:
        """Send our commitment to its audience (the subscribers; every peer up without subscriptions, or when
        `everyone`: a node that leaves tells every peer)."""
        own = self.book.get(self.me)
        if self.peers is None or own is None:
            return
        kinds = {b.slot.kind for b in own.bids}
        targets = self._up()
        if self.audience is not None and not everyone:
            audience = self.audience(kinds, self._kinds_pushed)
            targets = [d for d in targets if d.id in audience]
        self._kinds_pushed = kinds
        message = {"commitments": [own.to_json()], "push": True, "digest": self.book.digest()}
        self._count(message, len(targets))
        results = await asyncio.gather(*(self._send_own(d, message) for d in targets), return_exceptions=True)
        for d, result in zip(targets, results):
            if isinstance(result, PeerError):
                log.debug("market push to %s failed: %s", d.id[:12], result)
            elif isinstance(result, BaseException):
                log.error("market push to %s failed", d.id[:12], exc_info=result)

    async def _send_own(self, d, message: dict) -> None:
        response = await self.peers.request(d.url, "POST", "/v1/peer/market", json=message, to=d.id)
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
        response = await self.peers.request(d.url, "POST", "/v1/peer/market/digest", json=message, to=d.id)
        body = response.json()
        if not isinstance(body, dict):
            return 0
        answered = body.get("commitments", [])
        if isinstance(answered, list):  # only those asked for: a peer cannot fill the book through a pull
            answered = [c for c in answered if isinstance(c, dict) and c.get("participant") in digest]
        try:
            changed = await self.take(answered, d.id)
        except QuotaExceeded as err:
            log.info("not taking %s's answer now: %s", d.id[:12], err)
            return 0
        if isinstance(body.get("digest"), str):
            self.peer_digests[d.id] = body["digest"]
        return changed

    def _missing(self) -> list:
        """Peers we want the commitment of, not known to be down, whose commitment this node has not got."""
        peers = self.peers
        if peers is None:
            return []
        # Cheapest test first: before every put, and the whole book is mostly held.
        lacking = [d for d in peers.peers() if self.book.get(d.id) is None and peers.up(d.id)]
        if not lacking:
            return []
        wanted = self.interested()
        return [d for d in lacking if d.id in wanted]

    async def fill_book(self, timeout: float = 2.0) -> None:
        """Ask at once the peers we want but hold no commitment of (a node that just joined), before matching."""
        missing = self._missing()
        if missing:
            await asyncio.wait({asyncio.ensure_future(self._pull_quietly(d, [d.id])) for d in missing},
                               timeout=timeout)

    async def _pull_quietly(self, d, participants) -> None:
        try:
            await self.pull(d, participants)
        except PeerError as err:
            log.debug("market digest exchange with %s failed: %s", d.id[:12], err)

    async def _run(self, announce: bool = False) -> None:
        """Re-publish on change (debounced) and at every bucket boundary; swap books with new peers at
        once and with a random peer every gossip interval.  `announce`: the offer published at start differs
        from the one the peers hold (a restarted node: they hold its last one, or the empty one it left with),
        so every peer gets it at once (it has no subscribers yet)."""
        if announce:
            try:
                await self._push_own(everyone=True)
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
                    await self._push_own()
                elif time.monotonic() >= next_gossip:
                    next_gossip = time.monotonic() + interval * random.uniform(0.8, 1.2)
                    wanted = self.interested()
                    targets = [d for d in self._up() if d.id in wanted] if self.peers is not None else []
                    if targets:  # anti-entropy: digests with one random peer we want
                        await self._pull_quietly(random.choice(targets), wanted)
                else:
                    await self.fill_book()
                await self._clear()  # the call market clears again once the book has changed (and keeps its price)
                self.save_counters()
            except Exception:  # a round must never end the market
                log.exception("market round failed")

    def start(self) -> None:
        changed = self.publish(force=self._published is None and self.book.get(self.me) is None)
        self._tasks = [asyncio.create_task(self._run(announce=changed), name="xsc-market")]

    async def close(self) -> None:
        await stop(*self._tasks)
        self.save_counters()
        await self.leave()

    async def leave(self, timeout: float = 2.0) -> None:
        """Say we leave: publish an offer of nothing and tell the peers (best effort, briefly)."""
        self.leaving = True
        if self.publish():
            try:
                await asyncio.wait_for(self._push_own(everyone=True), timeout)
            except (asyncio.TimeoutError, PeerError):
                pass

    # --- clearing and matching -------------------------------------------------------------
    def clearings(self) -> dict:
        if self._clearings is None:
            self._clearings = clear_book(self.book.orders())
            self._record_prices(self._clearings)
        return self._clearings

    async def _clear(self) -> None:
        """`clearings()`, the call markets cleared in the CPU pool over the book's orders as they are now (over a
        book of 1,000 participants, 40-60 ms of CPU that held the event loop after every change)."""
        if self._clearings is not None:
            return
        version = self.version
        clearings = await in_pool(self.pool, _clear_book, self.book.asks(), self.book.bids(), self.book.bucket_seconds)
        if self._clearings is None and self.version == version:  # else the book changed meanwhile: next round
            self._clearings = clearings
            self._record_prices(clearings)

    def _record_prices(self, clearings: dict) -> None:
        """Keep each new clearing price (a price or volume that changed) for `xsc market prices`."""
        at = now_ms()
        written = 0
        with self.db.write_batch() as batch:
            for (kind, bucket), c in clearings.items():
                if c.price is None:
                    continue
                last = self.last_price(kind, bucket)
                if last is not None and last["price"] == c.price and last["traded"] == c.traded:
                    continue
                batch.put(keys.market_price(kind, bucket, at),
                          codec.dumps({"price": c.price, "low": c.low, "high": c.high, "traded": c.traded}))
                written += 1
        self._prices_written += written
        if self._prices_written > PRICE_HISTORY // 10:
            self._prices_written = 0
            self._prune_prices()

    def _prune_prices(self) -> None:
        """Keep the newest PRICE_HISTORY clearing prices of each kind."""
        for kind in ("storage", "compute"):
            with self.db.iterator(prefix=keys.market_prices_of(kind), reverse=True, include_value=False) as it:
                old = [key for n, key in enumerate(it) if n >= PRICE_HISTORY]
            if old:
                with self.db.write_batch() as batch:
                    for key in old:
                        batch.delete(key)

    def last_price(self, kind: str, bucket: int) -> dict | None:
        prefix = keys.market_prices_of(kind) + bucket.to_bytes(8, "big")
        with self.db.iterator(prefix=prefix, reverse=True) as it:
            for _, value in it:
                return codec.loads(value)
        return None

    def price_history(self, kind: str | None, limit: int) -> list[dict]:
        rows = []
        with self.db.iterator(prefix=keys.MARKET_PRICES if kind is None else keys.market_prices_of(kind),
                              reverse=True) as it:
            shown: set[tuple[str, int, int]] = set()
            for key, value in it:
                k, bucket, at = keys.split_market_price(key)
                if (k, bucket, at // 1000) in shown:
                    continue  # one price per market and second: the newest (a put's own matching may clear twice)
                shown.add((k, bucket, at // 1000))
                rows.append({"kind": k, "bucket": bucket, "bucket_start": bucket * self.config.bucket_seconds,
                             "time_ms": at, **codec.loads(value)})
                if len(rows) >= limit:
                    break
        return rows

    def availability_map(self) -> dict[str, Decimal]:
        """Every participant's availability as matching weighs it, made again only when a peer's may have changed
        (with 1,000 peers, ~5 ms of loop CPU per put)."""
        state = self.peers.state_version() if self.peers is not None else None
        if self._availability is not None and self._availability[0] == state:
            return dict(self._availability[1])
        out = {self.me: Decimal(1)}
        if self.peers is not None:
            for d in self.peers.peers():
                a = self.peers.availability(d.id)
                if a.up is False:
                    out[d.id] = Decimal(0)
                else:
                    out[d.id] = Decimal(str(round(a.ratio_1h, 4))) if a.ratio_1h is not None else Decimal(1)
        self._availability = (state, out)
        return dict(out)

    def recognition_map(self) -> dict[str, dict[str, Decimal]]:
        out = {c.participant: dict(c.recognition) for c in self.book.commitments()}
        out[self.me] = self.recognition()
        return out

    def match(self, bids: list[Bid], exclude: frozenset[str] = frozenset()):
        """Match `bids` (this node's new needs) against the book: the MarketResult of the pure core."""
        return _matched(**self._match_inputs(bids, exclude, self.availability_map()))

    def _match_inputs(self, bids: list[Bid], exclude: frozenset[str], availability: dict[str, Decimal]) -> dict:
        """What `_matched` takes to match `bids` against the book, as it is now (made on the event loop: the pool
        matches a copy while the book goes on changing).

        Providers that are down (or in `exclude`: they just failed this node) are left out of the clearing
        itself; other active nodes' open needs compete for the same slots (an inactive participant is left out of
        every match, its needs too: a stranger's 1,000 fake peers' needs were matched with every put)."""
        down = {p for p, a in availability.items() if a == 0} | exclude
        live: dict[str, bool] = {}

        def active(owner: str) -> bool:
            if owner not in live:
                live[owner] = self.active(owner)
            return live[owner]

        asks = [a for a in self.book.asks() if a.slot.owner not in down and active(a.slot.owner)]
        mine = {b.slot.id for b in bids}
        others = [b for b in self.book.bids() if not (b.slot.owner == self.me and b.slot.id in mine)
                  and active(b.slot.owner)]
        return {"asks": asks, "bids": others + bids, "recognition": self.recognition_map(),
                "availability": availability, "bucket_seconds": self.config.bucket_seconds, "now_ms": now_ms()}

    def remember(self) -> None:
        """Keep the explanations of the newest matching, with their figures, for `xsc market explain`."""
        best: dict[str, int] = {}
        for a in self.book.asks():
            best[a.slot.kind] = min(best.get(a.slot.kind, a.price), a.price)
        self.explanations.keep(self.last_results, self.last_bids, best)

    def active(self, participant: str) -> bool:
        """May `participant` be matched: this node, or a peer still known, not known to be down, whose newest
        offer is current (signed within `market.freshness`: a node that stopped re-signing has left)."""
        if participant == self.me:
            return True
        held = self.book.get(participant)
        if held is None or held.timestamp < now_ms() - self.config.freshness * 1000:
            return False
        return self.peers is None or (self.peers.known(participant) and self.peers.up(participant))

    def forget(self, participant: str) -> None:
        """A node was removed: its commitment leaves the book (and LevelDB) and it is never matched again."""
        self._jsons.pop(participant, None)
        if self.book.forget(participant):
            self.db.delete(keys.market_commitment(parse_public_id(participant)))
            self.peer_digests.pop(participant, None)
            self._changed_book()
            self.touch()

    def need(self, need_id: str, kind: str, quantity: int, seconds: int, max_price: int, **wanted: Any) -> Bid:
        """A need slot of this node (`NeedRegistry.make`), to match with `deal`."""
        return self.needs.make(need_id, kind, quantity, seconds, max_price, **wanted)

    def _from_allocation(self, bids: list[Bid], exclude: frozenset[str], clearings: dict,
                         availability: dict[str, Decimal]) -> Steps:
        """Needs placed on the providers whose allocation states give this node's standing needs of their kind
        units (each provider's slots capped at what it still gives), priced at the call market's clearing
        price of their (kind, bucket): need id -> assignment.  Needs it cannot place are left to the market."""
        if self.allocated is None:
            return {}
        down = {p for p, a in availability.items() if a == 0} | exclude
        out: dict[str, Assignment] = {}
        for kind in sorted({b.slot.kind for b in bids}):
            given = self.allocated(kind)
            if given != self._allocation_seen.get(kind):
                self._allocation_seen[kind] = dict(given)  # a new allocation: nothing of it is spent yet
                self._allocation_spent[kind] = {}
            spent = self._allocation_spent[kind]
            room = {p: u - spent.get(p, 0) for p, u in given.items() if p not in down and self.active(p)}
            asks = [a.model_copy(update={"slot": a.slot.model_copy(update={"quantity": min(a.slot.quantity,
                                                                                           room[a.slot.owner])})})
                    for a in self.book.asks() if a.slot.kind == kind and room.get(a.slot.owner, 0) > 0]
            wanted = [b for b in bids if b.slot.kind == kind]
            if not asks or not wanted:
                continue
            result = yield match_needs, {"asks": asks, "bids": wanted, "recognition": self.recognition_map(),
                                         "availability": availability, "bucket_seconds": self.config.bucket_seconds,
                                         "now_ms": now_ms(), "allow_self": False}
            for b in wanted:
                a = result.assignments.get(need_key(self.me, b.slot.id))
                if a is None or room.get(a.provider, 0) < b.slot.quantity:
                    continue
                clearing = clearings.get((kind, a.bucket))
                price = None if clearing is None else clearing.price
                ask = next((x.price for x in asks if x.slot.owner == a.provider and x.slot.id == a.capacity_slot), None)
                if price is None or b.price < price or ask is None or ask > price:
                    continue
                room[a.provider] -= b.slot.quantity
                out[b.slot.id] = replace(a, price=price, allocated=True,
                                         cost=units_cost(kind, b.slot.quantity, b.slot.end - b.slot.start, price))
        return out

    async def deal(self, bids: list[Bid], exclude: frozenset[str] = frozenset(), *,
                   here: bool = False) -> dict[str, Any]:
        """Assignments for every bid, or MarketNoDeal explaining each need that got nothing.

        The call market is cleared first (price discovery); needs the converged allocation covers are placed
        on the providers that allocated to this node (`_from_allocation`), the rest by the call market,
        away from the providers the placed needs of their group took.

        Each matching runs in the CPU pool on a copy of the book made on the event loop (over a book of 1,000
        participants one took 60-230 ms of CPU, and held the loop that long); deals run one at a time, as they
        did when they ran on the loop, so that two never spend one allocation's room.  `here`: every matching run on
        the loop instead (the same answer; tests compare the two)."""
        async with self._dealing:
            steps = self._deal(bids, exclude)
            result: Any = None
            try:
                while True:
                    fn, kwargs = steps.send(result)
                    result = fn(**kwargs) if here else await in_pool(self.pool, _call, fn, kwargs)
            except StopIteration as done:
                return done.value

    def _deal(self, bids: list[Bid], exclude: frozenset[str]) -> Steps:
        """`deal` as steps: it yields each matching it needs, as (function, arguments), and is sent its result."""
        availability = self.availability_map()
        result = yield _matched, self._match_inputs(bids, exclude, availability)
        served = yield from self._from_allocation(bids, exclude, result.clearings, availability)
        if served:
            taken: dict[str | None, set[str]] = {}
            for b in bids:
                if b.slot.id in served and b.group is not None:
                    taken.setdefault(b.group, set()).add(served[b.slot.id].provider)
            rest = [b if not taken.get(b.group) else b.model_copy(update={"slot": b.slot.model_copy(update={
                        "filters": b.slot.filters.model_copy(update={
                            "deny": tuple(sorted(set(b.slot.filters.deny) | taken[b.group]))})})})
                    for b in bids if b.slot.id not in served]
            if not rest:
                return served
            discovered = result.clearings
            result = yield _matched, self._match_inputs(rest, exclude, self.availability_map())
            # One price for the whole deal: the rest is matched without the needs already placed, so its own
            # clearing may be lower; each of its assignments costs the first clearing's price when that is at
            # least what the rest cleared at (so still at least the provider's ask and at most the bid).
            result = replace(result, assignments={
                key: _repriced(a, discovered.get((a.kind, a.bucket)), bid_of.get(a.need_id))
                for key, a in result.assignments.items()}) if (bid_of := {b.slot.id: b for b in rest}) else result
            bids = rest
        self.last_results = result
        self.last_bids = {need_key(self.me, b.slot.id): b for b in bids}
        self._record_prices(result.clearings)
        named = {b.slot.id: need_key(self.me, b.slot.id) for b in bids}
        missing = [n for n, key in named.items() if key not in result.assignments]
        if missing:
            reasons = [result.explanations[named[n]].message for n in missing if named[n] in result.explanations]
            # The need ids go in the message: the CLI prints only the message and hint of a problem.
            raise MarketNoDeal(f"the market found no provider for {len(missing)} of {len(bids)} need(s) "
                               f"({', '.join(sorted(missing))}): " + "; ".join(sorted(set(reasons))[:3]),
                               hint=f"see why with `xsc market explain {sorted(missing)[0]}`; raise --max-price, "
                                    "or wait for providers (xsc market book)",
                               needs={n: result.explanations[named[n]].code for n in missing
                                      if named[n] in result.explanations})
        return {**served, **{n: result.assignments[key] for n, key in named.items()}}

    def spent(self, kind: str, assignments: list[Assignment]) -> None:
        """Deals of `assignments` placed from the allocation were carried out (a put stored its shares): count
        them against what each provider gives, and shrink this node's standing needs by as much."""
        used = [a for a in assignments if a.allocated]
        if not used:
            return
        spent = self._allocation_spent.setdefault(kind, {})
        for a in used:
            spent[a.provider] = spent.get(a.provider, 0) + a.quantity
        self.allocation_served["needs"] += len(used)
        self.allocation_served["units"] += sum(a.quantity for a in used)
        self.needs.spend(kind, sum(a.quantity for a in used))

    def invoked(self, assignment: Assignment, fuel: int) -> None:
        """An invoke placed by `compute_deal` ran (returned or trapped) and used `fuel`: if it was placed from the
        allocation, that fuel counts against the provider's part and this node's standing compute needs shrink
        by exactly as much (the rest of the call's reserved budget was not used: it stays allocated)."""
        if assignment.allocated and fuel > 0:
            self.spent("compute", [replace(assignment, quantity=fuel)])

    def _allocation_room(self, kind: str) -> dict[str, int]:
        """provider -> units its allocation still gives this node's needs of `kind` (given less spent)."""
        if self.allocated is None:
            return {}
        given = self.allocated(kind)
        spent = self._allocation_spent.get(kind, {}) if given == self._allocation_seen.get(kind) else {}
        return {p: u - spent.get(p, 0) for p, u in given.items()}

    async def compute_deal(self, fuel: int, max_price: int, exclude: frozenset[str] = frozenset()):
        """The provider and price of an invoke of at most `fuel`: placed from the allocation where a provider's
        allocation to this node's standing compute needs still holds the call's reserved fuel (`deal`), else
        matched on the market; the answer is kept until the book or the allocation changes (an invoke must
        not pay a matching of the whole book each time), and one placed from the allocation only while the
        provider's part still holds it.  `exclude`: providers that just failed this call (left out of the
        clearing too; such an answer is not kept)."""
        if exclude:
            need = self.need(f"invoke-{random.getrandbits(48):012x}", "compute", 1 << fuel.bit_length(), 60,
                             max_price)
            try:
                return (await self.deal([need], exclude))[need.slot.id]
            finally:
                self.remember()
        room = self._allocation_room("compute")
        key = (self.version, fuel.bit_length(), max_price, tuple(sorted(p for p, u in room.items()
                                                                      if u >= 1 << fuel.bit_length())))
        found = self._compute_deals.get(key)
        if found is not None and found.allocated and room.get(found.provider, 0) < found.quantity:
            found = None  # its part of the allocation was used up since
        if found is None:
            need = self.need(f"invoke-{random.getrandbits(48):012x}", "compute", 1 << fuel.bit_length(),
                             60, max_price)
            try:
                found = (await self.deal([need]))[need.slot.id]
            finally:
                self.remember()
            if len(self._compute_deals) > 64:
                self._compute_deals.clear()
            self._compute_deals[key] = found
        return found

    # --- views -----------------------------------------------------------------------------
    def book_view(self, kind: str | None = None) -> dict[str, Any]:
        rows: dict[tuple[str, int], dict] = {}
        for order in self.book.orders():
            if kind and order.kind != kind:
                continue
            row = rows.setdefault((order.kind, order.bucket), {"kind": order.kind, "bucket": order.bucket,
                                                               "asks": [], "bids": []})
            row["asks" if order.side == "ask" else "bids"].append(
                {"owner": order.owner, "id": order.id, "quantity": order.quantity, "price": order.price})
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
        differ = [p for p in peers if self.peer_digests.get(p) != self.book.digest()]
        if differ:
            return f"{len(differ)} of {len(peers)} peers held another book at the last swap"
        return None

    def _peer_ids(self) -> list[str]:
        return [d.id for d in self.peers.peers()] if self.peers is not None else []

    def offer_view(self) -> dict[str, Any]:
        c = self.config
        used, capacity = self.storage_usage()
        return {
            "storage": {"offered": c.offer_storage, "capacity": capacity, "used": used, "ask": self.ask("storage"),
                        "floor": c.storage_ask_floor, "ceiling": c.storage_ask_ceiling, "unit": "GiB-hour"},
            "compute": {"offered": c.offer_compute, "fuel_per_bucket": self.compute_capacity(),
                        "used": self.fuel_used.get(self.bucket(), 0), "ask": self.ask("compute"),
                        "floor": c.compute_ask_floor, "ceiling": c.compute_ask_ceiling, "unit": "million fuel"},
            "exponent": c.ask_exponent, "bucket_seconds": c.bucket_seconds,
            "slots": self._asks_view(),
        }

    def price_view(self, kind: str | None, limit: int) -> list[dict]:
        self.clearings()  # records a new clearing price, if the book changed since
        return self.price_history(kind, limit)

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
        holds another of, and our book's digest.  Bounded before anything is read; a stranger refused (403)."""
        if not isinstance(body, dict):
            raise InvalidArgument('send {"commitments": {participant: hash}}')
        digest = parse_digest(body.get("commitments"), "commitments")
        if self.peers is not None and not self.peers.known(sender):
            raise UnknownPeer(f"{sender[:16]} is not a known peer of this node",
                              hint="a node joins first (xsc peers add); only peers exchange digests")
        held = {p: self.book.get(p) for p in digest if self.book.get(p) is not None}
        out = {"commitments": [self._json_of(c) for c in differing(digest, held)], "digest": self.book.digest()}
        self._count(out)
        return out

    def recognize(self, peer: Any, weight: Any, credit: Any = False) -> dict:
        """Set a user weight from the API (a decimal text or number; None: back to the derived one), and with
        `credit` the credit line this node gives that peer (micro-credits; None: back to ledger.peer_credit)."""
        if not isinstance(peer, str):
            raise InvalidArgument("send {\"peer\": NODE_ID, \"weight\": \"0.5\"} (weight null: back to the derived one)")
        if credit is not False and credit is not None and (type(credit) is not int or credit < 0):
            raise InvalidArgument(f"a credit line is a number of micro-credits, not {credit!r}")
        if weight is not None:
            try:
                weight = Decimal(str(weight))
            except InvalidOperation:
                raise InvalidArgument(f"not a number: {weight!r}", hint="a weight is a decimal from 0 to 1000") from None
        self.set_recognition(peer, weight)
        if credit is not False and self.credit_lines is not None:
            self.credit_lines.set_credit(peer, credit)
        row = next((r for r in self.recognition_view() if r["peer"] == peer), None) or {"peer": peer, "weight": None}
        if self.credit_lines is not None:
            row["credit_line"] = self.credit_lines.line(peer)
        return row

    def _asks_view(self) -> list[dict[str, Any]]:
        mine = self.book.get(self.me)
        return [{"id": a.slot.id, "kind": a.slot.kind, "quantity": a.slot.quantity, "price": a.price,
                 "start": a.slot.start, "end": a.slot.end} for a in (mine.asks if mine else ())]

    def status(self) -> dict[str, Any]:
        peers = self._peer_ids()
        if self.interest is not None:
            wanted = self.interested()
            peers = [p for p in peers if p in wanted]  # with subscriptions: the peers whose commitments we want
        known = [p for p in peers if self.book.get(p) is not None]
        digest = self.book.digest()  # once (a hash over every participant's signature)
        return {
            "node": self.me,
            "stamp": self.stamp.encode().hex(),
            "digest": digest,
            "participants": len(self.book.commitments()),
            "peers_in_book": len(known),
            "peers": len(peers),
            # Every peer's offer is here, and every peer held this very book at our last exchange with it.
            "peers_agreeing": sum(self.peer_digests.get(p) == digest for p in peers),
            "converged": len(known) == len(peers) and all(self.peer_digests.get(p) == digest for p in peers),
            "converged_reason": self._convergence_reason(peers, known),
            "asks": self._asks_view(),
            "needs": [{"id": b.slot.id, "kind": b.slot.kind, "quantity": b.slot.quantity, "price": b.price}
                      for b in self.needs.bids()],
            "served_from_allocation": dict(self.allocation_served),
            "bytes_sent": self.bytes_sent,
        }

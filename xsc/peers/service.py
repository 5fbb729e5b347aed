"""Peers: the directory of known nodes (signed descriptors in LevelDB), joining and gossip.

The rest of the node is given the PeerService: `peers()`, `peer(id)`, `availability(node_id)` and
`request(...)` (a signed request through the node's one PeerClient).  Its routes: node/http/peers.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable


from .. import __version__, codec
from ..config import NodeConfig, split_peer_address
from ..db import Database
from ..errors import ChallengeFailed, InvalidArgument, InvalidDescriptor, PeerError, PeerNotFound, PeerRefused
from ..health import Availability, PeerHistory, availability, check_answer, check_nonce, new_nonce
from ..health.core.stats import bucket_start
from ..health import answer as challenge_answer
from ..identity import Identity, parse_public_id
from ..net.addresses import address_key
from ..net.peer_client import PeerClient, PeerResponse
from ..tasks import Quota, now_ms, stop, woken
from .admission import Admission
from .core.changes import ChangeFeed
from .core.descriptors import NodeDescriptor, make_descriptor, newer, newsworthy, parse_descriptor
from .store import PeerStore

log = logging.getLogger(__name__)

MAX_PEERS = 1000  # descriptors of new nodes beyond this are ignored (bounds what anyone can make us store)
MAX_PER_MESSAGE = MAX_PEERS + 1
# New nodes one gossip message may introduce: a stranger cannot fill the directory with self-signed fakes at
# once; the ones it names beyond this are learned later, from other peers, if they are real.
MAX_NEW_PER_MESSAGE = 16
BYTES_PER_NEW_NODE = 16 * 1024  # bytes of a message of descriptors per new node its address must have left
NEW_NODE_BURST = 256  # nodes not known before, from one address at once (peers.new_node_rate refills it)
PASS_ON_MS = 24 * 3_600_000  # descriptors not re-signed for a day are kept but no longer passed on
REFRESH_MS = 60_000  # our own descriptor is re-signed this often, and at once when its capacity or free space change
GOSSIP_FANOUT = 3  # peers told at once when we learn of a new node
# Peers' descriptors a gossip message carries at most (besides our own): a node's gossip costs the same in a
# network of 8 as of 1,000.  News goes first, so a new node still spreads in a few hops.
GOSSIPED = 8
NEWS_PASSES = 4  # messages a node learned of is passed on in before any sample of the others (a rumour's count)
MAX_NEWS = 256  # nodes learned of kept as news (a devnet or a grid starting together brings many at once)
GOSSIP_JITTER = 0.2
# Bytes of a peer's answer read at most, before any of it is parsed.  An answer to a challenge is ~800 bytes (two
# ids, a nonce, a signature, a descriptor) and to an exchange 1 + GOSSIPED descriptors (~5 KB); the client's own
# bound is 16 MiB, and a stranger's fake nodes answering the first probes of 64 at a time with that much held a GiB.
CHALLENGE_ANSWER = 16 * 1024
EXCHANGE_ANSWER = 256 * 1024
JOIN_RETRY_MAX = 30.0



def host_of(url: str) -> str:
    """HOST of a node URL (its IPv6 brackets kept): whose budget of new nodes a peer's answer draws on."""
    return address(url).rsplit(":", 1)[0]


def address(url: str) -> str:
    """HOST:PORT of a node URL: http:// and https:// name the same listener (xsc/serve/listener.py)."""
    return url.rstrip("/").split("://", 1)[-1]


class PeerDirectory:
    """Known descriptors, in memory and in LevelDB (`p/d/`), and the nodes the user removed (`p/x/`).

    At start only what this node takes now is kept: the descriptors `admitted` accepts (the node's admission as
    configured now: a raised `peers.min_difficulty`, a grid secret), at most MAX_PEERS of them (the newest-signed);
    the others, and any record that is not a descriptor, are deleted together in one batch."""

    def __init__(self, db: Database, admitted: Callable[[NodeDescriptor], bool] = lambda d: True) -> None:
        self._store = PeerStore(db)
        self._known: dict[str, NodeDescriptor] = {}
        self._sorted: list[NodeDescriptor] | None = None  # all()'s answer, made again after a change
        self.version = 0  # grows at every change
        self.changes = ChangeFeed()  # the nodes each change was of: who takes part in the market is kept by them
        self._removed: set[str] = set()
        dropped: list[bytes] = []
        stored: dict[str, bytes] = {}  # id -> the key its record is under
        for node_key, value in self._store.descriptors():
            try:
                descriptor = NodeDescriptor(**value)
            except TypeError:
                log.warning("dropping an unreadable peer descriptor of %s", node_key.hex())
                dropped.append(node_key)
                continue
            if not admitted(descriptor):
                log.info("node %s is not admitted under this node's configuration: not a peer", descriptor.id)
                dropped.append(node_key)
                continue
            self._known[descriptor.id], stored[descriptor.id] = descriptor, node_key
        if len(self._known) > MAX_PEERS:
            log.info("%d peers stored, more than the %d kept: the oldest-signed are dropped", len(self._known),
                     MAX_PEERS)
            for d in sorted(self._known.values(), key=lambda d: (d.timestamp, d.id), reverse=True)[MAX_PEERS:]:
                del self._known[d.id]
                dropped.append(stored[d.id])
        if dropped:
            with self._store.batch() as batch:
                for node_key in dropped:
                    batch.forget_descriptor(node_key)
        self._removed.update(self._store.removed_nodes())

    def __len__(self) -> int:
        return len(self._known)

    def _changed(self, *node_ids: str) -> None:
        self._sorted = None
        self.version += 1
        self.changes.step(*node_ids)

    def all(self) -> list[NodeDescriptor]:
        # Asked by /health, gossip, probes and matching alike: sorting a full directory each time was most of
        # what a /health cost with 1,000 peers.
        if self._sorted is None:
            self._sorted = sorted(self._known.values(), key=lambda d: d.id)
        return list(self._sorted)

    def get(self, node_id: str) -> NodeDescriptor | None:
        return self._known.get(node_id)

    def at_url(self, url: str) -> list[NodeDescriptor]:
        return [d for d in self._known.values() if address(d.url) == address(url)]

    def keep_only(self, admitted: Callable[[NodeDescriptor], bool]) -> None:
        """Forget the descriptors of nodes not admitted by this node's config (their records too, in one batch)."""
        gone = [d for d in self._known.values() if not admitted(d)]
        if not gone:
            return
        with self._store.batch() as batch:
            for d in gone:
                log.info("node %s is not admitted under this node's configuration: not a peer", d.id)
                del self._known[d.id]
                batch.forget_descriptor(d.key)
        self._changed(*(d.id for d in gone))

    def is_removed(self, node_id: str) -> bool:
        return node_id in self._removed

    def merge(self, descriptors: list[NodeDescriptor], *, me: str, my_url: str,
              proven: Callable[[str], bool] = lambda node_id: False,
              evicted: list[str] | None = None) -> list[NodeDescriptor]:
        """Keep each descriptor newer than ours of its node; return those worth passing on at once.

        At most MAX_NEW_PER_MESSAGE nodes not known before are taken from one message; when the directory
        is full, the oldest-signed node never proven up (`proven`) makes room for a new one (its id added to
        `evicted`), else the new one is ignored."""
        news: list[NodeDescriptor] = []
        new_nodes = 0
        evictable: list[NodeDescriptor] | None = None  # made at the first eviction (below)
        with self._store.batch() as batch:
            for d in descriptors:
                known = self._known.get(d.id)
                # Our own URL under another id is a node that was here before us (an old data dir): not a peer.
                if d.id == me or d.id in self._removed or address(d.url) == address(my_url) or not newer(d, known):
                    continue
                if known is None:
                    new_nodes += 1
                    if new_nodes > MAX_NEW_PER_MESSAGE:
                        continue
                    if len(self._known) >= MAX_PEERS:
                        if evictable is None:
                            # Once a message, not once a new node: asking `proven` of a full directory's 1,000 nodes
                            # for each of a message's 16 new ones held the event loop ~40 ms.
                            evictable = sorted((k for k in self._known.values() if not proven(k.id)),
                                               key=lambda k: k.timestamp, reverse=True)
                        gone = self._evict_oldest(batch, evictable)
                        if gone is None:
                            log.warning("ignoring node %s: already %d peers known", d.id, MAX_PEERS)
                            continue
                        if evicted is not None:
                            evicted.append(gone)
                if newsworthy(d, known):
                    news.append(d)
                self._known[d.id] = d
                self._changed(d.id)
                batch.descriptor(d.key, d.encode())
        return news

    def _evict_oldest(self, batch, evictable: list[NodeDescriptor]) -> str | None:
        """Forget the oldest-signed of `evictable` (nodes never proven up, newest-signed first) still held as it
        was, to make room; its id (None: there was none)."""
        while evictable:
            oldest = evictable.pop()
            if self._known.get(oldest.id) is oldest:  # (not one this message brought a newer descriptor of)
                batch.forget_descriptor(oldest.key)
                del self._known[oldest.id]
                self._changed(oldest.id)
                return oldest.id
        return None

    def remove(self, node_id: str, at: int) -> None:
        key = parse_public_id(node_id)
        with self._store.batch() as batch:
            batch.forget_descriptor(key)
            batch.removed(key, at)
        self._known.pop(node_id, None)
        self._changed(node_id)
        self._removed.add(node_id)

    def unblock(self, node_id: str) -> None:
        if node_id in self._removed:
            self._store.unremoved(parse_public_id(node_id))
            self._removed.discard(node_id)


async def challenge(client: PeerClient, identity: Identity, url: str, node_id: str, timeout: float | None = None
                    ) -> dict:
    """Ask the node at url to prove it is node_id, now; return its answer (with its fresh descriptor)."""
    nonce = new_nonce()
    response = await client.request(url, "POST", "/v1/peer/challenge", json={"nonce": nonce}, to=node_id,
                                    timeout=timeout, max_size=CHALLENGE_ANSWER)
    reply = response.json()
    try:
        check_answer(reply, nonce=nonce, prober=identity.id, responder=node_id)
    except ChallengeFailed as err:  # a failed probe; and, from the node the handshake proved answered, a strike
        response.shapeless(f"node {node_id} at {url} answered a challenge so: {err.message}")
        raise
    return reply


class PeerService:
    def __init__(self, *, identity: Identity, db: Database, config: NodeConfig, client: PeerClient,
                 storage: Callable[[], dict | None], url: str | None = None, admission: Admission | None = None,
                 new_nodes: Quota | None = None, directory: PeerDirectory | None = None, health: Any = None) -> None:
        self.identity = identity
        self.new_nodes = new_nodes  # per address, how many nodes not known before its messages may add (None: 16 each)
        self.config = config
        self.client = client
        self.admission = admission or Admission(min_difficulty=0, grid_secret="")
        self.url = url or config.peers.public_url or config.url  # what our descriptor says (https://: app.peer_url)
        self.directory = directory if directory is not None else PeerDirectory(db)
        # Peers kept from before this node asked for more proof of work (or for a grid secret) are not peers now.
        self.directory.keep_only(lambda d: self.admission.refusal(d, quarantine=False) is None)
        self.health = health  # the probes (xsc.peers.probes.HealthService): availability() asks it (None: no probes)
        if health is not None:
            health.watch(descriptor=self.accept, first_answer=self.first_answered)
        # told of every node the user removes or a full directory pushes out (the market, the allocation)
        self.on_removed: list[Callable[[str], None]] = []
        self._storage = storage
        self._own: NodeDescriptor | None = None
        self._news = asyncio.Event()
        self._news_passes: dict[str, int] = {}  # node learned of -> messages it was passed on in so far
        self._pools: tuple[tuple, list[NodeDescriptor], list[NodeDescriptor]] | None = None  # _gossip_pools's
        self._tasks: list[asyncio.Task] = []

    # --- what the rest of the node uses ---------------------------------------------
    def peers(self) -> list[NodeDescriptor]:
        """Every known node but this one (whether up or not: ask availability())."""
        return self.directory.all()

    def get(self, node_id: str) -> NodeDescriptor | None:
        """A known node's descriptor (whether up or not), or None."""
        return self.directory.get(node_id)

    def known(self, node_id: str) -> bool:
        """A node in the directory and not quarantined: the market takes and matches only these."""
        quarantine = self.admission.quarantine
        return self.directory.get(node_id) is not None and (quarantine is None or quarantine.active(node_id) is None)

    def peer(self, node_id: str) -> NodeDescriptor:
        descriptor = self.directory.get(node_id)
        if descriptor is None:
            raise PeerNotFound(f"no known peer has id {node_id}", hint="`xsc peers ls` lists the known peers")
        return descriptor

    def state_version(self) -> tuple:
        """Changes whenever a peer's availability may have: the directory, a probe or audit result, or the
        5-minute bucket the ratios are counted in (what the market's recognition is made of)."""
        health = self.health.version if self.health is not None else 0
        return self.directory.version, health, bucket_start(now_ms())

    def ups_version(self) -> int:
        """Changes whenever a peer may have come up or gone down (its last probe's outcome): not at every probe, as
        `state_version` does."""
        return self.health.ups if self.health is not None else 0

    def flips_version(self) -> tuple[int, int]:
        """Changes whenever a peer's descriptor or its being up did (`flipped_since` says whose)."""
        return self.directory.version, self.ups_version()

    def flipped_since(self, version: tuple[int, int]) -> set[str] | None:
        """The peers whose descriptor, or whose last probe's outcome, changed after `flips_version()` was `version`;
        None when they are no longer all remembered."""
        known = self.directory.changes.since(version[0])
        ups = self.health.flips.since(version[1]) if self.health is not None else set()
        return None if known is None or ups is None else known | ups

    def availability_version(self) -> tuple[int, int, int]:
        """Changes whenever a peer's availability may have: its descriptor or its probe history did
        (`availability_changed_since` says whose), or the 5-minute bucket the ratios are counted in moved."""
        return self.directory.version, self.health.probed.version if self.health is not None else 0, \
            bucket_start(now_ms())

    def availability_changed_since(self, version: tuple[int, int, int]) -> set[str] | None:
        """The peers whose descriptor or probe history changed after `availability_version()` was `version`; None
        when they are no longer all remembered."""
        known = self.directory.changes.since(version[0])
        probed = self.health.probed.since(version[1]) if self.health is not None else set()
        return None if known is None or probed is None else known | probed

    def availability(self, node_id: str) -> Availability:
        if self.health is None:
            return availability(PeerHistory(), now_ms())
        return self.health.availability(node_id)

    def up(self, node_id: str) -> bool:
        """Did the node answer its last probe?  Until a node has answered one, nothing but probes is sent to it
        (docs/security.md): a stranger's message names nodes at addresses of its choosing."""
        return self.availability(node_id).up is True

    def up_peers(self) -> list[NodeDescriptor]:
        """The known nodes that answered their last probe: the only ones gossip, the market and the allocation contact."""
        return [d for d in self.peers() if self.up(d.id)]

    async def request(self, peer_url: str, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                      timeout: float | None = None, to: str | None = None, **kwargs: Any) -> PeerResponse:
        """A signed request to a peer; addressed to the node known at that URL (so it cannot be replayed to another)."""
        if to is None:
            at_url = self.directory.at_url(peer_url.rstrip("/"))
            to = at_url[0].id if len(at_url) == 1 else None
        return await self.client.request(peer_url, method, path, json=json, data=data, timeout=timeout, to=to,
                                         **kwargs)

    # --- descriptors ------------------------------------------------------------------
    def descriptor(self) -> NodeDescriptor:
        """This node's own descriptor, re-signed when it is a minute old or its capacity or free space changed."""
        storage = self._storage() or {}
        # (at most what its peers take: 8 PiB, 2^53 - 1 bytes, as the market's slots)
        capacity = min(int(storage.get("capacity", self.config.storage.capacity)), codec.MAX_JSON_INT)
        free = min(capacity, max(0, int(storage.get("free", capacity))))
        own, now = self._own, now_ms()
        if own is None or now - own.timestamp >= REFRESH_MS or (own.capacity, own.free) != (capacity, free) \
                or own.url != self.url:
            own = self._own = make_descriptor(self.identity, url=self.url, capacity=capacity, free=free,
                                              version=__version__, timestamp=max(now, own.timestamp + 1 if own else 0),
                                              grid_secret=self.admission.grid_secret)
        return own

    def accept(self, items: Any, source: str | None = None) -> list[NodeDescriptor]:
        """Validate every descriptor of a message, then merge them all (one bad one refuses the message).

        `source`: the address the message came from, whose budget of new nodes (`peers.new_node_rate`) it draws on:
        a stranger's messages of 999 fake descriptors each, from fresh keys, made this node check and probe 16 new
        nodes a message, as fast as it sent them."""
        if not isinstance(items, list):
            raise InvalidArgument("descriptors must be a list", hint='send {"descriptors": [...]}')
        if len(items) > MAX_PER_MESSAGE:
            raise InvalidArgument(f"at most {MAX_PER_MESSAGE} descriptors per message")
        now = now_ms()
        # What we hold already (or is us) needs no signature check: most of a gossip message is old news.  Of the
        # nodes not known yet only the first MAX_NEW_PER_MESSAGE are even checked (the rest would be dropped).
        fresh = [item for item in items if not self._known_already(item)]
        unknown = [item for item in fresh if not (isinstance(item, dict) and isinstance(item.get("id"), str)
                                                  and self.directory.get(item["id"]) is not None)]
        allowed = MAX_NEW_PER_MESSAGE
        if source is not None and self.new_nodes is not None and unknown:
            allowed = self.new_nodes.take_up_to(address_key(source), time.monotonic(), min(len(unknown), MAX_NEW_PER_MESSAGE))
        skipped = {id(item) for item in unknown[allowed:]}
        parsed = []
        for item in fresh:
            if id(item) in skipped:
                continue
            descriptor = parse_descriptor(item, now_ms=now)
            refusal = self.admission.refusal(descriptor)
            if refusal is None:
                parsed.append(descriptor)
            else:  # valid, but not admitted here: dropped, not stored (its sender may admit it)
                log.debug("not taking node %s: %s", descriptor.id, refusal)
        unknown_ids = {d.id for d in parsed if self.directory.get(d.id) is None}
        evicted: list[str] = []
        news = self.directory.merge(parsed, me=self.identity.id, my_url=self.url,
                                    proven=lambda node_id: self.availability(node_id).ratio_24h is not None
                                    and self.availability(node_id).up is True, evicted=evicted)
        for node_id in evicted:  # nothing of a node pushed out is kept: its next eviction makes room for more
            self._forget(node_id)
        learned = [d for d in parsed if d.id in unknown_ids and self.directory.get(d.id) is d]
        if learned and self.health is not None:
            self.health.learned(learned)
        if news:
            log.info("learned of %s", ", ".join(f"{d.id} at {d.url}" for d in news))
            for d in news:
                self._news_passes[d.id] = 0
            while len(self._news_passes) > MAX_NEWS:
                del self._news_passes[next(iter(self._news_passes))]  # the oldest news
            self._news.set()
        return news

    def _known_already(self, item: Any) -> bool:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            return False
        if item["id"] == self.identity.id:
            return True
        known = self.directory.get(item["id"])
        stamp, signature = item.get("timestamp"), item.get("signature")
        return known is not None and type(stamp) is int and isinstance(signature, str) \
            and (stamp, signature) <= (known.timestamp, known.signature)

    def gossip_payload(self) -> list[dict]:
        """Our descriptor and GOSSIPED of the peers' fresh ones: the news passed on least so far first (each is
        passed on in NEWS_PASSES messages), then a random sample of those proven up.  What a message costs stays
        the same however many peers this node knows, and each exchange spreads others."""
        cutoff = now_ms() - PASS_ON_MS

        def passed_on(node_id: str) -> NodeDescriptor | None:
            d = self.directory.get(node_id)
            return d if d is not None and d.timestamp >= cutoff else None
        for gone in [n for n in self._news_passes if passed_on(n) is None]:  # removed, or no longer passed on
            del self._news_passes[gone]
        news = sorted(self._news_passes, key=self._news_passes.__getitem__)[:GOSSIPED]
        for node_id in news:
            self._news_passes[node_id] += 1
            if self._news_passes[node_id] >= NEWS_PASSES:
                del self._news_passes[node_id]
        sent = [self.directory.get(n) for n in news]
        up, rest = self._gossip_pools()
        wanted = GOSSIPED - len(sent)
        sample = random.sample(up, min(wanted + len(news), len(up)))
        sent += [d for d in sample if d.id not in news and d.timestamp >= cutoff][:wanted]
        for d in rest:  # (newest first)
            if len(sent) >= GOSSIPED:
                break
            if d.id not in news and d.timestamp >= cutoff:
                sent.append(d)
        return [self.descriptor().to_json()] + [d.to_json() for d in sent]

    def _gossip_pools(self) -> tuple[list[NodeDescriptor], list[NodeDescriptor]]:
        """The descriptors passed on, those proven up and the others newest first, made again only when the
        directory or a probe changed them, or a minute passed: every message of descriptors (a unit of its sender's
        work quota) is answered with a sample, and asking each of a full directory's 1,000 peers whether it is up
        would make an answer 0.9 ms of the event loop."""
        state = (self.directory.version, self.health.version if self.health is not None else 0, now_ms() // 60_000)
        if self._pools is None or self._pools[0] != state:
            cutoff = now_ms() - PASS_ON_MS
            fresh = [d for d in self.peers() if d.timestamp >= cutoff]
            ups = [self.availability(d.id).up is True for d in fresh]
            self._pools = (state, [d for d, up in zip(fresh, ups) if up],
                           sorted((d for d, up in zip(fresh, ups) if not up), key=lambda d: -d.timestamp))
        return self._pools[1], self._pools[2]

    async def exchange(self, url: str, *, to: str | None = None, unblock: bool = False) -> NodeDescriptor:
        """Send what we know to the node at url, take what it knows; return its own descriptor.

        Without `to` (first contact), the node that proves a key in the TLS handshake is the one asked (trust
        on first use): the request is pinned and signed for it, and its descriptor must be its own."""
        if to is None:
            to = await self.client.identify(url)
        response = await self.client.request(url, "POST", "/v1/peer/descriptors",
                                             json={"descriptors": self.gossip_payload()}, to=to,
                                             max_size=EXCHANGE_ANSWER)
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("descriptors", []), list):
            raise response.shapeless(f"peer {url} answered the descriptor exchange with something else", url=url,
                                     hint='a node answers {"self": descriptor, "descriptors": [descriptor, ...]}')
        try:
            responder = parse_descriptor(body.get("self"), now_ms=now_ms())
            if response.node is not None and responder.id != response.node:  # TLS proved who answered
                raise InvalidDescriptor(f"its own descriptor is node {responder.id}'s, but node {response.node} "
                                        "answered")
            refusal = self.admission.refusal(responder)
            if refusal is not None:
                raise PeerRefused(f"node {responder.id} at {url} is not admitted here: {refusal}", url=url,
                                  hint=self.admission.refusal_hint(responder))
            if unblock:
                self.directory.unblock(responder.id)
            self.accept([body["self"], *body.get("descriptors", [])], source=host_of(url))
        except (InvalidDescriptor, InvalidArgument) as err:  # (a node this one does not admit is no misbehaviour)
            raise response.shapeless(f"peer {url} sent bad descriptors: {err}", url=url) from None
        return responder

    async def challenge(self, url: str, node_id: str, *, timeout: float | None = None) -> dict:
        return await challenge(self.client, self.identity, url, node_id, timeout)

    async def add(self, url: str) -> NodeDescriptor:
        """Join the node at url (the user asked: a node removed before is welcome again).

        `https://NODE_ID@HOST:PORT` pins the node: its TLS key must be NODE_ID before anything is sent.
        Without an id the first node to answer there is trusted (and must hold the key its descriptor names)."""
        try:
            url, node = split_peer_address(url)
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        if address(url) == address(self.url):
            raise InvalidArgument(f"{url} is this node's own URL", hint="give the URL of another node")
        if node == self.identity.id:
            raise InvalidArgument(f"the URL pins this node's own id {node}, not the id of the node at {url}",
                                  hint="pin that node's id (`xsc node status` on it), or leave the id out")
        responder = await self.exchange(url, to=node, unblock=True)
        if responder.id == self.identity.id:
            raise InvalidArgument(f"{url} is this node itself", hint="give the URL of another node")
        start = time.perf_counter()
        reply = await self.challenge(url, responder.id)
        latency_ms = (time.perf_counter() - start) * 1000
        if isinstance(reply.get("descriptor"), dict) and reply["descriptor"].get("id") == responder.id:
            self.accept([reply["descriptor"]])
        joined = self.directory.get(responder.id) or responder
        if self.health is not None:  # its answer to our challenge is a probe that succeeded
            self.health.answered(joined, latency_ms)
        return joined

    def answer_challenge(self, nonce: object, prober: str) -> dict:
        """Prove this node's identity to `prober`: the nonce signed with both ids, and our fresh descriptor."""
        return {**challenge_answer(self.identity, check_nonce(nonce), prober), "descriptor": self.descriptor().to_json()}

    def view(self, d: NodeDescriptor) -> dict:
        """A peer's descriptor with its health, as the API shows it."""
        health = self.availability(d.id)
        return {**d.to_json(), "up": health.up, "last_probe": health.last_probe, "latency_ms": health.latency_ms,
                "ratio_1h": health.ratio_1h}

    def table(self) -> dict:
        return {"self": self.descriptor().to_json(), "peers": [self.view(d) for d in self.peers()]}

    async def join(self, url: object) -> dict:
        if not isinstance(url, str):
            raise InvalidArgument("url is missing", hint='send {"url": "https://NODE_ID@HOST:PORT"}')
        peer = await self.add(url)
        return {"peer": self.view(peer), "known": len(self.peers())}

    def check_budget(self, source: str | None, size: int) -> None:
        """Before a message of descriptors (`size` bytes) from `source` is even parsed: QuotaExceeded unless that
        address has one new node left per BYTES_PER_NEW_NODE of it.  A flood's messages of 999 fake descriptors,
        ~60 a second of ~300 KB, were parsed only to add nothing once the address's budget was spent."""
        if source is not None and self.new_nodes is not None:
            self.new_nodes.require(address_key(source), time.monotonic(), f"address {source}", size / BYTES_PER_NEW_NODE)

    def gossip_answer(self, items: object, source: str | None = None) -> dict:
        self.accept(items, source)
        return {"self": self.descriptor().to_json(), "descriptors": self.gossip_payload()}

    def status(self) -> dict:
        ups = [self.availability(d.id).up for d in self.peers()]
        return {"url": self.url, "known": len(ups), "up": sum(u is True for u in ups)}

    def remove(self, node_id: str) -> None:
        parse_public_id(node_id)
        if node_id == self.identity.id:
            raise PeerNotFound("that is this node's own id: a node is no peer of its own",
                               hint="see the ids of its peers with: xsc peers ls")
        if self.directory.get(node_id) is None and not self.directory.is_removed(node_id):
            raise PeerNotFound(f"no known peer has id {node_id}", hint="`xsc peers ls` lists the known peers")
        self.directory.remove(node_id, now_ms())
        self._forget(node_id)

    def _forget(self, node_id: str) -> None:
        """A node no longer in the directory: its probe history, its commitment, its allocation records go."""
        if self.health is not None:
            self.health.forget(node_id)
        for hook in self.on_removed:
            hook(node_id)

    # --- join and gossip ------------------------------------------------------------------
    def start(self) -> None:
        seeds = [u for u in self.config.peers.urls if address(split_peer_address(u)[0]) != address(self.url)]
        if len(self.directory):
            self._news.set()  # tell known peers at once that we are back (perhaps at a new URL)
        self._tasks = [asyncio.create_task(self._join(seeds), name="xsc-join"),
                       asyncio.create_task(self._gossip(), name="xsc-gossip")]

    async def close(self) -> None:
        await stop(*self._tasks)

    async def _join(self, seeds: list[str]) -> None:
        """Exchange descriptors with every configured node, retrying (backing off) those not up yet."""
        delay = 0.25
        pending = list(seeds)
        while pending:
            for seed in list(pending):
                url, node = split_peer_address(seed)
                try:
                    responder = await self.exchange(url, to=node)
                except PeerError as err:
                    # Said once; the retries (at most every 30 s, forever) stay quiet.
                    log.log(logging.INFO if delay == 0.25 else logging.DEBUG, "could not join %s yet: %s", url, err)
                    continue
                pending.remove(seed)
                log.info("joined %s (node %s); %d peers known", url, responder.id, len(self.directory))
            if pending:
                await asyncio.sleep(delay * random.uniform(1 - GOSSIP_JITTER, 1 + GOSSIP_JITTER))
                delay = min(JOIN_RETRY_MAX, delay * 2)

    def first_answered(self, node_id: str) -> None:
        """A node answered its first probe: news while this node has few peers up or news not yet passed on
        (gossip goes only to nodes up, so a node starting gossips as soon as it has some); past that, every peer's
        first answer pushing to three others made a node's gossip grow with the network."""
        log.debug("node %s answered its first probe", node_id)
        # The peers up as gossip last counted them (a node or two behind is near enough): counting them afresh at
        # each first answer would ask every known peer whether it is up, once per node learned of.
        up = self._pools[1] if self._pools is not None else self._gossip_pools()[0]
        if self._news_passes or len(up) <= GOSSIPED:
            self._news.set()

    async def _gossip_round(self, fanout: int) -> None:
        # Only nodes up: a stranger's fake nodes (never proven) would take most rounds, each a connection at its word.
        peers = self.up_peers()
        targets = random.sample(peers, min(fanout, len(peers)))
        results = await asyncio.gather(*(self.exchange(d.url, to=d.id) for d in targets), return_exceptions=True)
        for d, result in zip(targets, results):
            if isinstance(result, PeerError):
                log.debug("gossip with %s at %s failed: %s", d.id, d.url, result)
            elif isinstance(result, Exception):
                log.error("gossip with %s failed", d.url, exc_info=result)

    async def _gossip(self) -> None:
        """Every interval, swap descriptors with one random peer; on news, with a few at once."""
        interval = self.config.peers.gossip_interval
        while True:
            news = await woken(self._news, interval * random.uniform(1 - GOSSIP_JITTER, 1 + GOSSIP_JITTER))
            fanout = GOSSIP_FANOUT if news else 1
            self._news.clear()
            try:
                await self._gossip_round(fanout)
            except Exception:  # a round must never end gossip
                log.exception("gossip round failed")
            if self._news_passes and self.up_peers():
                self._news.set()  # news not yet passed on NEWS_PASSES times: pushed on in the next round
            # News seldom comes alone (a node joining brings its peers): let it gather before the next push.
            await asyncio.sleep(min(1.0, interval))


__all__ = ["PeerDirectory", "PeerService", "now_ms"]

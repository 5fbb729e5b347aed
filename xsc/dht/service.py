"""DhtService: this node in the hash table (UDP, on the port number of its peer listener).

It joins through the peers it knows, publishes its own node record and a provider record for each kind of capacity
it offers, publishes the holders of each file it places, and answers the node's lookups: `find_holders(si)` for a
capability it did not store, `find_node(id)` for a node it does not know, `find_providers(kind, n)` for providers
it does not know.  Its routing table admits only nodes the peer directory knows, at the address they signed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol as TypingProtocol
from urllib.parse import urlsplit

from kademlia.node import Node

from ..config import NodeConfig, parse_listen
from ..identity import Identity, id_difficulty
from ..peers.core.descriptors import NodeDescriptor
from ..tasks import at_most, now_ms, woken_loop
from ..units import counted
from . import table
from .core import records

log = logging.getLogger(__name__)
LIBRARY_LOGGERS = ("kademlia", "rpcudp")

BOOTSTRAP_FROM = 8  # peers a node joins the table through
PENDING = 10_000  # placements waiting to be published (the oldest dropped past it: readers fall back to asking)
PUBLISHING = 8  # placements published at once
JOIN_RETRY = 2.0  # seconds between tries to join while the node has no contact
REPUBLISH_SECONDS = 3600.0  # its own records published again, and buckets no lookup went through refreshed


class PeerView(TypingProtocol):
    def up_peers(self) -> list[NodeDescriptor]: ...
    def peers(self) -> list[NodeDescriptor]: ...
    def known(self, node_id: str) -> bool: ...
    def descriptor(self) -> NodeDescriptor: ...
    def state_version(self) -> tuple: ...


def udp_address(url: str) -> tuple[str, int] | None:
    """A peer's table address: the IP and port number of its URL (None for a host name: not resolved here)."""
    parts = urlsplit(url)
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return None
    return (parts.hostname, parts.port) if parts.port else None


async def collect_providers(look_up: Callable[[bytes], Awaitable[list[records.Record]]], kind: str, wanted: int,
                            exclude: str, found: dict[str, records.Provider] | None = None) -> list[records.Provider]:
    """Providers of `kind` (not `exclude`) from random slots of the table, ALPHA slots looked up at a time, until
    `wanted` distinct ones are found or every slot was read.  Each goes into `found` (by node id) as it comes: a
    caller that cuts the lookup short keeps those found by then."""
    slots = random.sample(range(records.PROVIDER_SLOTS), records.PROVIDER_SLOTS)
    found = {} if found is None else found
    while slots and len(found) < wanted:
        batch, slots = slots[:table.ALPHA], slots[table.ALPHA:]
        for bundle in await asyncio.gather(*(look_up(records.providers_key(kind, s)) for s in batch)):
            for r in bundle:
                if isinstance(r, records.Provider) and r.kind == kind and r.node != exclude:
                    found[r.node] = r
    return list(found.values())



class DhtService:
    def __init__(self, *, identity: Identity, peers: PeerView, bind: tuple[str, int], quota: Any,
                 min_difficulty: int, interval: float, ttl: float, offers: tuple[str, ...] = (),
                 on_this_machine: bool = True, wait_timeout: float = table.WAIT_TIMEOUT) -> None:
        self.identity = identity
        self.offers = offers  # the kinds of capacity this node offers: a provider record for each
        self.peers = peers
        self.bind = bind
        self.interval = interval  # seconds between rounds: join while alone, republish when due
        self.store = table.Store(ttl=ttl)
        self.me = Node(records.table_id(identity.id))
        self._wake = asyncio.Event()
        self.protocol = table.Protocol(self.me, self.store, table.K, admit=self._admit, quota=quota,
                                       min_difficulty=min_difficulty, now_ms=now_ms, wake=self._wake.set,
                                       on_this_machine=on_this_machine, wait_timeout=wait_timeout)
        self.transport: asyncio.DatagramTransport | None = None
        self._admitted: tuple[Any, dict[bytes, tuple[tuple[str, int], str]]] | None = None  # (directory state,
        # table id -> ((IP, port), node id)) and node id -> (URL, table id, (IP, port)), made once per URL
        self._addresses: dict[str, tuple[str, bytes, tuple[str, int] | None]] = {}
        self._published = 0.0  # when this node last published its own record
        self._pending: OrderedDict[bytes, list[str]] = OrderedDict()  # si -> placement, to publish
        self.hops: list[int] = []  # rounds of this node's recent lookups, for status()
        self.enabled = True
        self._bind_failed = False  # said once, not every round
        self.published = 0  # holders records stored on at least one node
        self.rounds = self.joins = 0  # rounds run, and the joins among them (status)
        self.offered: set[str] = set()  # the kinds whose provider record of this node is stored on some node
        # An id minted under a lower peers.min_difficulty than asked now: every node (this one too) refuses the
        # records it signs, so it publishes none (node/datadir.py warned at start) and only looks things up.
        self.publishes = id_difficulty(identity.public_key) >= min_difficulty

    @classmethod
    def configured(cls, *, identity: Identity, peers: PeerView, config: NodeConfig, quota: Any,
                   on_this_machine: bool = True) -> DhtService:
        """The node's table as its config says (peers.dht off: it never listens, and finds nothing)."""
        section, market = config.peers, config.market
        offers = tuple(kind for kind, on in (("storage", market.offer_storage), ("compute", market.offer_compute))
                       if on)
        service = cls(identity=identity, peers=peers, bind=parse_listen(config.node.peer_listen or config.node.listen),
                      quota=quota, min_difficulty=section.min_difficulty, interval=section.dht_interval,
                      ttl=section.dht_ttl, offers=offers, on_this_machine=on_this_machine)
        service.enabled = section.dht
        return service

    # --- the service's life -------------------------------------------------------------------
    def start(self) -> None:
        # The library logs each lookup, RPC and contact at INFO (its own tracing: hundreds of lines a minute on a
        # busy node, nearly all of a node's log): kept to its warnings unless the node logs at DEBUG.
        if not log.isEnabledFor(logging.DEBUG):
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        if self.enabled and not self.publishes:
            log.warning("the hash table publishes nothing of this node: its id has fewer bits of proof of work than "
                        "the %d peers.min_difficulty asks (a new data dir mints a new id)", self.protocol.min_difficulty)

    def loops(self) -> dict[str, Callable[[], Any]]:
        if not self.enabled:
            return {}
        return {"dht": woken_loop("a round of the hash table", self._wake, self._period, self._round)}

    def _period(self) -> float:
        """Alone (peers not proven up yet at start): a round again soon rather than a whole interval later."""
        return self.interval if self.contacts() else min(self.interval, JOIN_RETRY)

    def announce(self, si: bytes, placement: list[str]) -> None:
        """Publish where a file's shares are, soon (the put that placed them does not wait for the table)."""
        self._pending.pop(si, None)
        self._pending[si] = placement
        while len(self._pending) > PENDING:
            self._pending.popitem(last=False)
        self._wake.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def listen(self) -> bool:
        """Bind the UDP port if not yet bound; whether the table listens (a taken port is tried again next round)."""
        if self.transport is None:
            try:
                self.transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: self.protocol, local_addr=self.bind)
            except OSError as err:
                (log.debug if self._bind_failed else log.warning)(
                    "the hash table cannot listen on UDP %s:%d (%s): lookups ask peers instead", *self.bind, err)
                self._bind_failed = True
        return self.transport is not None

    async def _round(self) -> None:
        if not await self.listen():
            return
        self.rounds += 1
        if self._lacking():
            self.joins += 1
            await self._join()
        handovers = self.protocol.handovers
        if handovers:
            batch = [handovers.popleft() for _ in range(len(handovers))]
            await at_most(PUBLISHING, (self.protocol.call_store(node, key, value) for node, key, value in batch))
        if self._pending:
            batch = list(self._pending.items())
            self._pending.clear()
            await at_most(PUBLISHING, (self.publish_holders(si, placement) for si, placement in batch))
        if time.monotonic() - self._published >= REPUBLISH_SECONDS or not self._published:
            if not self.publishes:
                self._published = time.monotonic()  # nothing of its own to publish: only the refresh below is due
            else:
                descriptor = self.peers.descriptor()
                if await self._publish(records.node_key(self.identity.id), [descriptor]):
                    self._published = time.monotonic()
                for kind in self.offers:
                    record = records.make_provider(self.identity, kind, descriptor.url, now_ms())
                    if await self._publish(records.providers_key(kind, records.provider_slot(self.identity.id)),
                                           [record]):
                        self.offered.add(kind)
            for lonely in self.protocol.get_refresh_ids():  # (the paper's section 2.3)
                await table.find_nodes(self.protocol, lonely, table.Lookup())

    def _lacking(self) -> bool:
        """Whether a join could add a contact: the table holds fewer than K, and a peer up that it would admit is not
        among them.  It admits no node the directory does not name, so in a network of fewer than K nodes, once every
        peer up is a contact, a join each round (its pings and its lookup, sent and answered by every node) finds
        nothing; one that comes up later is joined through at the next round."""
        if self.contacts() >= table.K:
            return False
        held = {node_id for bucket in self.protocol.router.buckets for node_id in bucket.nodes}
        return any(records.table_id(d.id) not in held for d in self.peers.up_peers()
                   if udp_address(d.url) is not None and self.peers.known(d.id))

    async def _join(self) -> None:
        up = self.peers.up_peers()
        addresses = [a for d in random.sample(up, min(len(up), BOOTSTRAP_FROM)) if (a := udp_address(d.url))]
        answers = await asyncio.gather(*(self.protocol.ping(a, self.me.id) for a in addresses))
        for a, (ok, _) in zip(addresses, answers):
            if ok:
                self.protocol.proven(a)
        known = [Node(node_id, a[0], a[1]) for a, (ok, node_id) in zip(addresses, answers)
                 if ok and isinstance(node_id, bytes) and self._admit(node_id, a[0], a[1])]
        for node in known:
            self.protocol.welcome_if_new(node)
        if known:
            await table.find_nodes(self.protocol, self.me.id, table.Lookup())

    def _admit(self, table_id: bytes, ip: str, port: int) -> bool:
        """Only nodes the directory knows (admitted: proof of work), at their signed address (IP and port: a datagram
        under a known node's IP and id from another port, as anyone on that host or forging that address can send,
        would have this node hand that port the records the node should hold), and not quarantined (the directory
        keeps a quarantined node's descriptor: `known` says whether it is quarantined now).

        Asked of every datagram, and made again after every change of the directory (any descriptor re-signed):
        each node's table id and address are made once per URL, not at every change (hashing and parsing 1,000 of them
        is 10-40 ms of the event loop, and a peer re-signing its descriptor in each message changes the directory)."""
        state = self.peers.state_version()[0]
        if self._admitted is None or self._admitted[0] != state:
            admitted, addresses = {}, {}
            for d in self.peers.peers():
                known = self._addresses.get(d.id)
                if known is None or known[0] != d.url:
                    address = udp_address(d.url)
                    known = (d.url, records.table_id(d.id), address)
                addresses[d.id] = known
                if known[2] is not None:
                    admitted[known[1]] = (known[2], d.id)
            self._admitted, self._addresses = (state, admitted), addresses
        at = self._admitted[1].get(table_id)
        return at is not None and at[0] == (ip, port) and self.peers.known(at[1])

    # --- what the node asks of it ---------------------------------------------------------------
    async def _publish(self, key: bytes, found: list[records.Record]) -> int:
        if self.transport is None:
            return 0
        return await table.store(self.protocol, self.store, key, records.encode(found), table.Lookup())

    async def publish_holders(self, si: bytes, placement: list[str]) -> None:
        """Say in the table where the shares of a file this node placed are."""
        if not self.publishes:
            return
        record = records.make_holders(self.identity, si, placement, now_ms())
        stored = await self._publish(records.holders_key(si), [record])
        self.published += stored > 0
        log.debug("published the holders of %s on %s", si.hex(), counted(stored, "node"))

    async def _lookup(self, key: bytes) -> list[records.Record]:
        if self.transport is None:
            return []
        lookup = table.Lookup()
        held = self.store.held(key, now_ms())  # (checked when stored)
        value = None if held else await table.find_value(self.protocol, key, lookup)
        self.hops = [*self.hops[-99:], lookup.hops]
        if held or value is None:
            return held
        try:
            return records.parse_bundle(value, key, now_ms=now_ms(), min_difficulty=self.protocol.min_difficulty,
                                        checked=self.protocol.found(key))  # (the lookup's records, checked)
        except records.InvalidRecord:
            return []

    async def find_holders(self, si: bytes) -> list[str] | None:
        """The placement of a file (share -> node id) as its newest holders record in the table says."""
        found = records.newest(await self._lookup(records.holders_key(si)),
                               lambda r: isinstance(r, records.Holders))
        if found is None:
            return None
        log.info("found the holders of %s through the hash table (%s)", si.hex(), counted(self.hops[-1], "hop"))
        return list(found.placement)

    async def find_node(self, node_id: str) -> NodeDescriptor | None:
        """A node's signed descriptor, found by its id."""
        return records.newest(await self._lookup(records.node_key(node_id)), lambda r: isinstance(r, NodeDescriptor))

    async def find_providers(self, kind: str, wanted: int,
                             found: dict[str, records.Provider] | None = None) -> list[records.Provider]:
        """At least `wanted` providers of `kind` other than this node, if the table knows as many (each also put
        into `found` as it comes: see `collect_providers`)."""
        return await collect_providers(self._lookup, kind, wanted, exclude=self.identity.id, found=found)

    def contacts(self) -> int:
        return sum(len(b) for b in self.protocol.router.buckets)

    def status(self) -> dict[str, Any]:
        return {"listening": self.transport is not None, "contacts": self.contacts(), "keys": len(self.store.data),
                "bytes": self.store.bytes,
                "published": self.published, "offered": sorted(self.offered),
                "refused": self.protocol.refused, "sent": self.protocol.sent, "received": self.protocol.received,
                "rounds": self.rounds, "joins": self.joins, "last_hops": self.hops[-10:]}

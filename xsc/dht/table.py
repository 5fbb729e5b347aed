"""The node's part of the hash table: the `kademlia` package's routing and lookups over UDP, with every datagram
from a stranger checked before it is parsed further, stored or answered.

What this module adds to the library:
- `Protocol`: datagrams bounded in size and counted against a per-address quota before msgpack reads them; every
  RPC's arguments checked for type and size; a store accepted only for a value that is a bundle of valid records
  for its key (records.parse_bundle), merged into what the key holds; contacts enter the routing table only if
  `admit` accepts them (the peer directory's admission: a known node at the address it signed).
- `Routing`: the library's routing table with its neighbour search fixed.
- `Store`: the records this node keeps for the table: bounded in keys, values merged, forgotten after `ttl`.
- lookups that count their rounds (`hops`), what docs/peers.md reports and the simulation measures.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import time
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, ValueSpiderCrawl
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from kademlia.storage import IStorage

from ..errors import QuotaExceeded
from ..net.addresses import address_key
from .core import records

log = logging.getLogger(__name__)

MAX_DATAGRAM = 8_192 + 64  # what rpcudp sends at most (8 KiB of arguments, its header)
MAX_KEYS = 100_000  # records' keys one node keeps for the table (oldest forgotten first)
# ... and bytes of their bundles together: a stranger's ids may each sign a record under any key (a holders record
# for any storage index), and 8 of them make each key's bundle ~6,000 bytes.  One record a key, as honest keys
# mostly hold, is ~600 bytes: MAX_KEYS of those fit.
MAX_BYTES = 64 * 1024 * 1024
K = 20  # contacts per bucket, and nodes a value is stored on (the paper's k)
ALPHA = 3  # lookups in flight per round
WAIT_TIMEOUT = 5.0  # seconds a call waits for its answer (a lookup, a proving ping) before the peer counts as silent
# Rounds one lookup makes at most.  An honest lookup takes log2(N)/log2(K)-ish rounds (5 at most over 10,000
# simulated nodes, bench/bench_dht.py); a contact that answers each call with 20 fresh ids ever closer to the key,
# all at its own address, would keep a lookup going (each round a recursion of the library's) until Python's
# recursion limit ended it with an error.
MAX_ROUNDS = 16
MAX_WELCOMED = 10_000  # contacts remembered as already sent this node's records
MAX_HANDOVERS = 10_000  # records waiting to be sent to newcomers (the oldest dropped: their owners republish)
MISSES_BEFORE_REMOVAL = 3  # calls a contact may leave unanswered in a row before it leaves the routing table
# Keys whose records this node's own lookups found (each checked once) are remembered at most: the providers' 128
# keys, asked again at every put, and the files read lately.  A record found again, byte for byte, under the same
# key is taken as it was checked (its signature, key and proof of work are what they were; a date that was not
# too far ahead is not now).
MAX_FOUND = 256
# A lookup's answer is 10 (20 contacts) to 77 (a full bundle) times the bytes of its call, and a datagram's source
# address is whatever its sender wrote: answered as they came, lookups "from" a third party's address would make this
# node send that address 1.2 MB a second (the per-address quota's 200 datagrams of 6 KB).  A lookup is answered only at
# an address that answered a call of this node's (it got the datagram, so it is not spoofed): an address not yet
# proven is pinged first (one ping at a time per address, a 78-byte datagram), and one that did not answer is not
# pinged again for UNPROVEN_FOR seconds.
PROVEN_FOR = 600.0  # seconds an address that answered stays proven
UNPROVEN_FOR = 60.0  # seconds an address that did not answer a proving ping is not pinged again
MAX_ADDRESSES = 10_000  # proven (and unproven) addresses remembered at most, each
MAX_PROVING = 256  # pings proving an address in flight at most (past it, lookups from new addresses go unanswered)
LOOKUPS = ("find_node", "find_value")
Admit = Callable[[bytes, str, int], bool]  # (table id, IP address, port) -> may this contact enter the routing table?


class Store(IStorage):
    """key -> (when last stored, bundle bytes), merged on every store, forgotten after `ttl` seconds; beside each
    bundle its records as checked when they came (`held`), so a merge does not check their signatures again."""

    def __init__(self, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.data: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self.checked: dict[bytes, list[records.Record]] = {}
        self.bytes = 0  # of the bundles in `data`
        self.ttl = ttl
        self.clock = clock

    def put(self, key: bytes, bundle: list[records.Record]) -> None:
        self[key] = records.encode(bundle)
        self.checked[key] = bundle

    def held(self, key: bytes, now_ms: int) -> list[records.Record]:
        value = self.get(key)
        if value is None:
            return []
        if key not in self.checked:  # stored by the library's own path, as bytes: checked once, here
            try:
                self.checked[key] = records.parse_bundle(value, key, now_ms=now_ms, min_difficulty=0)
            except records.InvalidRecord:
                self.checked[key] = []
        return self.checked[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._forget(key)
        self.data[key] = (self.clock(), value)
        self.bytes += len(value)
        while len(self.data) > MAX_KEYS or self.bytes > MAX_BYTES:
            self._forget(next(iter(self.data)))
        self.cull()

    def _forget(self, key: bytes) -> None:
        held = self.data.pop(key, None)
        self.checked.pop(key, None)
        if held is not None:
            self.bytes -= len(held[1])

    def cull(self) -> None:
        oldest = self.clock() - self.ttl
        while self.data and next(iter(self.data.values()))[0] < oldest:
            self._forget(next(iter(self.data)))

    def get(self, key: bytes, default: Any = None) -> Any:
        self.cull()
        held = self.data.get(key)
        return held[1] if held is not None else default

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        born = self.clock() - seconds_old
        return [(k, v) for k, (at, v) in self.data.items() if at <= born]

    def __iter__(self):
        self.cull()
        return iter([(k, v) for k, (_, v) in self.data.items()])


def _id(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == records.KEY_BYTES


def _here(ip: str) -> bool:
    """Does a contact's IP address (a checked one) mean this machine wherever it is sent from?"""
    address = ipaddress.ip_address(ip)
    return address.is_loopback or address.is_unspecified


def _contact(value: Any) -> bool:
    """A contact as a lookup's answer names one: (20-byte id, IP address, port)."""
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and _id(value[0]) and isinstance(value[1], str)
            and len(value[1]) <= 45 and type(value[2]) is int and 0 < value[2] < 65536):
        return False
    try:
        ipaddress.ip_address(value[1])
    except ValueError:
        return False
    return True


class Routing(RoutingTable):
    """The library's routing table with `find_neighbors` over every bucket: its TableTraverser stops at the last
    bucket on one side while buckets on the other side are left (a key in an empty edge bucket found no
    neighbours at all: at 1,000 simulated nodes, 1 put in 8 was stored nowhere)."""

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        self.buckets[self.get_bucket_for(node)].touch_last_updated()
        contacts = [n for bucket in self.buckets for n in bucket.nodes.values()
                    if n.id != node.id and (exclude is None or not n.same_home_as(exclude))]
        return heapq.nsmallest(k or self.ksize, contacts, key=node.distance_to)


class Protocol(KademliaProtocol):
    """The library's protocol with the checks of a node that takes every datagram as hostile."""

    def __init__(self, source_node: Node, storage: Store, ksize: int, *, admit: Admit, quota: Any,
                 min_difficulty: int, now_ms: Callable[[], int], wait_timeout: float = WAIT_TIMEOUT,
                 wake: Callable[[], Any] = lambda: None, on_this_machine: bool = True) -> None:
        super().__init__(source_node, storage, ksize)
        # Whether this node is on this machine only (a devnet on loopback): only then may a lookup's answer name
        # contacts here.  Elsewhere a contact at 127.0.0.1:53 or 0.0.0.0:11211 points this node's calls at services
        # of its own machine (as a descriptor's URL may not: peers/admission.py).
        self.on_this_machine = on_this_machine
        # Records to send newcomers (node, key, value), sent by the service's loop, which `wake` wakes.
        self.handovers: deque[tuple[Node, bytes, bytes]] = deque(maxlen=MAX_HANDOVERS)
        self.wake = wake
        self.router = Routing(self, ksize, source_node)
        self._wait_timeout = wait_timeout
        self.admit = admit
        self.quota = quota  # per-address datagrams (a RateLimiter)
        self.min_difficulty = min_difficulty
        self.now_ms = now_ms
        self._welcomed: OrderedDict[bytes, None] = OrderedDict()  # contacts sent our records once already
        self._misses: dict[bytes, int] = {}  # contact -> calls it did not answer in a row
        self._proven: OrderedDict[tuple, float] = OrderedDict()  # address -> when it last answered a call of ours
        self._unproven: OrderedDict[tuple, float] = OrderedDict()  # address -> when it did not answer a proving ping
        self._proving: dict[tuple, asyncio.Future] = {}
        self._found: OrderedDict[bytes, list[records.Record]] = OrderedDict()  # key -> records a lookup checked
        self.refused = 0  # datagrams and stores refused: counted, not logged one by one
        self.sent = self.received = 0  # datagrams, for the node's figures and the simulation's

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.received += 1
        if len(data) > MAX_DATAGRAM or len(data) < 22:
            self.refused += 1
            return
        # Per address (an IPv6 one per /64); on loopback per port too (a devnet's nodes all share 127.0.0.1, and
        # would share one quota).
        sender = f"{addr[0]}:{addr[1]}" if addr[0].startswith("127.") or addr[0] == "::1" else address_key(addr[0])
        try:
            self.quota.check(sender, time.monotonic(), "datagrams of the hash table")
        except QuotaExceeded:
            self.refused += 1
            return
        super().datagram_received(data, addr)

    async def _solve_datagram(self, datagram: bytes, address: tuple) -> None:
        try:
            await super()._solve_datagram(datagram, address)
        except Exception as err:  # noqa: BLE001 - a stranger's datagram: refused, whatever is wrong with it
            self._refuse(address, err)

    async def _accept_request(self, msg_id: bytes, data: Any, address: tuple) -> None:
        try:
            if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], str)
                    and isinstance(data[1], (list, tuple)) and len(data[1]) <= 3):
                raise ValueError("not a call")
            if data[0] in LOOKUPS:
                if not (len(data[1]) == 2 and _id(data[1][0]) and _id(data[1][1])):
                    raise ValueError("a lookup names 20-byte ids")
                if not await self._proven_at(address):
                    raise ValueError("a lookup from an address that did not answer a ping")
            await super()._accept_request(msg_id, data, address)
        except Exception as err:  # noqa: BLE001 - as above
            self._refuse(address, err)

    def proven(self, address: tuple) -> None:
        """`address` answered a call of this node's: lookups from it are answered there (see PROVEN_FOR)."""
        address = (address[0], address[1])
        self._proven.pop(address, None)
        self._proven[address] = time.monotonic()
        self._unproven.pop(address, None)
        while len(self._proven) > MAX_ADDRESSES:
            self._proven.popitem(last=False)

    async def _proven_at(self, address: tuple) -> bool:
        address = (address[0], address[1])
        now = time.monotonic()
        if now - self._proven.get(address, -PROVEN_FOR) < PROVEN_FOR:
            return True
        if now - self._unproven.get(address, -UNPROVEN_FOR) < UNPROVEN_FOR:
            return False
        waiting = self._proving.get(address)
        if waiting is not None:  # a ping of it is under way: its answer decides for every lookup waiting
            return await asyncio.shield(waiting)
        if len(self._proving) >= MAX_PROVING:
            return False
        waiting = self._proving[address] = asyncio.get_running_loop().create_future()
        answered = False
        try:
            answered, _ = await self.ping(address, self.source_node.id)
        finally:
            del self._proving[address]
            waiting.set_result(answered)
        if answered:
            self.proven(address)
        else:
            self._unproven.pop(address, None)
            self._unproven[address] = time.monotonic()
            while len(self._unproven) > MAX_ADDRESSES:
                self._unproven.popitem(last=False)
        return answered

    # A lookup given up by its caller (the market waits for one a bounded time) cancels the futures of its calls
    # still under way; the library would then set the result of each when its wait ends or its answer comes: an
    # InvalidStateError, logged with its traceback (the timer) or counted as a refused datagram (the answer).
    def _timeout(self, msg_id: bytes) -> None:
        """A call not answered within the wait: its caller, if still waiting, is told so.  Routine (a peer down),
        and counted by `handle_call_response`: not logged as an error as the library does."""
        future, _ = self._outstanding.pop(msg_id, (None, None))
        if future is not None and not future.done():
            future.set_result((False, None))

    def _accept_response(self, msg_id: bytes, data: Any, address: tuple) -> None:
        waiting = self._outstanding.get(msg_id)
        if waiting is not None and waiting[0].done():  # its caller gave up: an answer too late to matter
            waiting[1].cancel()
            del self._outstanding[msg_id]
            return
        super()._accept_response(msg_id, data, address)

    def _refuse(self, address: tuple, err: Exception) -> None:
        self.refused += 1
        log.debug("refused a datagram from %s: %s", address[0], err)

    def welcome_if_new(self, node: Node) -> None:
        if node.ip is None or not self.admit(node.id, node.ip, node.port) or not self.router.is_new_node(node):
            return
        if node.id in self._welcomed:  # back after a timeout: it had the records then, none is sent again
            self.router.add_contact(node)
            return
        self._welcomed[node.id] = None
        while len(self._welcomed) > MAX_WELCOMED:
            self._welcomed.popitem(last=False)
        self._hand_over(node)
        self.router.add_contact(node)

    def _hand_over(self, node: Node) -> None:
        """Send a newcomer the records it is now among the closest to hold (the paper's section 2.5), where this
        node is the closest holder of them.  (The library measures these distances to the SHA-1 of each key rather
        than to the key, and so handed records to the wrong nodes.)

        The routing table is read once, not searched per key: a search per key holds the event loop 5.4 s per
        newcomer over a store of MAX_KEYS keys, which one admitted id's holders records can fill.  A contact whose
        distance from this node has the same highest bit as the key's is nearer the key than this node: most keys
        are passed on that alone."""
        me, newcomer, k = self.source_node.long_id, node.long_id, self.router.ksize
        contacts = [n.long_id for b in self.router.buckets for n in b.nodes.values()]
        spans = Counter((c ^ me).bit_length() for c in contacts)
        held = set(contacts)
        for key, value in self.storage:
            target = int.from_bytes(key, "big")
            mine = me ^ target
            # (a contact whose id is the key, as a node's own record is, is not one of the key's neighbours)
            if spans[mine.bit_length()] > (target in held):
                continue
            others = [c ^ target for c in contacts if c != target]
            if any(d < mine for d in others):
                continue  # a contact is nearer the key than this node: the hand-over is that contact's
            nearest = heapq.nsmallest(k, others)
            if not nearest or newcomer ^ target < nearest[-1]:
                self.handovers.append((node, key, value))
        if self.handovers:
            self.wake()

    def handle_call_response(self, result, node: Node):
        """A contact that did not answer leaves the routing table only after MISSES_BEFORE_REMOVAL in a row: on a
        loaded network one lost datagram removed it, and its return re-sent it every record (a storm of stores)."""
        if result[0]:
            self._misses.pop(node.id, None)
            self.proven((node.ip, node.port))
            self.welcome_if_new(node)
            return result
        misses = self._misses.get(node.id, 0) + 1
        if misses >= MISSES_BEFORE_REMOVAL:
            self._misses.pop(node.id, None)
            self.router.remove_contact(node)
        else:
            if len(self._misses) >= MAX_WELCOMED:  # (ids a stranger's answers named, never answering)
                self._misses.clear()
            self._misses[node.id] = misses
        return result

    # A lookup's calls: the answer is a stranger's word, checked before the library reads it (the library takes any
    # value, and an answer of a number or of a dict without a value would end the whole lookup with an error).
    async def call_find_node(self, node_to_ask: Node, node_to_find: Node):
        result = await self.find_node((node_to_ask.ip, node_to_ask.port), self.source_node.id, node_to_find.id)
        return self.handle_call_response(self._checked(result, values=False), node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node):
        result = await self.find_value((node_to_ask.ip, node_to_ask.port), self.source_node.id, node_to_find.id)
        return self.handle_call_response(self._checked(result, values=True), node_to_ask)

    def _checked(self, result: tuple, *, values: bool) -> tuple:
        """A call's (answered, answer), an answer that is not what the call asks counted as none (and refused):
        at most K contacts, each (20-byte id, IP address, port); or, for a value, {"value": bytes}."""
        answered, answer = result
        if not answered:
            return result
        if values and isinstance(answer, dict):
            if set(answer) == {"value"} and isinstance(answer["value"], bytes):
                return result
        elif isinstance(answer, (list, tuple)) and len(answer) <= self.router.ksize \
                and all(_contact(c) and (self.on_this_machine or not _here(c[1])) for c in answer):
            return result
        self.refused += 1
        return False, None

    def rpc_ping(self, sender, nodeid):
        if not _id(nodeid):
            raise ValueError("a ping names a 20-byte id")
        return super().rpc_ping(sender, nodeid)

    def rpc_find_node(self, sender, nodeid, key):
        if not (_id(nodeid) and _id(key)):
            raise ValueError("a lookup names 20-byte ids")
        return super().rpc_find_node(sender, nodeid, key)

    def rpc_find_value(self, sender, nodeid, key):
        if not (_id(nodeid) and _id(key)):
            raise ValueError("a lookup names 20-byte ids")
        return super().rpc_find_value(sender, nodeid, key)

    def rpc_store(self, sender, nodeid, key, value):
        if not _id(nodeid):
            raise ValueError("a store names a 20-byte id")
        try:
            self.storage.put(key, self.merged(key, value))
        except records.InvalidRecord:
            self.refused += 1
            return False
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return True

    def found(self, key: bytes) -> list[records.Record]:
        """The records of `key` this node's lookups found and checked lately (none: not looked up lately)."""
        return self._found.get(key, [])

    def found_again(self, key: bytes, bundle: list[records.Record]) -> None:
        """`bundle` (checked) is what a lookup of `key` found: remembered, so the next lookup checks only what
        changed (at most MAX_FOUND keys, the least recently found forgotten first)."""
        self._found.pop(key, None)
        self._found[key] = bundle
        while len(self._found) > MAX_FOUND:
            self._found.popitem(last=False)

    def merged(self, key: bytes, value: Any) -> list[records.Record]:
        """What `key` holds once `value` (checked) is merged in; InvalidRecord for a value that is not valid."""
        held = self.storage.held(key, self.now_ms())
        offered = records.parse_bundle(value, key, now_ms=self.now_ms(), min_difficulty=self.min_difficulty,
                                       checked=held)
        return records.merge(held, offered)

    def __getattr__(self, name: str):
        call = super().__getattr__(name)
        if name.startswith("_") or name.startswith("rpc_") or not callable(call):
            return call

        def counted(address, *args):
            self.sent += 1
            return call(address, *args)
        return counted


class Lookup:
    """The rounds one lookup took (each round asks up to ALPHA nodes at once)."""

    def __init__(self) -> None:
        self.hops = 0


class _Counted(ABC):
    """A crawl that gives up after MAX_ROUNDS rounds, answering what `_given_up` says it has."""

    def __init__(self, *args, lookup: Lookup, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lookup = lookup

    async def _find(self, rpcmethod):
        if self.lookup.hops >= MAX_ROUNDS:
            return self._given_up()
        self.lookup.hops += 1
        return await super()._find(rpcmethod)

    @abstractmethod
    def _given_up(self) -> Any:
        """What the lookup answers when it stops at MAX_ROUNDS."""


class NodeCrawl(_Counted, NodeSpiderCrawl):
    def _given_up(self) -> list[Node]:
        """The nearest nodes that answered so far."""
        return [n for n in self.nearest if n.id in self.nearest.contacted]


class ValueCrawl(_Counted, ValueSpiderCrawl):
    def _given_up(self) -> None:
        return None  # no answer brought a value within MAX_ROUNDS (one that did ended the lookup)

    async def _handle_found_values(self, values):
        # Every answer's records are merged (checked: an answer is a stranger's word), not only the most common
        # value: one node answering a stale or partial bundle cannot hide the others' records.  A record checked
        # already (in another answer, or found by an earlier lookup of the key) is not checked again: the answers
        # of one lookup mostly hold the same records, as the lookups of one key do.
        key = self.node.id
        checked = records.checked_index(self.protocol.found(key))
        found: list[records.Record] = []
        for value in values:
            try:
                offered = records.parse_bundle(value, key, now_ms=self.protocol.now_ms(),
                                               min_difficulty=self.protocol.min_difficulty, checked=checked)
            except records.InvalidRecord:
                self.protocol.refused += 1
                continue
            checked.update(records.checked_index(offered))
            found = records.merge(found, offered)
        if not found:
            return None
        self.protocol.found_again(key, found)
        value = records.encode(found)
        peer = self.nearest_without_value.popleft()
        if peer:
            await self.protocol.call_store(peer, self.node.id, value)
        return value


async def find_value(protocol: Protocol, key: bytes, lookup: Lookup) -> bytes | None:
    """The merged, checked bundle the table holds under `key` (None: nobody holds one)."""
    target = Node(key)
    nearest = protocol.router.find_neighbors(target)
    if not nearest:
        return None
    return await ValueCrawl(protocol, target, nearest, K, ALPHA, lookup=lookup).find()


async def find_nodes(protocol: Protocol, key: bytes, lookup: Lookup) -> list[Node]:
    """The K nodes closest to `key` that answer."""
    target = Node(key)
    nearest = protocol.router.find_neighbors(target)
    if not nearest:
        return []
    return await NodeCrawl(protocol, target, nearest, K, ALPHA, lookup=lookup).find()


async def store(protocol: Protocol, store_here: Store, key: bytes, value: bytes, lookup: Lookup) -> int:
    """Store `value` under `key` on the K closest nodes (and here, if this node is among them): how many took it."""
    nodes = await find_nodes(protocol, key, lookup)
    me = protocol.source_node
    target = Node(key)
    if not nodes or me.distance_to(target) < max(n.distance_to(target) for n in nodes):
        store_here.put(key, protocol.merged(key, value))
    answers = await asyncio.gather(*(protocol.call_store(n, key, value) for n in nodes))
    return sum(1 for ok, taken in answers if ok and taken is True)

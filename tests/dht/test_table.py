"""The hash table on real UDP sockets: nodes join through the peers they know, a file's holders published by one
node are found by another, and what a stranger sends is refused before it is stored or believed."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time

import plyvel
import pytest
import pytest_asyncio
import umsgpack

from tests.support.nodes import node_config
from tests.support.waiting import eventually_async
from xsc import codec
from xsc.dht import DhtService, table
from xsc.dht.service import udp_address as udp_address_of
from xsc.dht.core import records
from xsc.identity import Identity
from xsc.node.appkeys import NODE
from xsc.node.limits import RateLimiter
from xsc.peers import make_descriptor


# A call made and never awaited (a round cut short as the nodes close) fails the test it happens in: the warning
# comes out where the coroutine is collected, as an unraisable exception when warnings are errors.
pytestmark = pytest.mark.filterwarnings("error:coroutine .* was never awaited:RuntimeWarning",
                                        "error::pytest.PytestUnraisableExceptionWarning")


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _datagram_from(sock: socket.socket, sender: tuple[str, int]) -> bytes:
    """The next datagram the non-blocking `sock` receives from `sender`.  In a full suite a port the system hands out
    may be one another test's node knew a contact at, and that node may still be calling it: its datagrams are not
    the test's."""
    loop = asyncio.get_running_loop()  # (add_reader, not sock_recvfrom: uvloop has none)
    while True:
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())
        try:
            datagram, source = sock.recvfrom(65536)
        except BlockingIOError:
            continue
        if source == sender:
            return datagram


def _datagrams_from(sock: socket.socket, sender: tuple[str, int]) -> list[bytes]:
    """The datagrams waiting on the non-blocking `sock` that came from `sender` (as `_datagram_from`)."""
    received = []
    while True:
        try:
            datagram, source = sock.recvfrom(65536)
        except BlockingIOError:
            return received
        if source == sender:
            received.append(datagram)


class Directory:
    """The peer directory each node sees: every node of the test that listens, all up."""

    def __init__(self) -> None:
        self.descriptors: list = []

    def view(self, identity: Identity, port: int):
        directory = self
        descriptor = make_descriptor(identity, url=f"http://127.0.0.1:{port}", capacity=1, free=1, version="t",
                                     timestamp=int(time.time() * 1000))

        class View:
            def up_peers(self):
                return [d for d in directory.descriptors if d.id != identity.id]

            def peers(self):
                return self.up_peers()

            def known(self, node_id):
                return True

            def descriptor(self):
                return descriptor

            def state_version(self):
                return (len(directory.descriptors),)
        return View()


def service(directory: Directory, rate: float = 1000.0, min_difficulty: int = 0,
            wait_timeout: float = table.WAIT_TIMEOUT) -> DhtService:
    """A node on a port free when chosen, not yet in the directory nor bound."""
    identity = Identity.generate()
    port = udp_port()
    return DhtService(identity=identity, peers=directory.view(identity, port), bind=("127.0.0.1", port),
                      quota=RateLimiter(rate, 2 * rate, "datagrams"), min_difficulty=min_difficulty, interval=0.2,
                      ttl=3600, offers=("storage",), wait_timeout=wait_timeout)


async def node(directory: Directory, rate: float = 1000.0, wait_timeout: float = table.WAIT_TIMEOUT) -> DhtService:
    """A node listening and in the directory; a port another test took since it was chosen is chosen again."""
    for _ in range(10):
        candidate = service(directory, rate, wait_timeout=wait_timeout)
        if await candidate.listen():
            directory.descriptors.append(candidate.peers.descriptor())
            return candidate
    raise AssertionError("no free UDP port in ten tries")


async def nodes_in(directory: Directory, count: int, rate: float = 1000.0) -> list[DhtService]:
    return [await node(directory, rate) for _ in range(count)]


async def started(nodes: list[DhtService]) -> list[asyncio.Task]:
    return [asyncio.ensure_future(n.loops()["dht"]()) for n in nodes]


async def closed(tasks, nodes) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for n in nodes:
        n.close()
    gc.collect()  # what the rounds left is collected here, its warnings in this test


async def _joined_network():
    """Twelve nodes of one directory, each with at least 8 contacts: (directory, nodes), then their close."""
    directory = Directory()
    nodes = await nodes_in(directory, 12)
    tasks = await started(nodes)
    await eventually_async(lambda: all(n.status()["contacts"] >= 8 for n in nodes), "every node to join", 30)
    yield directory, nodes
    await closed(tasks, nodes)


@pytest.fixture
async def network():
    """A network of a test's own: for a test that adds to its directory a node that will not answer."""
    async for joined in _joined_network():
        yield joined


# The tests that take `file_network` share one: each reads and stores under keys of its own (a random file, a
# stranger's identity) and leaves the nodes, their directory and their contacts as it found them.  They run on the
# file's event loop, where its nodes run (the mark on the definition: see tests/compute/conftest.py).
ON_THE_FILES_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def file_network():
    async for joined in _joined_network():
        yield joined


@ON_THE_FILES_LOOP
async def test_holders_published_by_one_node_are_found_by_every_other(file_network) -> None:
    _, nodes = file_network
    si = os.urandom(32)
    placement = [nodes[i].identity.id for i in (1, 2, 3, 4, 5, 6)]
    await nodes[0].publish_holders(si, placement)
    for reader in nodes[1:]:
        assert await reader.find_holders(si) == placement
    assert await nodes[3].find_holders(os.urandom(32)) is None


@ON_THE_FILES_LOOP
async def test_a_node_is_found_by_its_id_with_its_signed_descriptor(file_network) -> None:
    _, nodes = file_network
    await eventually_async(lambda: all(n._published for n in nodes), "every node to publish its record", 30)
    wanted = nodes[7]
    found = await nodes[2].find_node(wanted.identity.id)
    assert found is not None and found.id == wanted.identity.id and found.url == wanted.peers.descriptor().url


@ON_THE_FILES_LOOP
async def test_a_put_finds_six_distinct_storage_providers_through_the_table(file_network) -> None:
    _, nodes = file_network
    await eventually_async(lambda: all(n._published for n in nodes), "every node to publish its records", 30)
    found = await nodes[3].find_providers("storage", 6)
    ids = {p.node for p in found}
    assert len(ids) >= 6 and nodes[3].identity.id not in ids
    urls = {n.identity.id: n.peers.descriptor().url for n in nodes}
    assert all(p.url == urls[p.node] and p.kind == "storage" for p in found)
    assert await nodes[3].find_providers("compute", 6) == []  # nobody offers it


@ON_THE_FILES_LOOP
async def test_a_stranger_cannot_replace_a_files_holders_only_add_beside_them(file_network) -> None:
    _, nodes = file_network
    si = os.urandom(32)
    placement = [nodes[1].identity.id] * 6
    await nodes[0].publish_holders(si, placement)
    # A stranger signs its own record for the same file, older: it is kept beside, the placer's stays newest.
    stranger = Identity.generate()
    older = records.make_holders(stranger, si, [stranger.id] * 6, at=1)
    key = records.holders_key(si)
    protocol = nodes[5].protocol
    assert protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, records.encode([older])) is True
    bundle = records.parse_bundle(nodes[5].store.get(key), key, now_ms=int(time.time() * 1000), min_difficulty=0)
    assert {records.signer(r) for r in bundle} >= {stranger.id}
    assert await nodes[9].find_holders(si) == placement


@ON_THE_FILES_LOOP
@pytest.mark.parametrize("case", ["bad signature", "another file's key", "too big", "not json", "future",
                                  "provider in another slot"])
async def test_a_store_of_a_value_that_is_not_valid_records_for_its_key_is_refused(file_network, case) -> None:
    _, nodes = file_network
    protocol = nodes[4].protocol
    si, stranger = os.urandom(32), Identity.generate()
    key = records.holders_key(si)
    record = records.make_holders(stranger, si, [stranger.id] * 6, at=int(time.time() * 1000))
    value = records.encode([record])
    if case == "bad signature":
        value = value.replace(record.signature.encode(), b"0" * 128)
    elif case == "another file's key":
        key = records.holders_key(os.urandom(32))
    elif case == "too big":
        value = b" " * (records.MAX_VALUE + 1)
    elif case == "not json":
        value = b"\xff" * 40
    elif case == "future":
        record = records.make_holders(stranger, si, [stranger.id] * 6, at=int(time.time() * 1000) + 3_600_000)
        value = records.encode([record])
    else:
        provider = records.make_provider(stranger, "storage", "http://127.0.0.1:9", int(time.time() * 1000))
        key = records.providers_key("storage", (records.provider_slot(stranger.id) + 1) % records.PROVIDER_SLOTS)
        value = records.encode([provider])
    # What the key holds is left as it was (a slot of providers holds the shared network's own records).
    refused, held = protocol.refused, nodes[4].store.get(key)
    assert protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, value) is False
    assert protocol.refused == refused + 1 and nodes[4].store.get(key) == held


def _signed_record(kind: str, signer: Identity) -> tuple[bytes, dict]:
    """A record of `kind` signed by `signer`: its key and its JSON form, as its signer stores it."""
    now = int(time.time() * 1000)
    if kind == "holders":
        si = os.urandom(32)
        return records.holders_key(si), records.make_holders(signer, si, [signer.id] * 6, at=now).to_json()
    if kind == "provider":
        return (records.providers_key("storage", records.provider_slot(signer.id)),
                records.make_provider(signer, "storage", "http://127.0.0.1:9", now).to_json())
    descriptor = make_descriptor(signer, url="http://127.0.0.1:9", capacity=1, free=1, version="t", timestamp=now)
    return records.node_key(signer.id), {"kind": "node", **descriptor.to_json()}


@pytest.mark.parametrize("kind, respell", [
    ("holders", lambda r: {**r, "si": r["si"].upper()}),
    ("holders", lambda r: {**r, "signature": r["signature"].upper()}),
    ("holders", lambda r: {**r, "at": float(r["at"])}),
    ("provider", lambda r: {**r, "signature": r["signature"].upper()}),
    ("node", lambda r: {**r, "signature": r["signature"].upper()}),
    ("node", lambda r: {**r, "grid": ""}),
], ids=["holders-si-upper-case", "holders-signature-upper-case", "holders-at-float", "provider-signature-upper-case",
        "node-signature-upper-case", "node-grid-empty"])
async def test_a_record_a_stranger_respells_is_refused_and_its_signed_form_is_taken(kind, respell) -> None:
    """Each respelling has the signed record's meaning and signature: stored, it would be a second record of one
    signer under the key, found and passed on beside the first."""
    one = await node(Directory())
    try:
        key, signed_form = _signed_record(kind, Identity.generate())
        protocol, refused = one.protocol, one.protocol.refused
        assert protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, codec.canonical([respell(signed_form)])) \
            is False
        assert protocol.refused == refused + 1 and one.store.get(key) is None
        assert protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, codec.canonical([signed_form])) is True
        assert one.store.get(key) == codec.canonical([signed_form])
    finally:
        one.close()


async def test_a_node_record_that_is_no_valid_descriptor_is_refused_and_counted() -> None:
    one = await node(Directory())
    try:
        key, signed_form = _signed_record("node", Identity.generate())
        refused = one.protocol.refused
        assert one.protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key,
                                      codec.canonical([{**signed_form, "free": 2}])) is False
        assert one.protocol.refused == refused + 1 and one.store.get(key) is None
    finally:
        one.close()


async def test_what_the_table_keeps_is_bounded_in_bytes_as_well_as_in_keys(monkeypatch) -> None:
    """A stranger's ids may each sign a holders record under any storage index's key: eight of them make every key
    a bundle of ~5,000 bytes, and MAX_KEYS of those would be half a gigabyte of the node's memory.  The oldest keys
    leave once the bundles held together pass MAX_BYTES; each store is still taken."""
    monkeypatch.setattr(table, "MAX_BYTES", 64 * 1024)
    target = await node(Directory())
    try:
        strangers = [Identity.generate() for _ in range(records.MAX_RECORDS)]
        keys, now = [], int(time.time() * 1000)
        for _ in range(40):
            si = os.urandom(32)
            value = records.encode([records.make_holders(s, si, [s.id] * 6, at=now) for s in strangers])
            keys.append(records.holders_key(si))
            assert target.protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), keys[-1], value) is True
        status = target.status()
        assert status["bytes"] <= table.MAX_BYTES and status["keys"] < len(keys)
        assert target.store.get(keys[-1]) is not None and target.store.get(keys[0]) is None
        assert status["bytes"] == sum(len(value) for _, value in target.store)
    finally:
        target.close()


async def test_a_holders_record_without_proof_of_work_is_refused() -> None:
    si, stranger = os.urandom(32), Identity.generate()
    record = records.make_holders(stranger, si, [stranger.id] * 6, at=int(time.time() * 1000))
    with pytest.raises(records.InvalidRecord, match="bits of work"):
        records.parse_bundle(records.encode([record]), records.holders_key(si), now_ms=int(time.time() * 1000),
                             min_difficulty=40)


async def test_malformed_oversized_and_flooding_datagrams_are_refused_and_the_node_still_answers() -> None:
    directory = Directory()
    nodes = await nodes_in(directory, 3, rate=20.0)
    tasks = await started(nodes)
    try:
        target = nodes[0]
        await eventually_async(lambda: target.transport is not None, "the node to listen", 10)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        address = target.bind
        junk = [b"\x00" + os.urandom(20) + b"\xc1\xc1",  # not msgpack
                b"\x00" + os.urandom(20) + umsgpack.packb(["store", [1, 2, 3]]),  # wrong argument types
                b"\x00" + os.urandom(20) + umsgpack.packb(["find_node", [b"x" * 20, b"y" * 5]]),  # short key
                b"\x00" + os.urandom(20) + umsgpack.packb({"a": 1}),  # not a call
                b"\x00" * 9000]  # bigger than any call
        for datagram in junk:
            sock.sendto(datagram, address)
        await eventually_async(lambda: target.protocol.refused >= len(junk), "the junk to be refused", 10)
        for _ in range(200):  # a flood from one address: past its quota, dropped unread
            sock.sendto(b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [os.urandom(20)]]), address)
        await eventually_async(lambda: target.protocol.refused >= len(junk) + 150, "the flood to be dropped", 10)
        sock.close()
        ok, answer = await nodes[1].protocol.ping(address, nodes[1].me.id)
        assert ok and answer == target.me.id
    finally:
        await closed(tasks, nodes)


async def test_datagrams_from_ipv6_addresses_draw_on_the_quota_of_their_64() -> None:
    """One host holds a whole IPv6 /64: a flood from a fresh address of it each datagram is one address's flood.
    (The addresses are the protocol's to read: this machine's loopback has no /64 to send them from.)"""
    directory = Directory()
    nodes = await nodes_in(directory, 1, rate=20.0)
    tasks = await started(nodes)
    try:
        protocol = nodes[0].protocol
        await eventually_async(lambda: nodes[0].transport is not None, "the node to listen", 10)
        ping = b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [os.urandom(20)]])
        for n in range(100):  # a burst of 40, then 20 a second
            protocol.datagram_received(ping, (f"2001:db8:1:2::{n + 1:x}", 4000))
        assert protocol.refused >= 40, protocol.refused
        refused = protocol.refused
        protocol.datagram_received(ping, ("2001:db8:1:3::1", 4000))  # another /64: its own quota
        assert protocol.refused == refused
    finally:
        await closed(tasks, nodes)


@ON_THE_FILES_LOOP
async def test_a_contact_the_directory_does_not_know_never_enters_the_routing_table(file_network) -> None:
    _, nodes = file_network
    stranger = await node(Directory())
    tasks = await started([stranger])
    try:
        await eventually_async(lambda: stranger.transport is not None, "the stranger to listen", 10)
        ok, _ = await stranger.protocol.ping(nodes[0].bind, stranger.me.id)
        assert ok  # answered (a lookup may ask anyone) ...
        contacts = {n.id for b in nodes[0].protocol.router.buckets for n in b.get_nodes()}
        assert stranger.me.id not in contacts  # ... but not taken into the table
    finally:
        await closed(tasks, [stranger])


async def test_the_librarys_tracing_stays_out_of_the_log_at_info(caplog) -> None:
    caplog.set_level(logging.INFO)
    directory = Directory()
    nodes = await nodes_in(directory, 4)
    for n in nodes:
        n.start()
    tasks = await started(nodes)
    try:
        await eventually_async(lambda: all(n.contacts() >= 3 for n in nodes), "the nodes to join", 30)
        await nodes[0].publish_holders(os.urandom(32), [nodes[i % 4].identity.id for i in range(6)])
        assert [r.name for r in caplog.records if r.name.split(".")[0] in ("kademlia", "rpcudp")] == []
    finally:
        await closed(tasks, nodes)
        for name in ("kademlia", "rpcudp"):
            logging.getLogger(name).setLevel(logging.NOTSET)


async def test_a_node_whose_udp_port_is_taken_runs_without_the_table_and_finds_nothing_there(caplog) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        lonely = service(Directory())
        lonely.bind = taken.getsockname()
        await lonely._round()
        await lonely._round()
        assert lonely.status()["listening"] is False
        assert await lonely.find_holders(os.urandom(32)) is None
        assert sum("cannot listen on UDP" in r.message for r in caplog.records if r.levelname == "WARNING") == 1
    finally:
        taken.close()



async def test_a_node_whose_id_lacks_the_proof_of_work_it_asks_of_others_publishes_nothing_and_goes_on(caplog) -> None:
    """A data dir's id minted under a lower peers.min_difficulty: peers refuse its records, and so does its own table;
    its rounds go on (no traceback each round), and it says once why it publishes nothing."""
    weak = service(Directory(), min_difficulty=40)  # a generated id has a few bits of work at most
    try:
        weak.start()
        assert await weak.listen()
        await weak._round()
        await weak._round()
        await weak.publish_holders(os.urandom(32), [weak.identity.id] * 6)
        assert weak.status()["keys"] == 0 and weak.status()["offered"] == [] and weak.status()["published"] == 0
        assert [r.message for r in caplog.records if r.levelname == "ERROR"] == []
        assert sum("publishes nothing" in r.message for r in caplog.records if r.levelname == "WARNING") == 1
    finally:
        weak.close()

async def test_a_node_alone_at_its_first_round_joins_as_soon_as_peers_are_up_not_an_interval_later() -> None:
    directory = Directory()
    first = await node(directory)
    first.interval = 3600.0  # the next regular round is an hour away
    tasks, others = await started([first]), []
    try:
        await eventually_async(lambda: first.transport is not None, "the first node to listen", 10)
        assert first.contacts() == 0
        others = await nodes_in(directory, 3)
        tasks += await started(others)
        await eventually_async(lambda: first.contacts() >= 3, "the first node to join its peers", 10)
    finally:
        await closed(tasks, [first, *others])


async def test_a_table_holding_every_peer_up_joins_again_only_once_another_is_up() -> None:
    """Fewer contacts than k (a small network) is no reason to join each round: the table admits no node the directory
    does not name, so once every peer up is a contact a join finds nothing; a peer that comes up later is joined
    through at the next round."""
    directory = Directory()
    nodes = await nodes_in(directory, 4)  # rounds every 0.2 s
    tasks = await started(nodes)
    newcomer = None
    try:
        await eventually_async(lambda: all(n.contacts() == 3 for n in nodes), "every node to hold the others", 10)
        first = nodes[0]
        status = first.status()
        await eventually_async(lambda: first.status()["rounds"] >= status["rounds"] + 5, "five rounds more", 10)
        assert first.status()["joins"] == status["joins"] and first.contacts() == 3
        newcomer = await node(directory)  # up (in the directory) and listening, its own rounds not started
        await eventually_async(lambda: first.status()["joins"] > status["joins"], "a join through the new peer", 10)
        await eventually_async(lambda: first.contacts() == 4, "the new peer a contact", 10)
    finally:
        await closed(tasks, [*nodes, *([newcomer] if newcomer else [])])


def test_the_table_follows_the_config_off_or_on_the_peer_port_with_a_record_per_offer(tmp_path) -> None:
    identity = Identity.generate()
    view = Directory().view(identity, 1)
    off = DhtService.configured(identity=identity, peers=view, quota=RateLimiter(1, 1),
                                config=node_config(tmp_path, "off", peers={"dht": False}))
    assert off.loops() == {}  # never listens
    on = DhtService.configured(identity=identity, peers=view, quota=RateLimiter(1, 1),
                               config=node_config(tmp_path, "on", market={"offer_compute": False},
                                                  node={"listen": "127.0.0.1:4123"}))
    assert set(on.loops()) == {"dht"} and on.bind == ("127.0.0.1", 4123) and on.offers == ("storage",)


@ON_THE_FILES_LOOP
async def test_a_contact_leaves_after_three_unanswered_calls_and_on_return_is_not_sent_every_record_again(
        file_network) -> None:
    _, nodes = file_network
    here = nodes[0].protocol
    contact = next(n for b in here.router.buckets for n in b.get_nodes())
    held = lambda: any(n.id == contact.id for b in here.router.buckets for n in b.get_nodes())  # noqa: E731
    await eventually_async(lambda: len(nodes[0].store.data) > 0, "records it would send a newcomer", 10)
    for _ in range(2):
        here.handle_call_response((False, None), contact)
    assert held()  # two lost datagrams do not remove it
    here.handle_call_response((False, None), contact)
    assert not held()
    sent = here.sent
    here.handle_call_response((True, contact.id), contact)
    assert held() and here.sent == sent  # back in the table; no store sent


async def test_calls_a_lookup_gave_up_on_end_quietly_whether_unanswered_or_answered_late(caplog) -> None:
    caplog.set_level(logging.WARNING)
    here = await node(Directory())
    here.protocol._wait_timeout = 0.3  # the library's wait for an answer (5 s): the unanswered call ends sooner
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a peer that is down, or slow
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        calls = [asyncio.ensure_future(here.protocol.ping(silent.getsockname(), here.me.id)) for _ in range(2)]
        asked = [await _datagram_from(silent, here.bind) for _ in calls]
        for call in calls:  # the lookup's own deadline passes: its calls under way are cancelled
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        refused = here.status()["refused"]
        late = asked[0]
        silent.sendto(b"\x01" + late[1:21] + umsgpack.packb(here.me.id), here.bind)  # one answer comes after all
        await eventually_async(lambda: not here.protocol._outstanding, "both calls to end", 10)
        assert errors == [] and here.status()["refused"] == refused
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        loop.set_exception_handler(None)
        silent.close()
        here.close()


class Liar(asyncio.DatagramProtocol):
    """A contact that answers every lookup call with `answer(key)` instead of what the call asks."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.asked = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        name, args = umsgpack.unpackb(data[21:])
        self.asked += 1
        self.transport.sendto(b"\x01" + data[1:21] + umsgpack.packb(self.answer(args[-1])), addr)


async def liar_in_table_of(victim: DhtService, answer) -> tuple[Liar, asyncio.DatagramTransport]:
    liar = Liar(answer)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: liar,
                                                                              local_addr=("127.0.0.1", 0))
    liar.port = transport.get_extra_info("sockname")[1]
    victim.protocol.router.add_contact(table.Node(os.urandom(20), "127.0.0.1", liar.port))
    return liar, transport


@pytest.mark.parametrize("answer", [7, "contacts", {"nope": 1}, {"value": 5}, [[b"x" * 20, "127.0.0.1"]],
                                    [[b"x" * 20, "not an address", 9]],
                                    [[os.urandom(20), "127.0.0.1", 9] for _ in range(table.K + 1)]])
async def test_a_contact_whose_answer_is_not_what_a_lookup_asks_is_counted_as_not_answering(answer) -> None:
    victim = await node(Directory())
    liar, transport = await liar_in_table_of(victim, lambda key: answer)
    try:
        refused = victim.protocol.refused
        assert await victim.find_node(Identity.generate().id) is None
        assert await victim.find_holders(os.urandom(32)) is None
        assert await table.find_nodes(victim.protocol, os.urandom(20), table.Lookup()) == []
        assert victim.protocol.refused == refused + liar.asked
    finally:
        transport.close()
        victim.close()


async def test_a_contact_naming_ever_closer_fake_contacts_cannot_keep_a_lookup_going() -> None:
    """Each answer names K ids closer to the key than the last, all at the liar's own address, which answers for
    each of them in the same way: the lookup stops after MAX_ROUNDS rounds of at most K calls each."""
    closer = iter(range(2 ** 150, 0, -table.K))

    def ever_closer(key: bytes) -> list:
        distance = next(closer)
        return [((int.from_bytes(key, "big") ^ (distance - i)).to_bytes(20, "big"), "127.0.0.1", liar.port)
                for i in range(1, table.K + 1)]
    victim = await node(Directory())
    liar, transport = await liar_in_table_of(victim, ever_closer)
    try:
        lookup = table.Lookup()
        assert await table.find_value(victim.protocol, os.urandom(20), lookup) is None
        assert lookup.hops == table.MAX_ROUNDS and liar.asked <= table.MAX_ROUNDS * table.K
        asked = liar.asked
        found = await table.find_nodes(victim.protocol, os.urandom(20), table.Lookup())
        assert len(found) <= table.K and liar.asked - asked <= table.MAX_ROUNDS * table.K
    finally:
        transport.close()
        victim.close()


async def test_a_lookup_from_an_address_that_answers_no_ping_is_not_answered_there(network) -> None:
    """A datagram's source address is whatever its sender wrote: lookups "from" a third party's address, each
    answered with a full bundle 77 times the bytes of the call, would make the node a reflector.  Such an address
    gets one 78-byte ping and nothing more; a node that answers the ping gets its answer."""
    directory, nodes = network
    # The third party's ping goes unanswered: the lookups are refused once it times out, here in 1 s rather than 5.
    target, reader = await node(directory, wait_timeout=1.0), nodes[1]
    si, now = os.urandom(32), int(time.time() * 1000)
    strangers = [Identity.generate() for _ in range(records.MAX_RECORDS)]
    key = records.holders_key(si)
    value = records.encode([records.make_holders(s, si, [s.id] * 6, at=now) for s in strangers])
    assert target.protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, value) is True
    third_party = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never answers
    third_party.bind(("127.0.0.1", 0))
    third_party.setblocking(False)
    try:
        refused = target.protocol.refused
        call = umsgpack.packb(["find_value", [os.urandom(20), key]])
        for _ in range(20):  # as if sent from the third party's address
            target.protocol.datagram_received(b"\x00" + os.urandom(20) + call, third_party.getsockname())
        await eventually_async(lambda: target.protocol.refused == refused + 20, "the lookups to go unanswered", 15)
        received = _datagrams_from(third_party, target.bind)
        assert len(received) == 1 and len(received[0]) < 100  # one ping
        assert umsgpack.unpackb(received[0][21:])[0] == "ping"
        ok, answer = await reader.protocol.find_value(target.bind, reader.me.id, key)
        assert ok and answer == {"value": target.store.get(key)}
    finally:
        third_party.close()
        target.close()


async def test_a_quarantined_node_never_enters_the_routing_table_and_the_directory_is_read_once_per_url(
        tmp_path, monkeypatch) -> None:
    """The directory keeps a quarantined node's descriptor: the table asks whether it is quarantined now.  And the
    table ids and addresses of the directory's nodes are made once per URL, not again at every change of the
    directory (hashing and parsing those of 1,000 nodes, at each descriptor re-signed, is 10-43 ms)."""
    from xsc.dht import service as dht_service
    from xsc.peers import PeerDirectory, PeerService
    from xsc.peers.admission import Admission, Quarantine

    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    quarantine = Quarantine(db, strikes=1, duration=3600)
    peers = PeerService(identity=Identity.generate(), db=db, config=node_config(tmp_path), client=None,
                        storage=lambda: None, url="http://10.9.9.9:7070", directory=PeerDirectory(db),
                        admission=Admission(min_difficulty=0, grid_secret="", quarantine=quarantine))
    identities = [Identity.generate() for _ in range(200)]
    now = int(time.time() * 1000)

    def descriptor(i: int, at: int):
        return make_descriptor(identities[i], url=f"http://10.0.{i >> 8}.{i & 255}:7070", capacity=1, free=1,
                               version="0", timestamp=at).to_json()
    for first in range(0, len(identities), 16):
        peers.accept([descriptor(i, now) for i in range(first, min(first + 16, len(identities)))])
    dht = DhtService(identity=Identity.generate(), peers=peers, bind=("127.0.0.1", 9),
                     quota=RateLimiter(10, 10), min_difficulty=0, interval=1, ttl=60)
    parsed = []
    monkeypatch.setattr(dht_service, "udp_address", lambda url: parsed.append(url) or udp_address_of(url))
    first, second = identities[0], identities[1]
    assert dht.protocol.admit(records.table_id(first.id), "10.0.0.0", 7070)
    assert not dht.protocol.admit(records.table_id(first.id), "10.0.0.9", 7070)  # not at the address it signed
    quarantine.put(first.id, "failed an audit")
    assert not dht.protocol.admit(records.table_id(first.id), "10.0.0.0", 7070)
    assert len(parsed) == len(identities)
    for at in range(1, 21):  # the second node re-signs its descriptor: the directory changes, its URL does not
        peers.accept([descriptor(1, now + at)])
        assert dht.protocol.admit(records.table_id(second.id), "10.0.0.1", 7070)
    assert len(parsed) == len(identities)
    db.close()


async def test_a_bundle_stored_again_and_again_is_checked_once(monkeypatch) -> None:
    """A store's source address is whatever its sender wrote, so no per-address quota holds a bundle signed once
    and sent again and again: each costs no signature check past its first, and a record changed in it still is
    checked (and refused)."""
    target = await node(Directory())
    try:
        checks = []
        verify = records.verify
        monkeypatch.setattr(records, "verify", lambda *args: checks.append(args) or verify(*args))
        si, now = os.urandom(32), int(time.time() * 1000)
        strangers = [Identity.generate() for _ in range(records.MAX_RECORDS)]
        key = records.holders_key(si)
        bundle = [records.make_holders(s, si, [s.id] * 6, at=now) for s in strangers]
        value = records.encode(bundle)
        for port in range(1000, 1050):
            assert target.protocol.rpc_store(("127.0.0.1", port), os.urandom(20), key, value) is True
        assert len(checks) == records.MAX_RECORDS
        changed = records.encode([*bundle[1:], records.Holders(si, (strangers[1].id,) * 6, bundle[0].by,
                                                                  bundle[0].at, bundle[0].signature)])
        assert target.protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, changed) is False
        assert set(records.parse_bundle(target.store.get(key), key, now_ms=now, min_difficulty=0)) == set(bundle)
    finally:
        target.close()


async def test_a_node_reached_elsewhere_sends_no_lookup_to_contacts_on_its_own_machine(node_factory) -> None:
    """A lookup's answer names contacts at addresses of its sender's choosing: at 127.0.0.1:53 or 0.0.0.0:11211
    they would point this node's calls at services of its own machine.  A node reached at a public address refuses
    such an answer (as it refuses a descriptor at such a URL); a node on loopback (a devnet) takes it."""
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a service of this machine's, on UDP
    service.bind(("127.0.0.1", 0))
    service.setblocking(False)
    local = service.getsockname()
    transports = []
    try:
        for public in (True, False):
            peers = {"public_url": "https://203.0.113.5:7070"} if public else {}
            node_ = await node_factory("public" if public else "devnet", peers=peers)
            dht = node_.app[NODE].dht
            await eventually_async(lambda: dht.transport is not None, "the node's table to listen", 10)
            liar, transport = await liar_in_table_of(dht, lambda key: [[os.urandom(20), *local]])
            transports.append(transport)
            try:  # (on loopback the contact named is called, and never answers: a second tells)
                await asyncio.wait_for(table.find_nodes(dht.protocol, os.urandom(20), table.Lookup()), 1)
            except TimeoutError:
                pass
            received = len(_datagrams_from(service, dht.bind))
            assert (received == 0) if public else (received > 0), (public, received)
    finally:
        for transport in transports:
            transport.close()
        service.close()


async def test_a_known_nodes_id_from_another_port_of_its_host_never_enters_the_routing_table(network) -> None:
    """Anyone on a known node's host (or forging its address) can send datagrams from another port under its id:
    such a contact would be sent the records the node should hold.  The table takes a node at the port it signed."""
    directory, nodes = network
    target = nodes[0]
    absent = Identity.generate()  # known to the directory, at a port where nothing listens
    port = udp_port()
    directory.descriptors.append(make_descriptor(absent, url=f"http://127.0.0.1:{port}", capacity=1, free=1,
                                                 version="t", timestamp=int(time.time() * 1000)))
    si = os.urandom(32)
    await nodes[3].publish_holders(si, [nodes[i].identity.id for i in (1, 2, 3, 4, 5, 6)])
    impostor = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    impostor.bind(("127.0.0.1", 0))
    impostor.setblocking(False)
    try:
        for _ in range(3):
            impostor.sendto(b"\x00" + os.urandom(20) + umsgpack.packb(["ping", [records.table_id(absent.id)]]),
                            target.bind)
        answers = []

        def answered() -> bool:
            try:
                answers.append(impostor.recv(65536))
            except BlockingIOError:
                pass
            return len(answers) >= 3
        await eventually_async(answered, "the pings to be answered (each after its sender is welcomed or not)", 10)
        contacts = {(n.ip, n.port) for b in target.protocol.router.buckets for n in b.get_nodes()}
        assert ("127.0.0.1", impostor.getsockname()[1]) not in contacts
        assert target.protocol.admit(records.table_id(absent.id), "127.0.0.1", port)
    finally:
        impostor.close()


@ON_THE_FILES_LOOP
async def test_a_nodes_lookups_check_each_record_they_find_once(file_network, monkeypatch) -> None:
    """Every answer to a lookup is a stranger's word and its records are checked, but a record this node's lookups
    found and checked before, byte for byte under the same key, is not checked again: a lookup of the same records
    costs no signature check, and one of a record signed since costs one."""
    _, nodes = file_network
    looker = nodes[0]
    si, now = os.urandom(32), int(time.time() * 1000)
    key = records.holders_key(si)
    strangers = [Identity.generate() for _ in range(records.MAX_RECORDS)]
    bundle = [records.make_holders(s, si, [s.id] * 6, at=now - 10 - i) for i, s in enumerate(strangers)]

    def stored_everywhere_but_here(value: bytes) -> None:
        for n in nodes[1:]:
            assert n.protocol.rpc_store(("127.0.0.1", 9), os.urandom(20), key, value) is True
    stored_everywhere_but_here(records.encode(bundle))
    # The checks of this file's holders records that the lookups make (on this test's task): meanwhile the nodes
    # publish their own records, and hand the ones they hold to nodes new to them, which check what they store.
    checks = []
    lookups = asyncio.current_task()
    verify = records.verify

    def counted(key: bytes, signature: bytes, signed: bytes) -> bool:
        if si.hex().encode() in signed and asyncio.current_task() is lookups:
            checks.append(signature)
        return verify(key, signature, signed)
    monkeypatch.setattr(records, "verify", counted)
    assert await looker.find_holders(si) == [strangers[0].id] * 6
    assert len(checks) >= records.MAX_RECORDS  # the first lookup checks what it finds
    checks.clear()
    assert await looker.find_holders(si) == [strangers[0].id] * 6
    assert checks == []
    newer = records.make_holders(strangers[3], si, [strangers[3].id] * 6, at=now)
    stored_everywhere_but_here(records.encode([newer]))
    checks.clear()
    assert await looker.find_holders(si) == [strangers[3].id] * 6
    assert len(checks) == 1

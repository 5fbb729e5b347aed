"""A stranger floods a node's peer directory with self-signed descriptors."""

from __future__ import annotations

import asyncio
import json
import time

import plyvel
import pytest

from xsc import keys
from xsc.identity import Identity, sign_request
from xsc.node.appkeys import NODE
from xsc.peers import PeerDirectory, make_descriptor
from xsc.peers import service
from xsc.peers.probes import HealthService
from xsc.peers.service import MAX_NEW_PER_MESSAGE, MAX_PER_MESSAGE, NEW_NODE_BURST, PeerService

from tests.support.attacks import fake_descriptors, honest_commitment, signed
from tests.support.nodes import node_config
from tests.support.peers import dialled_from_here
from tests.support.waiting import eventually, eventually_async

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def test_a_flood_of_fake_nodes_takes_a_bounded_place_and_the_real_peers_stay(node_factory) -> None:
    node = await node_factory("victim", **QUIET)
    honest = await node_factory("honest", **QUIET)
    await node.app[NODE].peers.add(honest.app[NODE].peers.url)
    peers = node.app[NODE].peers
    now = int(time.time() * 1000)
    fakes = [make_descriptor(Identity.generate(), url=f"http://127.0.0.{2 + i // 250}:{10000 + i}", capacity=1,
                             free=1, version="0", timestamp=now).to_json() for i in range(999)]
    attacker = Identity.generate()
    raw = json.dumps({"descriptors": fakes}).encode()
    path = "/v1/peer/descriptors"
    headers = {**sign_request(attacker, "POST", path, raw, receiver=peers.identity.id),
               "Content-Type": "application/json"}
    response = await node.post(path, data=raw, headers=headers)
    assert response.status == 200
    answer = await response.json()
    assert len(peers.peers()) <= 1 + MAX_NEW_PER_MESSAGE
    assert peers.known(honest.app[NODE].peers.identity.id)
    assert len(answer["descriptors"]) <= MAX_PER_MESSAGE
    # Again and again: the directory never holds more than its bound, and the honest peer is kept.
    for _ in range(3):
        more = [make_descriptor(Identity.generate(), url=f"http://127.0.0.9:{20000 + i}", capacity=1, free=1,
                                version="0", timestamp=now).to_json() for i in range(40)]
        raw = json.dumps({"descriptors": more}).encode()
        headers = {**sign_request(attacker, "POST", path, raw, receiver=peers.identity.id),
                   "Content-Type": "application/json"}
        assert (await node.post(path, data=raw, headers=headers)).status == 200
    assert peers.known(honest.app[NODE].peers.identity.id)
    assert len(peers.peers()) <= 1 + 4 * MAX_NEW_PER_MESSAGE


async def test_one_address_adds_at_most_its_budget_of_new_nodes_whatever_keys_sign_its_messages(node_factory) -> None:
    """Messages of fake descriptors from fresh keys, sent as fast as the node answers, made it check and probe 16
    new nodes a message: one address's messages now add at most a burst of
    NEW_NODE_BURST and `peers.new_node_rate` a second after it."""
    node = await node_factory("victim", health={"probe_interval": 3600},
                              peers={"gossip_interval": 3600, "new_node_rate": 1})
    peers = node.app[NODE].peers
    path = "/v1/peer/descriptors"
    start, statuses = time.monotonic(), []
    for n in range(NEW_NODE_BURST // MAX_NEW_PER_MESSAGE + 4):
        sender = Identity.generate()  # a fresh key each message: a per-key quota would not bound it
        raw = json.dumps({"descriptors": fake_descriptors([Identity.generate() for _ in range(20)],
                                                          first_port=10000 + 100 * n)}).encode()
        headers = {**sign_request(sender, "POST", path, raw, receiver=peers.identity.id),
                   "Content-Type": "application/json"}
        sent = time.monotonic()
        response = await node.post(path, data=raw, headers=headers)
        statuses.append(response.status)
        if response.status == 429:  # nothing left: refused before the message is even parsed
            assert float(response.headers["Retry-After"]) > 0
        else:
            last_taken = sent  # (its budget's last whole tokens were taken after this)
    added = len(peers.peers())
    assert NEW_NODE_BURST <= added <= NEW_NODE_BURST + (time.monotonic() - start) * 1
    assert statuses[:NEW_NODE_BURST // MAX_NEW_PER_MESSAGE] == [200] * (NEW_NODE_BURST // MAX_NEW_PER_MESSAGE)
    assert 429 in statuses[NEW_NODE_BURST // MAX_NEW_PER_MESSAGE:]
    # Another address has its own budget (a peer's answer to this node's own exchange draws on its host's).
    more = fake_descriptors([Identity.generate() for _ in range(16)], first_port=30000)
    assert len(peers.accept(more, source="192.0.2.7")) == 16
    # This one has less than a token left, and what the rate gave back since (1 a second): whole tokens only.
    taken = len(peers.accept(fake_descriptors([Identity.generate() for _ in range(16)], first_port=31000),
                             source="127.0.0.1"))
    assert taken < 1 + (time.monotonic() - last_taken) * 1
    # An IPv6 address by its /64, which one host holds whole: a fresh address of it draws on the same budget.
    for n in range(NEW_NODE_BURST // MAX_NEW_PER_MESSAGE):
        peers.accept(fake_descriptors([Identity.generate() for _ in range(16)], first_port=32000 + 100 * n),
                     source=f"2001:db8:5:6::{n + 1:x}")
    spent = time.monotonic()
    taken = len(peers.accept(fake_descriptors([Identity.generate() for _ in range(16)], first_port=40000),
                             source="[2001:db8:5:6:ffff::1]"))  # (a peer's URL's host, brackets and all)
    assert taken < 1 + (time.monotonic() - spent) * 1
    assert len(peers.accept(fake_descriptors([Identity.generate() for _ in range(16)], first_port=41000),
                            source="2001:db8:5:7::1")) == 16  # another /64: its own budget


def test_a_full_directory_makes_room_with_the_oldest_signed_nodes_never_proven_up(tmp_path, monkeypatch) -> None:
    """A full directory asked whether each of its 1,000 nodes was proven up for every new node of a message (16 x
    1,000 on the event loop: ~40 ms a message in the attack bench); it asks once a message, and still makes room
    with the oldest-signed nodes never proven up, and ignores new nodes when every node held was proven."""
    monkeypatch.setattr(service, "MAX_PEERS", 40)
    directory = PeerDirectory(plyvel.DB(str(tmp_path / "db"), create_if_missing=True))
    now = int(time.time() * 1000)

    def descriptors(n: int, port: int, timestamp: int) -> list:
        return [make_descriptor(Identity.generate(), url=f"http://127.0.0.9:{port + i}", capacity=1, free=1,
                                version="0", timestamp=timestamp + i) for i in range(n)]

    here = {"me": "me", "my_url": "http://127.0.0.1:1"}
    held = descriptors(40, 10000, now - 1000)
    for at in range(0, len(held), MAX_NEW_PER_MESSAGE):  # (at most that many new nodes a message)
        directory.merge(held[at:at + MAX_NEW_PER_MESSAGE][::-1], **here)  # in any order: the signing time decides
    assert len(directory) == 40
    proven_ids = {d.id for d in held[:5]}  # the five oldest-signed were proven up: they stay
    asked: list[str] = []

    def proven(node_id: str) -> bool:
        asked.append(node_id)
        return node_id in proven_ids

    new = descriptors(MAX_NEW_PER_MESSAGE, 20000, now)
    directory.merge(new, proven=proven, **here)
    assert len(directory) == 40 and all(directory.get(d.id) is d for d in new)
    assert [d for d in held if directory.get(d.id) is None] == held[5:5 + MAX_NEW_PER_MESSAGE]
    assert sorted(asked) == sorted(d.id for d in held)  # once for each node held, not once per new node
    # Every node held proven up: a new one is ignored.
    ignored = descriptors(1, 30000, now)
    directory.merge(ignored, proven=lambda node_id: True, **here)
    assert directory.get(ignored[0].id) is None and len(directory) == 40


class _Listener:
    """Where a stranger's fake nodes "are": ports that take every connection, note its request line and never answer
    (so that each fake node stays unproven for as long as the test runs)."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, str]] = []  # (port, request line)
        self._servers: list[asyncio.Server] = []
        self._held: list[asyncio.StreamWriter] = []

    async def open(self, count: int) -> list[int]:
        for _ in range(count):
            server = await asyncio.start_server(self._take, "127.0.0.1", 0)
            self._servers.append(server)
        return [s.sockets[0].getsockname()[1] for s in self._servers]

    async def _take(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not dialled_from_here(writer):  # a stray: another process's node dialling a port it knew
            writer.close()
            return
        line = await reader.readline()
        self.requests.append((writer.get_extra_info("sockname")[1], line.decode(errors="replace").strip()))
        self._held.append(writer)  # never answered

    async def close(self) -> None:
        for writer in self._held:
            writer.close()
        for server in self._servers:
            server.close()


async def test_nodes_a_stranger_names_are_sent_nothing_but_a_probe_and_recognised_not_at_all(node_factory) -> None:
    """A node learned of from a stranger's message and never proven up (no answer to a probe yet) was recognised
    at 0.5: subscribed to, pulled from, gossiped with and named in this node's own commitment, so a flood of fake
    descriptors made the node spend its loop on contacting them (the attack bench's descriptor flood:
    /health samples up to 108 ms).  Now nothing but the probe goes to it, and it is recognised 0 until it answers one."""
    node = await node_factory("victim", health={"probe_interval": 3600, "probe_timeout": 60},
                              peers={"gossip_interval": 3600, "tls": False})
    peers = node.app[NODE].peers
    listener = _Listener()
    try:
        ports = await listener.open(4)
        now = int(time.time() * 1000)
        fakes = [Identity.generate() for _ in ports]
        descriptors = [make_descriptor(key, url=f"http://127.0.0.1:{port}", capacity=1, free=1, version="0",
                                       timestamp=now).to_json() for key, port in zip(fakes, ports)]
        raw, path = json.dumps({"descriptors": descriptors}).encode(), "/v1/peer/descriptors"
        headers = {**sign_request(Identity.generate(), "POST", path, raw, receiver=peers.identity.id),
                   "Content-Type": "application/json"}
        assert (await node.post(path, data=raw, headers=headers)).status == 200
        assert all(peers.known(key.id) for key in fakes)
        await asyncio.to_thread(eventually, lambda: {p for p, _ in listener.requests} == set(ports),
                                "a probe of each fake node")
        assert all(peers.availability(key.id).up is None for key in fakes)  # probed, not answered

        market, allocation = node.app[NODE].market, node.app[NODE].allocation
        assert not set(market.recognition()) & {key.id for key in fakes}
        await market.fill_book()
        await allocation.gossip.maintain_subscriptions()
        await market.republish(force=True)
        await asyncio.sleep(0.2)
        assert sorted(line for _, line in listener.requests) == ["POST /v1/peer/challenge HTTP/1.1"] * len(ports)
        own = market.book.get(peers.identity.id)
        assert own is not None and not set(own.recognition) & {key.id for key in fakes}
        assert not any(market.active(key.id) for key in fakes)
    finally:
        await listener.close()


async def test_a_node_pushed_out_of_a_full_directory_leaves_nothing_behind(node_factory, monkeypatch) -> None:
    """A stranger makes its fresh keys peers (their ids are minted once) and publishes their commitments; each is
    probed once and its failure kept (`h/p/`).  A full directory makes room by dropping the oldest-signed nodes
    never proven up: each goes with its probe history and its commitment (book and `m/c/`), as a node the user
    removes, so what the stranger's keys leave stays within the directory's bound however many it mints."""
    monkeypatch.setattr(service, "MAX_PEERS", MAX_NEW_PER_MESSAGE)
    node = await node_factory("victim", health={"probe_interval": 3600, "probe_timeout": 5},
                              peers={"gossip_interval": 3600})
    peers, market, db = node.app[NODE].peers, node.app[NODE].market, node.app[NODE].db
    me = peers.identity.id

    def records(prefix: bytes) -> int:
        with db.iterator(prefix=prefix, include_value=False) as it:
            return sum(1 for _ in it)

    for _ in range(4):  # each message of new nodes pushes the one before out: they were never proven up
        fakes = [Identity.generate() for _ in range(MAX_NEW_PER_MESSAGE)]
        for path, body in (("/v1/peer/descriptors", {"descriptors": fake_descriptors(fakes)}),
                           ("/v1/peer/market", {"commitments": [honest_commitment(f, me) for f in fakes]})):
            raw = json.dumps(body).encode()
            response = await node.post(path, data=raw, headers=signed(fakes[0], "POST", path, raw, me))
            assert response.status == 200, await response.text()
        assert {f.id for f in fakes} <= {c.participant for c in market.book.commitments()}
        await eventually_async(lambda: all(peers.availability(f.id).up is False for f in fakes),
                               "a failed probe of each fake node")
    assert {d.id for d in peers.peers()} == {f.id for f in fakes}
    assert {c.participant for c in market.book.commitments()} <= {f.id for f in fakes} | {me}
    assert records(keys.HEALTH_PEERS) == MAX_NEW_PER_MESSAGE
    assert records(keys.MARKET_COMMITMENTS) <= MAX_NEW_PER_MESSAGE + 1  # and this node's own


def test_an_answer_to_a_message_of_descriptors_costs_the_same_however_many_peers_are_known(tmp_path) -> None:
    """Every message of descriptors (a unit of its sender's work quota) is answered with a sample of the peers
    proven up: asking each known peer whether it is up, per answer, would make an answer of a full directory 0.9 ms
    of the event loop.  The directory is read again only when it or a probe changed."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    config = node_config(tmp_path)
    directory = PeerDirectory(db)
    health = HealthService(db=db, directory=directory, config=config.health, challenge=None)
    peers = PeerService(identity=Identity.generate(), db=db, config=config, client=None, storage=lambda: None,
                        url="http://10.9.9.9:7070", directory=directory, health=health)
    now = int(time.time() * 1000)
    held = [make_descriptor(Identity.generate(), url=f"http://10.0.{i >> 8}.{i & 255}:7070", capacity=1, free=1,
                            version="0", timestamp=now - i) for i in range(300)]
    for at in range(0, len(held), MAX_NEW_PER_MESSAGE):
        directory.merge(held[at:at + MAX_NEW_PER_MESSAGE], me=peers.identity.id, my_url=peers.url)
    asked = []
    availability = health.availability
    health.availability = lambda node_id: asked.append(node_id) or availability(node_id)

    def answer() -> list[str]:
        return [d["id"] for d in peers.gossip_answer([])["descriptors"][1:]]
    assert answer() == [d.id for d in held[:service.GOSSIPED]]  # none proven up: the newest-signed
    for _ in range(50):
        answer()
    assert len(asked) <= len(held)  # once per peer in all, not once per peer per answer
    proven = held[100:120]
    for d in proven:
        health.answered(d, 1.0)  # a probe changed what is up: the sample is of the peers proven up now
    for _ in range(20):
        sent = answer()
        assert len(sent) == service.GOSSIPED and set(sent) <= {d.id for d in proven}
    assert len(asked) <= 2 * len(held)
    db.close()


@pytest.mark.parametrize("descriptors", [5, None, {"a": 1}, "x"])
async def test_a_node_answering_an_exchange_with_descriptors_that_are_not_a_list_is_refused(node_factory,
                                                                                          descriptors) -> None:
    """Joining such a node (`xsc peers add`) is a 502 peer-refused, not an internal error, and a node whose seeds
    include it joins the others."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    plain = {**QUIET, "peers": {**QUIET["peers"], "tls": False}}
    liar = Identity.generate()

    async def answer(request: web.Request) -> web.Response:
        own = make_descriptor(liar, url=f"http://{request.host}", capacity=1, free=1, version="0",
                              timestamp=int(time.time() * 1000))
        return web.json_response({"self": own.to_json(), "descriptors": descriptors})
    app = web.Application()
    app.router.add_post("/v1/peer/descriptors", answer)
    liar_server = TestServer(app, host="127.0.0.1")
    await liar_server.start_server()
    liar_url = f"http://{liar.id}@127.0.0.1:{liar_server.port}"
    try:
        honest = await node_factory("honest", **plain)
        node = await node_factory("joiner", **{**plain, "peers": {**plain["peers"],
                                                                   "urls": [liar_url, honest.app[NODE].peers.url]}})
        response = await node.post("/v1/peers", json={"url": liar_url})
        assert response.status == 502 and (await response.json())["code"] == "peer-refused"
        honest_id = honest.app[NODE].peers.identity.id
        await eventually_async(lambda: node.app[NODE].peers.get(honest_id) is not None, "the other seed joined", 10)
    finally:
        await liar_server.close()


async def test_first_probes_waiting_their_turn_are_no_more_than_the_nodes_in_the_directory(tmp_path,
                                                                                          monkeypatch) -> None:
    """A node learned of is probed at once, PROBES_AT_ONCE at a time; a stranger can cycle its ids through a full
    directory (each message's new nodes push out the oldest never proven up), at addresses that never answer, faster
    than probes can take them.  A node pushed out takes its first probe with it, so no more wait than the directory
    holds."""
    monkeypatch.setattr(service, "MAX_PEERS", 40)
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    config = node_config(tmp_path)
    directory = PeerDirectory(db)
    never = asyncio.Event()

    async def unanswered(url: str, node_id: str, timeout: float) -> dict:
        await never.wait()  # an address that never answers (and a probe timeout longer than the test)
        return {}
    health = HealthService(db=db, directory=directory, config=config.health, challenge=unanswered)
    peers = PeerService(identity=Identity.generate(), db=db, config=config, client=None, storage=lambda: None,
                        url="http://10.9.9.9:7070", directory=directory, health=health)
    health.start()
    try:
        fakes = [Identity.generate() for _ in range(400)]
        for first in range(0, len(fakes), MAX_NEW_PER_MESSAGE):
            peers.accept(fake_descriptors(fakes[first:first + MAX_NEW_PER_MESSAGE], first_port=20000 + first))
            await asyncio.sleep(0)
        assert len(peers.peers()) == 40
        waiting = [t for t in asyncio.all_tasks() if t.get_name() == "xsc-first-probe" and not t.done()]
        assert len(waiting) <= 40
    finally:
        await health.close()
        db.close()


def test_a_directory_keeps_at_start_only_the_peers_this_node_takes_now(tmp_path, monkeypatch) -> None:
    """Descriptors stored under an earlier configuration (no grid secret yet, a lower peers.min_difficulty) or past
    the directory's bound are dropped at start, from LevelDB too, in one batch: the next start reads at most
    MAX_PEERS descriptors, all of nodes this node admits now (the newest-signed), and writes nothing."""
    from xsc.peers.admission import Admission
    from xsc.peers.store import PeerStore

    monkeypatch.setattr(service, "MAX_PEERS", 40)
    secret = "a-grid-secret-set-later"
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    now = int(time.time() * 1000)
    members = [make_descriptor(Identity.generate(), url=f"http://10.0.1.{i}:7070", capacity=1, free=1, version="0",
                               timestamp=now - i, grid_secret=secret) for i in range(60)]
    others = [make_descriptor(Identity.generate(), url=f"http://10.0.2.{i}:7070", capacity=1, free=1, version="0",
                              timestamp=now) for i in range(20)]
    store = PeerStore(db)
    for d in members + others:
        store.descriptor(d.key, d.encode())
    db.put(keys.peer_descriptor(b"\x01" * 32), b"not a descriptor")
    admission = Admission(min_difficulty=0, grid_secret=secret)
    batches = []

    class Counted:
        """The database, counting the write batches made of it."""

        def write_batch(self, *args, **kwargs):
            batches.append(1)
            return db.write_batch(*args, **kwargs)

        def __getattr__(self, name: str):
            return getattr(db, name)

    def started() -> PeerDirectory:
        return PeerDirectory(Counted(), lambda d: admission.refusal(d, quarantine=False) is None)
    assert {d.id for d in started().all()} == {d.id for d in members[:40]}
    assert len(batches) == 1
    assert {key for key, _ in store.descriptors()} == {d.key for d in members[:40]}
    assert {d.id for d in started().all()} == {d.id for d in members[:40]} and len(batches) == 1
    db.close()


def _spaced(hex_text: str) -> str:
    return " ".join(hex_text[i:i + 2] for i in range(0, len(hex_text), 2))


async def _send_descriptors(node, sender: Identity, descriptors: list[dict]) -> tuple[int, dict]:
    raw = json.dumps({"descriptors": descriptors}).encode()
    path = "/v1/peer/descriptors"
    headers = {**sign_request(sender, "POST", path, raw, receiver=node.app[NODE].peers.identity.id),
               "Content-Type": "application/json"}
    response = await node.post(path, data=raw, headers=headers)
    return response.status, await response.json()


@pytest.mark.parametrize("respell, said", [
    (lambda d: {**d, "signature": d["signature"].upper()}, "signature is"),
    (lambda d: {**d, "signature": _spaced(d["signature"])}, "signature is"),
    (lambda d: {**d, "grid": ""}, "grid is not a field"),
    (lambda d: {**d, "grid": "AB" * 32}, "grid is"),
    (lambda d: {**d, "capacity": float(d["capacity"])}, "capacity must be a non-negative integer"),
], ids=["signature-upper-case", "signature-spaced", "grid-empty", "grid-upper-case", "capacity-float"])
async def test_a_descriptor_a_stranger_respells_is_refused_and_not_taken(node_factory, respell, said) -> None:
    """Each respelling has the signed descriptor's meaning and signature: taken, it would be a second record of one
    node, passed on beside the first."""
    node = await node_factory("victim", **QUIET)
    peers = node.app[NODE].peers
    other = Identity.generate()
    signed_form = make_descriptor(other, url="http://127.0.0.1:9", capacity=10, free=10, version="0",
                                  timestamp=int(time.time() * 1000)).to_json()
    status, answer = await _send_descriptors(node, Identity.generate(), [respell(signed_form)])
    assert status == 422 and answer["code"] == "invalid-descriptor" and said in answer["detail"], answer
    assert not peers.known(other.id)
    status, answer = await _send_descriptors(node, Identity.generate(), [signed_form])
    assert status == 200 and peers.directory.get(other.id).to_json() == signed_form, answer


async def test_a_grid_proof_added_to_a_descriptor_on_an_open_network_is_not_taken(node_factory) -> None:
    """The signature does not cover a grid proof, and no node of an open network makes one: added by a stranger, it
    would make a second record of the node."""
    node = await node_factory("victim", **QUIET)
    other = Identity.generate()
    signed_form = make_descriptor(other, url="http://127.0.0.1:9", capacity=10, free=10, version="0",
                                  timestamp=int(time.time() * 1000)).to_json()
    status, answer = await _send_descriptors(node, Identity.generate(), [{**signed_form, "grid": "ab" * 32}])
    assert status == 200 and not node.app[NODE].peers.known(other.id), answer


async def test_a_descriptor_with_a_capacity_no_json_reader_holds_exactly_is_refused(node_factory) -> None:
    """Peers are listed in JSON: a browser would read a capacity of 2^53 + 1 bytes as 2^53, not what was signed."""
    node = await node_factory("victim", **QUIET)
    fake = Identity.generate()
    now = int(time.time() * 1000)
    huge = make_descriptor(fake, url="http://127.0.0.1:9", capacity=2**53 + 1, free=1, version="0", timestamp=now)
    status, answer = await _send_descriptors(node, Identity.generate(), [huge.to_json()])
    assert status == 422 and "capacity must be a non-negative integer of at most 9,007,199,254,740,991" in \
        answer["detail"], answer
    assert not node.app[NODE].peers.known(fake.id)
    largest = make_descriptor(fake, url="http://127.0.0.1:9", capacity=2**53 - 1, free=1, version="0", timestamp=now)
    status, answer = await _send_descriptors(node, Identity.generate(), [largest.to_json()])
    assert status == 200 and node.app[NODE].peers.known(fake.id), answer

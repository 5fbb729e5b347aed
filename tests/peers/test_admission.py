"""Admission on real nodes: proof-of-work node ids (peers.min_difficulty), closed grids (peers.grid_secret) and
the quarantine of peers that misbehave (docs/security.md).

The loopback services here count only connections dialled from this process (the test's nodes): in a full suite a
port the system hands out may be one another process's node knew a peer at, and that node may still be dialling it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest

from xsc.errors import PeerRefused, PeerUnreachable
from xsc.identity import (HEADER_GRID, NODE_KEY_FILE, Identity, id_difficulty, parse_public_id, sign_request,
                          write_secret)
from xsc.ledger.core.model import authorize, encode_authorization
from xsc.node.appkeys import NODE, REPLAY_GUARD
from xsc.peers import make_descriptor
from xsc.peers.admission import Quarantine

from tests.support.calls import python_calls
from tests.support.nodes import serve
from tests.support.peers import api, dialled_from_here, node_id

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
BITS = 8  # cheap to mint (~256 keys), rare by chance (1 key in 256)
SECRET = "a-grid-secret-of-the-test-network"


def _weak(bits: int = BITS) -> Identity:
    """A key with fewer than `bits` bits of proof of work in its id (almost any fresh key)."""
    while True:
        identity = Identity.generate()
        if id_difficulty(identity.public_key) < bits:
            return identity


async def _signed(node, signer: Identity, path: str, payload: dict, **extra_headers) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    headers = {**sign_request(signer, "POST", path, body, receiver=node.app[NODE].peers.identity.id),
               "Content-Type": "application/json", **extra_headers}
    response = await node.post(path, data=body, headers=headers)
    return response.status, await response.json()


def _descriptor(identity: Identity, port: int, grid_secret: str = "") -> dict:
    return make_descriptor(identity, url=f"http://127.0.0.1:{port}", capacity=10, free=10, version="test",
                           timestamp=int(time.time() * 1000), grid_secret=grid_secret).to_json()


def _counting(connections: list[int]):
    """A service that notes each connection the test's nodes make to it, and closes it."""
    def take(reader, writer) -> None:
        if dialled_from_here(writer):
            connections.append(1)
        writer.close()
    return take


async def test_a_node_reached_elsewhere_takes_no_descriptor_whose_url_names_its_own_machine(node_factory) -> None:
    """A stranger's descriptor at http://127.0.0.1:PORT (or 0.0.0.0, or localhost) would point this node's probes,
    exchanges and deals at services of its own machine: only a node whose own URL is on this machine (a devnet)
    can have peers there."""
    node = await node_factory("public", **{**QUIET, "peers": {**QUIET["peers"], "public_url": "https://203.0.113.5:7443"}})
    local = await node_factory("local", **QUIET)
    sender = Identity.generate()
    on_machine = [Identity.generate() for _ in range(4)]
    elsewhere = Identity.generate()

    def described(identity: Identity, url: str) -> dict:
        return make_descriptor(identity, url=url, capacity=10, free=10, version="test",
                               timestamp=int(time.time() * 1000)).to_json()

    urls = ["http://127.0.0.1:1111", "https://127.9.9.9:2222", "https://0.0.0.0:3333", "http://localhost:4444"]
    body = {"descriptors": [described(i, u) for i, u in zip(on_machine, urls)]
            + [described(elsewhere, "https://198.51.100.7:7070")]}
    for receiver in (node, local):
        status, answer = await _signed(receiver, sender, "/v1/peer/descriptors", body)
        assert status == 200, answer
    directory = node.app[NODE].peers.directory
    assert [directory.get(i.id) for i in on_machine] == [None] * 4 and directory.get(elsewhere.id) is not None
    assert all(local.app[NODE].peers.directory.get(i.id) is not None for i in [*on_machine, elsewhere])


async def test_a_node_reached_elsewhere_dials_no_peer_whose_name_resolves_to_its_own_machine(node_factory,
                                                                                          monkeypatch) -> None:
    """What a peer's host name resolves to is only known as it is dialled: a name (peer.example, resolving to
    127.0.0.1) or a numeric shorthand (127.1, 2130706433) would point a node reached elsewhere at services of its
    own machine.  Such a node connects to none of them, by any of its ways of dialling; a devnet on loopback still
    does."""
    import asyncio

    node = await node_factory("public", **{**QUIET, "peers": {**QUIET["peers"], "public_url": "https://203.0.113.5:7443"}})
    local = await node_factory("local", **QUIET)
    connections = []
    service = await asyncio.start_server(_counting(connections), "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    resolve = loop.getaddrinfo

    async def dns(host, *args, **kwargs):  # a name some DNS server answers with this machine's address
        return await resolve("127.0.0.1" if host == "peer.example" else host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", dns)
    try:
        urls = [f"https://peer.example:{port}", f"https://127.1:{port}", f"https://2130706433:{port}"]
        client = node.app[NODE].client
        for url in urls:
            for kept in (False, True):
                with pytest.raises(PeerUnreachable):
                    await client.request(url, "GET", "/v1/peer/terms", max_size=1024, kept=kept, timeout=5)
            with pytest.raises(PeerUnreachable):
                await client.identify(url, timeout=5)
        assert connections == []
        assert [node.app[NODE].admission.refusal(make_descriptor(
            Identity.generate(), url=u, capacity=1, free=1, version="test", timestamp=int(time.time() * 1000)))
            is None for u in urls] == [True, False, False]  # a name is judged as it is dialled, not by its spelling
        with pytest.raises(PeerUnreachable):  # the devnet's node connects (and finds no TLS node there)
            await local.app[NODE].client.identify(urls[0], timeout=5)
        assert connections == [1]
    finally:
        service.close()
        await service.wait_closed()


async def test_a_node_named_by_a_public_host_name_dials_no_lan_address(node_factory, monkeypatch) -> None:
    """A node whose URL is a host name is at a public address when the name resolves to one as it starts: a
    stranger's descriptor naming a host that resolves into a LAN gets no connection from it, by any of its ways of
    dialling.  A node whose own name resolves into its LAN (a home network's grid) dials its LAN peers."""
    import asyncio
    import socket

    from xsc.config import dialable
    from xsc.net.dial import own_addresses

    connections = []
    service = await asyncio.start_server(_counting(connections), "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    resolve, connect = loop.getaddrinfo, loop.sock_connect
    names = {"storage.example.org": "9.9.9.9", "nas.home.example": "192.168.1.20", "lan.example": "192.168.1.30"}

    async def dns(host, *args, **kwargs):  # the names' DNS answers
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await resolve(names.get(host, host), *args, **kwargs)

    async def lan(sock, address):  # the LAN: its peer at 192.168.1.30 is the service on this machine's loopback
        return await connect(sock, ("127.0.0.1", address[1]) if address[0] == "192.168.1.30" else address)

    monkeypatch.setattr(loop, "getaddrinfo", dns)
    monkeypatch.setattr(loop, "sock_connect", lan)
    public = await node_factory("public", **{**QUIET, "peers": {**QUIET["peers"],
                                                                "public_url": "https://storage.example.org:7443"}})
    home = await node_factory("home", **{**QUIET, "peers": {**QUIET["peers"],
                                                            "public_url": "https://nas.home.example:7443"}})
    url = f"https://lan.example:{port}"

    async def ways_of_dialling(node) -> list[int]:
        client, made = node.app[NODE].client, []
        for kept in (False, True):
            with pytest.raises(PeerUnreachable):  # refused, or the LAN's service is no TLS node
                await client.request(url, "GET", "/v1/peer/terms", max_size=1024, kept=kept, timeout=5)
            made.append(len(connections))
        with pytest.raises(PeerUnreachable):
            await client.identify(url, timeout=5)
        return [*made, len(connections)]

    try:
        assert await ways_of_dialling(public) == [0, 0, 0]
        made = await ways_of_dialling(home)
        assert 0 < made[0] < made[1] < made[2], made
    finally:
        service.close()
        await service.wait_closed()
    # a name resolving to a public address among private ones is public; one that did not resolve as the node
    # started is taken for public too: the node could not tell where it is
    assert not dialable("https://storage.example.org:7443", ["192.168.1.20", "9.9.9.9"])("192.168.1.30")
    assert await own_addresses("https://gone.example:7443") is None
    assert not dialable("https://gone.example:7443", None)("192.168.1.30")


def test_a_minted_id_has_the_proof_of_work_asked() -> None:
    for bits in (0, 4, BITS):
        assert id_difficulty(Identity.mint(bits).public_key) >= bits
    # The measure is the leading zero bits of a hash of the key: 0 for about half of all keys.
    assert sum(id_difficulty(Identity.generate().public_key) == 0 for _ in range(400)) in range(120, 280)


async def test_an_id_without_proof_of_work_is_refused_before_anything_is_remembered(node_factory) -> None:
    node = await node_factory("strict", **{**QUIET, "peers": {**QUIET["peers"], "min_difficulty": BITS}})
    assert id_difficulty(node.app[NODE].peers.identity.public_key) >= BITS  # minted on its first start
    weak, strong = _weak(), Identity.mint(BITS)
    status, problem = await _signed(node, weak, "/v1/peer/challenge", {"nonce": "ab" * 16})
    assert status == 403 and problem["code"] == "not-admitted", problem
    assert f"at least {BITS}" in problem["detail"] and problem["hint"]
    assert len(node.app[REPLAY_GUARD]) == 0  # not even its nonce was remembered
    status, answer = await _signed(node, strong, "/v1/peer/challenge", {"nonce": "ab" * 16})
    assert status == 200, answer
    # Descriptors are judged the same way, whoever passes them on: the weak one is not stored.
    other = Identity.mint(BITS)
    status, answer = await _signed(node, strong, "/v1/peer/descriptors",
                                   {"descriptors": [_descriptor(weak, 1111), _descriptor(other, 2222)]})
    assert status == 200, answer
    assert node.app[NODE].peers.directory.get(weak.id) is None and node.app[NODE].peers.directory.get(other.id) is not None


async def test_an_old_id_keeps_working_and_each_peer_judges_it_by_its_own_difficulty(make_config) -> None:
    old_config = make_config("old", **{**QUIET, "peers": {**QUIET["peers"], "min_difficulty": BITS}})
    old_config.data_dir.mkdir(parents=True, mode=0o700)
    weak = _weak()
    write_secret(old_config.data_dir / NODE_KEY_FILE, weak._key.private_bytes_raw())  # a data dir of before
    nodes = []
    try:
        old = await serve(old_config)  # its own peers.min_difficulty is higher than its id's: it starts anyway
        nodes.append(old)
        assert old.app[NODE].peers.identity.id == weak.id
        response = await old.post("/v1/store/files", data=b"still mine" * 100)
        assert response.status == 201, await response.text()
        lax = await serve(make_config("lax", **{**QUIET, "peers": {**QUIET["peers"], "min_difficulty": 0}}))
        strict = await serve(make_config("strict", **{**QUIET, "peers": {**QUIET["peers"], "min_difficulty": BITS}}))
        nodes += [lax, strict]
        # A peer asking as much refuses it, both ways; one asking none takes its requests.
        response = await strict.post("/v1/peers", json={"url": old.app[NODE].peers.url})
        problem = await response.json()
        assert response.status >= 400 and "not admitted here" in problem["detail"], problem
        bits = id_difficulty(weak.public_key)  # the hint is the setting that would admit it
        assert f"xsc config set peers.min_difficulty {bits}, then restart" in problem["hint"], problem
        assert strict.app[NODE].peers.directory.get(weak.id) is None
        response = await old.post("/v1/peers", json={"url": strict.app[NODE].peers.url})
        problem = await response.json()
        assert response.status >= 400 and "not-admitted" not in problem.get("code", "") and \
            "proof of work" in problem["detail"], problem
        status, answer = await _signed(lax, weak, "/v1/peer/challenge", {"nonce": "cd" * 16})
        assert status == 200, answer  # lax asks no proof of work
    finally:
        for node in nodes:
            await node.close()


async def test_a_closed_grid_refuses_nodes_without_its_secret(node_factory) -> None:
    grid = {**QUIET, "peers": {**QUIET["peers"], "grid_secret": SECRET}}
    g1 = await node_factory("g1", **grid)
    g2 = await node_factory("g2", **grid)
    outsider = await node_factory("outsider", **QUIET)
    wrong = await node_factory("wrong", **{**QUIET, "peers": {**QUIET["peers"], "grid_secret": "x" * 32}})
    g1_url, g1_id = g1.app[NODE].peers.url, g1.app[NODE].peers.identity.id

    response = await g2.post("/v1/peers", json={"url": g1_url})
    assert response.status == 201, await response.text()
    assert g1.app[NODE].peers.known(g2.app[NODE].peers.identity.id) and g2.app[NODE].peers.known(g1_id)
    for node in (outsider, wrong):
        response = await node.post("/v1/peers", json={"url": g1_url})
        assert response.status >= 400, await response.text()
        assert not g1.app[NODE].peers.known(node.app[NODE].peers.identity.id)
    stranger = Identity.generate()
    status, problem = await _signed(g1, stranger, "/v1/peer/challenge", {"nonce": "ab" * 16})
    assert status == 403 and problem["code"] == "not-admitted" and "grid" in problem["detail"], problem
    status, problem = await _signed(g1, stranger, "/v1/peer/challenge", {"nonce": "ab" * 16},
                                    **{HEADER_GRID: "00" * 32})
    assert status == 403 and problem["code"] == "not-admitted", problem
    # A descriptor without the grid's proof is not stored, even from a member; with it, it is.
    member = g2.app[NODE].peers.identity  # a member passes on two descriptors by hand, one without the grid's proof
    body = {"descriptors": [_descriptor(stranger, 3333), _descriptor(Identity.generate(), 4444, SECRET)]}
    raw = json.dumps(body).encode()
    headers = sign_request(member, "POST", "/v1/peer/descriptors", raw, receiver=g1_id, grid_secret=SECRET)
    response = await g1.post("/v1/peer/descriptors", data=raw, headers={**headers, "Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    assert g1.app[NODE].peers.directory.get(stranger.id) is None
    assert g1.app[NODE].peers.directory.get(body["descriptors"][1]["id"]) is not None


async def _bogus_receipt(victim, peer) -> int:
    """`peer` asks `victim` to countersign a storage receipt for a share it never placed there (refused)."""
    return await _bogus_receipt_at(victim.app[NODE].peers.url, victim.app[NODE].peers.identity.id, peer)


async def _bogus_receipt_at(victim_url: str, victim_id: str, peer) -> int:
    job = f"store:{os.urandom(32).hex()}:0:{int(time.time()) - 10}:{int(time.time()) - 1}"
    auth = authorize(peer.app[NODE].peers.identity, parse_public_id(victim_id), 1000, job, int(time.time()) + 600,
                     os.urandom(16))
    try:
        await peer.app[NODE].peers.client.request(
            victim_url, "POST", "/v1/peer/ledger/receipts", to=victim_id, max_size=1 << 20,
            json={"authorization": encode_authorization(auth).hex(), "amount": 1000, "usage": {"byte_hours": 1}})
    except PeerRefused as err:
        return err.details["peer_status"]
    return 200


class _Victim:
    """A node that quarantines a peer at its third strike (`victim`, restarted from its data dir by `restart`) and a
    bad node it knows (`bad`), both in this process."""

    def __init__(self, config) -> None:
        self.config = config
        self.victim = self.bad = None

    @property
    def bad_id(self) -> str:
        return self.bad.app[NODE].peers.identity.id

    async def restart(self):
        victim, self.victim = self.victim, None
        await victim.close()
        self.victim = await serve(self.config)
        return self.victim


@contextlib.asynccontextmanager
async def _victim_and_bad_node(make_config):
    nodes = _Victim(make_config("victim", **{**QUIET, "peers": {**QUIET["peers"], "quarantine_strikes": 3}}))
    try:
        nodes.victim = await serve(nodes.config)
        nodes.bad = await serve(make_config("bad", **QUIET))
        await nodes.victim.app[NODE].peers.add(nodes.bad.app[NODE].peers.url)
        yield nodes
    finally:
        for node in (nodes.victim, nodes.bad):
            if node is not None:
                await node.close()


async def test_a_peer_that_misbehaves_is_quarantined_dropped_from_the_book_and_refused(make_config) -> None:
    async with _victim_and_bad_node(make_config) as nodes:
        victim, bad, bad_id = nodes.victim, nodes.bad, nodes.bad_id
        for _ in range(50):
            await victim.app[NODE].market.fill_book()
            if victim.app[NODE].market.book.get(bad_id) is not None:
                break
        assert victim.app[NODE].market.active(bad_id)
        for _ in range(3):  # three refused claims within the hour
            assert await _bogus_receipt(victim, bad) == 403
        assert victim.app[NODE].market.book.get(bad_id) is None and not victim.app[NODE].market.active(bad_id)
        assert victim.app[NODE].market.receive([bad.app[NODE].market.book.get(bad_id).to_json()]) == 0
        status, problem = await _signed(victim, bad.app[NODE].peers.identity, "/v1/peer/challenge", {"nonce": "ab" * 16})
        assert status == 403 and problem["code"] == "quarantined", problem
        assert "xsc peers quarantine rm" in problem["hint"]
        listed = (await (await victim.get("/v1/peers/quarantine")).json())["quarantined"]
        assert [q["node"] for q in listed] == [bad_id] and "refused" in listed[0]["reason"]
        # The operator is served meanwhile; the quarantine survives a restart; the operator lifts it.
        response = await victim.post("/v1/store/files", data=b"operator" * 100)
        assert response.status == 201, await response.text()
        victim = await nodes.restart()
        status, problem = await _signed(victim, bad.app[NODE].peers.identity, "/v1/peer/challenge", {"nonce": "ab" * 16})
        assert status == 403 and problem["code"] == "quarantined", problem
        response = await victim.delete(f"/v1/peers/quarantine/{bad_id}")
        assert response.status == 200, await response.text()
        status, answer = await _signed(victim, bad.app[NODE].peers.identity, "/v1/peer/challenge", {"nonce": "ab" * 16})
        assert status == 200, answer
        response = await victim.delete(f"/v1/peers/quarantine/{bad_id}")
        assert response.status == 404


async def test_a_restart_between_a_peers_strikes_forgets_none_of_them(make_config) -> None:
    """A peer's strikes are counted across a restart of the node: one refused claim, a restart from the data dir,
    two more, and the peer is quarantined as it would have been without the restart."""
    async with _victim_and_bad_node(make_config) as nodes:
        assert await _bogus_receipt(nodes.victim, nodes.bad) == 403
        victim = await nodes.restart()
        assert await _bogus_receipt(victim, nodes.bad) == 403
        listed = (await (await victim.get("/v1/peers/quarantine")).json())["quarantined"]
        assert listed == []  # two strikes so far
        assert await _bogus_receipt(victim, nodes.bad) == 403
        listed = (await (await victim.get("/v1/peers/quarantine")).json())["quarantined"]
        assert [q["node"] for q in listed] == [nodes.bad_id] and "3 times within an hour" in listed[0]["reason"], listed


@pytest.mark.slow
async def test_a_kill_9_between_a_peers_strikes_forgets_none_of_them(node_process, make_config) -> None:
    """Each strike is written as it is counted: a node killed with SIGKILL between a peer's strikes, and started
    again from its data dir, quarantines it at the strike it would have without the kill."""
    victim = node_process("victim", env={"XSC_PEERS_QUARANTINE_STRIKES": "3", "XSC_HEALTH_PROBE_INTERVAL": "3600",
                                         "XSC_PEERS_GOSSIP_INTERVAL": "3600"})
    victim_id = node_id(victim)
    bad = await serve(make_config("bad", **QUIET))
    try:
        bad_id = bad.app[NODE].peers.identity.id
        assert await _bogus_receipt_at(victim.url, victim_id, bad) == 403
        assert await _bogus_receipt_at(victim.url, victim_id, bad) == 403
        victim.stop(signal.SIGKILL)
        victim.start()
        assert api(victim, "GET", "/v1/peers/quarantine")[1]["quarantined"] == []
        try:
            status = await _bogus_receipt_at(victim.url, victim_id, bad)
        except PeerUnreachable:  # sent on the connection kept to the killed process, which the new one never saw
            status = await _bogus_receipt_at(victim.url, victim_id, bad)
        assert status == 403
        listed = api(victim, "GET", "/v1/peers/quarantine")[1]["quarantined"]
        assert [q["node"] for q in listed] == [bad_id] and "3 times within an hour" in listed[0]["reason"], listed
    finally:
        await bad.close()


def test_quarantine_counts_strikes_in_an_hour_ends_and_stays_bounded(tmp_path) -> None:
    import plyvel

    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    clock = [1_000_000.0]
    q = Quarantine(db, strikes=3, duration=600, clock=lambda: clock[0], capacity=4)
    peer = Identity.generate().id
    assert not q.strike(peer, "a") and not q.strike(peer, "b")
    clock[0] += 3601  # strikes older than an hour do not count
    assert not q.strike(peer, "c") and not q.strike(peer, "d")
    assert q.strike(peer, "e") and q.active(peer) is not None
    # One kind counted once a minute at most (a burst of 429s is one strike).
    flooder = Identity.generate().id
    assert not any(q.strike(flooder, "flood", kind="flood", every=60) for _ in range(10))
    clock[0] += 601
    assert q.active(peer) is None and len(q) == 0  # ended
    others = [Identity.generate().id for _ in range(6)]
    for n, other in enumerate(others):
        clock[0] += 1
        q.put(other, f"#{n}")
    assert len(q) == 4 and {e["node"] for e in q.list()} == set(others[2:])  # the soonest to end made room
    db.close()
    db = plyvel.DB(str(tmp_path / "db"))
    assert {e["node"] for e in Quarantine(db, strikes=3, duration=600, clock=lambda: clock[0]).list()} == set(others[2:])
    clock[0] += 3600
    assert len(Quarantine(db, strikes=3, duration=600, clock=lambda: clock[0])) == 0  # compacted on start
    assert list(db.iterator()) == []  # the quarantines ended, the flooder's strike aged out
    db.close()


def test_strikes_of_the_last_hour_outlive_a_restart_and_age_out_as_in_memory(tmp_path, monkeypatch) -> None:
    """A node restarted between a peer's strikes goes on counting them: the strikes of the last hour are read back,
    older ones and those of peers past STRIKERS (struck longest ago) are dropped as it starts."""
    import plyvel

    from xsc import keys
    from xsc.peers import admission

    clock = [1_000_000.0]
    peer, other = Identity.generate().id, Identity.generate().id
    opened: list = []

    def restarted() -> Quarantine:
        """The node's process goes (nothing is flushed on the way out) and starts again on the same database."""
        if opened:
            opened.pop().close()
        opened.append(plyvel.DB(str(tmp_path / "db"), create_if_missing=True))
        return Quarantine(opened[-1], strikes=3, duration=600, clock=lambda: clock[0])

    q = restarted()
    assert not q.strike(peer, "a") and not q.strike(other, "a")
    clock[0] += 60
    assert not restarted().strike(peer, "b")
    q = restarted()
    assert q.strike(peer, "c") and q.active(peer) is not None  # three strikes within the hour, two restarts between
    clock[0] += 3600  # the other's one strike aged out: two more do not quarantine it
    q = restarted()
    assert not q.strike(other, "b") and not q.strike(other, "c") and q.active(other) is None
    # Bounded: past STRIKERS peers, those struck longest ago are forgotten, in memory and on disk alike.
    monkeypatch.setattr(admission, "STRIKERS", 4)
    q = restarted()
    many = [Identity.generate().id for _ in range(6)]
    for node in many:
        clock[0] += 1
        q.strike(node, "a")
    q = restarted()
    assert len(list(opened[-1].iterator(prefix=keys.PEER_STRIKES))) == 4
    assert not q.strike(many[-1], "b") and q.strike(many[-1], "c")  # kept: its third strike quarantines it
    assert not q.strike(many[0], "b") and not q.strike(many[0], "c")  # forgotten: two strikes so far
    opened.pop().close()


def test_a_restart_counts_no_more_flood_strikes_than_one_a_minute(tmp_path) -> None:
    """When a flood last counted is kept with the strikes: a peer flooding across a restart is struck once a minute,
    as without one.  A strikes record that is a list alone (no limited kind) is read as its strikes."""
    import plyvel

    from xsc import codec, keys
    from xsc.identity import parse_public_id

    clock = [1_000_000.0]
    flooder, other = Identity.generate().id, Identity.generate().id
    opened: list = []

    def restarted() -> Quarantine:
        if opened:
            opened.pop().close()
        opened.append(plyvel.DB(str(tmp_path / "db"), create_if_missing=True))
        return Quarantine(opened[-1], strikes=2, duration=600, clock=lambda: clock[0])

    q = restarted()
    assert not q.strike(flooder, "flood", kind="flood", every=60)
    opened[-1].put(keys.peer_strikes(parse_public_id(other)), codec.dumps([clock[0]]))
    clock[0] += 30
    assert not any(restarted().strike(flooder, "flood", kind="flood", every=60) for _ in range(3))
    q = restarted()
    assert q.active(flooder) is None and q.strike(other, "a")  # its strike read back: the second quarantines it
    clock[0] += 30
    assert q.strike(flooder, "flood", kind="flood", every=60)  # a minute on: the second strike
    opened.pop().close()


def test_a_full_quarantine_makes_room_without_a_look_at_each_quarantined_peer(tmp_path) -> None:
    """A put into a full quarantine makes as many Python calls at a capacity of 2,000 as at 200 (the quarantine
    that ends soonest is found in a heap), and the soonest to end still makes room."""
    import plyvel

    from xsc.identity import public_id

    def calls_per_put(capacity: int) -> int:
        db = plyvel.DB(str(tmp_path / f"db{capacity}"), create_if_missing=True)
        clock = [1_000_000.0]
        q = Quarantine(db, strikes=3, duration=600, clock=lambda: clock[0], capacity=capacity)
        peers = [public_id(os.urandom(32)) for _ in range(capacity + 20)]
        for n, peer in enumerate(peers[:capacity]):
            clock[0] += 0.001
            q.put(peer, "flood", duration=600 + (n % 7))  # ends in another order than the puts'
        held = [e["node"] for e in q.list()]  # soonest to end first
        calls = python_calls(lambda: [q.put(peer, "flood", duration=10_000) for peer in peers[capacity:]])
        assert {e["node"] for e in q.list()} == {*held[20:], *peers[capacity:]}  # the 20 ending soonest made room
        assert len(q) == capacity
        db.close()
        return calls // 20

    small, large = calls_per_put(200), calls_per_put(2000)
    assert large <= small + 10, (small, large)


@pytest.mark.slow
def test_node_start_mints_its_id_with_the_difficulty_configured(node_process) -> None:
    from tests.support.peers import node_id

    node = node_process("minted", env={"XSC_PEERS_MIN_DIFFICULTY": "10"})
    minted = node_id(node)
    assert id_difficulty(parse_public_id(minted)) >= 10
    node.stop()
    node.start()  # the key is kept: no new id at a restart
    assert node_id(node) == minted

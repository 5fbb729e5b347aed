"""Peer traffic over TLS, pinned to node ids: real nodes on loopback, a wrong node, a tampering proxy, plaintext.

Every node answers TLS on its one port (xsc/serve/listener.py) with a certificate made from its node
key (xsc/net/tls.py); peers reach it at https://HOST:PORT and the handshake must prove the key of the
node a request is signed for before the request is sent."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from xsc.errors import PeerIdentityMismatch, PeerUnreachable
from xsc.health import new_nonce
from xsc.identity import Identity, sign_request
from xsc.net import tls
from xsc.node.appkeys import IDENTITY, NODE, REPLAY_GUARD

from tests.support.nodes import free_port
from tests.support.peers import FAST as PROCESS_FAST
from tests.support.peers import api, dialled_from_here, known_ids, node_id, peer_health
from tests.support.waiting import eventually, eventually_async

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
STRICT = {**FAST, "peers": {"gossip_interval": 3600, "loopback_plaintext": False}}
CHALLENGE = "/v1/peer/challenge"


def _port(node) -> int:
    return int(node.app[NODE].peers.url.rsplit(":", 1)[1])


async def _tls_handshake(port: int, node_id: str | None) -> tuple[str | None, str]:
    """Connect with the pinned client context; the node id the peer proved and the TLS version."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(node_id))
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return tls.peer_node(ssl_object), ssl_object.version()
    finally:
        writer.close()


def _raw(port: int, request: bytes) -> bytes:
    """Send bytes on a plain TCP socket and read everything the node answers until it closes or 5 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return answer


def _signed_plaintext(sender: Identity, receiver: str, port: int) -> bytes:
    body = json.dumps({"nonce": new_nonce()}).encode()
    headers = sign_request(sender, "POST", CHALLENGE, body, receiver=receiver)
    lines = [f"POST {CHALLENGE} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.both_loops
async def test_two_nodes_talk_over_tls_that_proves_each_node_id(node_factory) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    b_id = b.app[IDENTITY].id
    assert b.app[NODE].peers.url.startswith("https://127.0.0.1:")  # what b's signed descriptor tells its peers
    added = await a.app[NODE].peers.add(b.app[NODE].peers.url)
    assert added.id == b_id and added.url.startswith("https://")
    response = await a.app[NODE].peers.request(added.url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=b_id,
                                               max_size=1 << 20)
    assert response.status == 200 and response.node == b_id  # the TLS handshake proved b's key
    # b knows a by its https URL too (a sent its descriptor), and reaches it over TLS.
    back = await b.app[NODE].peers.request(a.app[NODE].peers.url, "POST", CHALLENGE, json={"nonce": new_nonce()},
                                           max_size=1 << 20)
    assert back.node == a.app[IDENTITY].id
    # The port itself: TLS 1.3 with a certificate whose key is the node id, the same every start.
    assert await _tls_handshake(_port(b), b_id) == (b_id, "TLSv1.3")
    assert (await _tls_handshake(_port(b), None))[0] == b_id
    # The user API stays plain HTTP on the same port (the CLI, the S3 front, the dashboard).
    assert (await b.get("/health")).status == 200


@pytest.mark.both_loops
async def test_the_peer_port_refuses_plaintext_peer_requests(node_factory) -> None:
    node = await node_factory("strict", **STRICT)
    me, sender = node.app[IDENTITY].id, Identity.generate()
    port = _port(node)
    loop = asyncio.get_running_loop()  # the node serves on this loop: blocking sockets go to a thread
    answer = await loop.run_in_executor(None, _raw, port, _signed_plaintext(sender, me, port))
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 403"), answer[:200]
    problem = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert problem["code"] == "tls-required" and "https://" in problem["hint"]
    assert b"XSC-CHALLENGE" not in answer and me.encode() not in answer  # nothing of the peer API answered
    assert len(node.app[REPLAY_GUARD]) == 0  # refused before the signature was even looked at
    # The same request over TLS is answered.
    port_ok = await loop.run_in_executor(None, _tls_request, port, sender, me)
    assert port_ok.startswith(b"HTTP/1.1 200")


def _tls_request(port: int, sender: Identity, receiver: str) -> bytes:
    context = tls.client_context(receiver)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as sock:
            assert tls.peer_node(sock) == receiver
            sock.sendall(_signed_plaintext(sender, receiver, port))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer


@pytest.mark.both_loops
async def test_a_node_whose_key_is_not_the_expected_id_gets_nothing(node_factory) -> None:
    a, b, c = [await node_factory(name, **FAST) for name in "abc"]
    b_id, c_id = b.app[IDENTITY].id, c.app[IDENTITY].id
    await a.app[NODE].peers.add(b.app[NODE].peers.url)
    # c answers at the URL where a expects b (a moved address, a DNS or routing attack): refused in the handshake.
    with pytest.raises(PeerIdentityMismatch) as refused:
        await a.app[NODE].peers.request(c.app[NODE].peers.url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=b_id,
                                        max_size=1 << 20)
    assert refused.value.details["expected"] == b_id and refused.value.details["presented"] == c_id
    assert refused.value.details["sent"] is False and f"it is node {c_id}, not node {b_id}" in str(refused.value)
    assert len(c.app[REPLAY_GUARD]) == 0 and c.app[NODE].peers.peers() == []  # c never saw the request
    # The user names the node it wants: https://NODE_ID@HOST:PORT.  The wrong node there is refused the same way.
    pinned = c.app[NODE].peers.url.replace("https://", f"https://{b_id}@")
    response = await a.post("/v1/peers", json={"url": pinned})
    problem = await response.json()
    assert response.status == 502 and problem["code"] == "peer-identity-mismatch", problem
    assert c.app[NODE].peers.peers() == [] and not a.app[NODE].peers.known(c_id)
    # ... and the right one is added.
    right = c.app[NODE].peers.url.replace("https://", f"https://{c_id}@")
    response = await a.post("/v1/peers", json={"url": right})
    assert response.status == 201 and (await response.json())["peer"]["id"] == c_id


class TamperingProxy:
    """Forwards TCP between a client and a node, flipping one byte of one TLS record of one direction.

    `where`: "handshake" (the node's first record, its ServerHello), "request" (the client's first
    application record after its Finished: the HTTP request) or "response" (the node's first record
    after the request went through)."""

    def __init__(self, target_port: int, where: str) -> None:
        self.target_port, self.where = target_port, where
        self.tampered = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_reader, client_writer) -> None:
        if not dialled_from_here(client_writer):  # a stray: another process's node dialling a port it knew
            client_writer.close()
            return
        node_reader, node_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        state = {"request_sent": False, "client_app_records": 0}
        await asyncio.gather(self._pipe(client_reader, node_writer, "up", state),
                             self._pipe(node_reader, client_writer, "down", state), return_exceptions=True)

    async def _pipe(self, reader, writer, direction: str, state: dict) -> None:
        records = 0
        try:
            while True:
                header = await reader.readexactly(5)
                payload = bytearray(await reader.readexactly(int.from_bytes(header[3:5], "big")))
                records += 1
                if self._should_tamper(direction, header[0], records, state):
                    payload[len(payload) // 2] ^= 0x01
                    self.tampered += 1
                writer.write(header + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _should_tamper(self, direction: str, record_type: int, index: int, state: dict) -> bool:
        if self.tampered:
            return False
        if direction == "up" and record_type == 23:  # the client's Finished, then its request
            state["client_app_records"] += 1
            if state["client_app_records"] == 2:
                state["request_sent"] = True
                return self.where == "request"
        if direction == "down":
            if self.where == "handshake":
                return index == 1
            return self.where == "response" and record_type == 23 and state["request_sent"]
        return False


@pytest.mark.parametrize("where", ["handshake", "request", "response"])
async def test_a_tampering_proxy_makes_the_call_fail_clearly_never_silently(node_factory, where) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    b_id = b.app[IDENTITY].id
    proxy = TamperingProxy(_port(b), where)
    proxy_port = await proxy.start()
    try:
        with pytest.raises(PeerUnreachable) as failed:
            await a.app[NODE].peers.request(f"https://127.0.0.1:{proxy_port}", "POST", CHALLENGE,
                                       json={"nonce": new_nonce()}, to=b_id, timeout=10, max_size=1 << 20)
    finally:
        await proxy.close()
    assert proxy.tampered == 1
    assert str(failed.value).startswith(f"peer https://127.0.0.1:{proxy_port} is unreachable: ")
    if where != "response":  # a tampered handshake or request never reaches b's handlers
        assert len(b.app[REPLAY_GUARD]) == 0
    # Without the proxy the same call works: the failure was the tampering, and it was not silent.
    response = await a.app[NODE].peers.request(b.app[NODE].peers.url, "POST", CHALLENGE, json={"nonce": new_nonce()},
                                               to=b_id, max_size=1 << 20)
    assert response.status == 200 and response.node == b_id


def test_the_certificate_is_the_node_key_and_deterministic(tmp_path) -> None:
    identity = Identity.generate()
    first, again = tls.certificate(identity), tls.certificate(identity)
    der = first.public_bytes(Encoding.DER)
    assert der == again.public_bytes(Encoding.DER)
    assert tls.node_of_certificate(der) == identity.id
    assert tls.node_of_certificate(b"not a certificate") is None
    context = tls.server_context(identity, tmp_path)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3 and list(tmp_path.iterdir()) == []  # no key left behind


async def test_tls_connections_read_into_one_shared_buffer_and_carry_large_bodies_intact(tmp_path, monkeypatch) -> None:
    """What a node process sets at start (`tls.share_read_buffers`): every TLS connection of a thread reads its
    socket into one READ_BUFFER-byte buffer, keeping only RECORD bytes of its own; 8 MiB each way, read by both
    ends of two connections at once on one loop, crosses it whole and unmixed."""
    for name in ("max_size", "get_buffer"):
        monkeypatch.setattr(asyncio.sslproto.SSLProtocol, name, getattr(asyncio.sslproto.SSLProtocol, name))
    tls.share_read_buffers()
    identity = Identity.generate()
    bodies = [bytes(range(256)) * 32768, bytes(reversed(range(256))) * 32768]  # two, told apart byte by byte
    views, own = [], []

    def buffers(writer: asyncio.StreamWriter) -> None:
        protocol = writer.transport._ssl_protocol
        views.append(protocol._ssl_buffer_view.obj)
        own.append(len(protocol._ssl_buffer))

    async def echo(reader, writer) -> None:
        body = await reader.readexactly(len(bodies[0]))
        buffers(writer)
        writer.write(body)
        await writer.drain()
        writer.close()

    async def one(port: int, body: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(identity.id))
        writer.write(body)
        assert await reader.readexactly(len(body)) == body
        buffers(writer)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.server_context(identity, tmp_path))
    async with server:
        port = server.sockets[0].getsockname()[1]
        await asyncio.gather(*(one(port, body) for body in bodies))
    assert len(views) == 4 and all(view is views[0] for view in views) and len(views[0]) == tls.READ_BUFFER
    assert own == [tls.RECORD] * 4


@pytest.mark.slow
def test_a_tls_only_peer_listener_says_nothing_in_plaintext(node_process) -> None:
    """`node.peer_listen`: peers on a port of their own that speaks TLS only; the user API stays on node.listen."""
    peer_port = free_port()
    b = node_process("b", env={**PROCESS_FAST, "XSC_NODE_PEER_LISTEN": f"127.0.0.1:{peer_port}",
                               "XSC_PEERS_LOOPBACK_PLAINTEXT": "false"})
    a = node_process("a", env=PROCESS_FAST)
    b_id = node_id(b)
    assert api(b, "GET", "/v1/peers")[1]["self"]["url"] == f"https://127.0.0.1:{peer_port}"
    # Plain HTTP to the peer port: not a byte of HTTP comes back, whatever is asked.
    probes = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", _signed_plaintext(Identity.generate(), b_id, peer_port))
    for request in probes:
        assert _raw(peer_port, request) == b""
    # TLS there proves b's key; a joins b there, pinned by the id in the URL, and both know each other.
    assert asyncio.run(_tls_handshake(peer_port, b_id)) == (b_id, "TLSv1.3")
    result = a.xsc("peers", "add", f"https://{b_id}@127.0.0.1:{peer_port}")
    assert result.returncode == 0, result.stderr
    assert known_ids(a) == {b_id} and known_ids(b) == {node_id(a)}
    eventually(lambda: (peer_health(a, b_id) or {}).get("probes_1h", 0) >= 2, "a to probe b over its peer port")
    assert peer_health(a, b_id)["up"] is True


async def test_first_contact_by_bare_url_pins_the_key_that_answered(node_factory, tmp_path) -> None:
    """Trust on first use: a node at a URL that proves key X but hands out node Y's descriptor is refused."""
    from aiohttp import web

    from xsc.errors import PeerRefused

    a, honest = await node_factory("a", **FAST), await node_factory("honest", **FAST)
    impostor = Identity.generate()
    stolen = honest.app[NODE].peers.descriptor().to_json()  # descriptors are public: anyone may pass one on
    seen: list[str] = []

    async def exchange(request: web.Request) -> web.Response:
        seen.append(request.headers["X-Xsc-To"])
        return web.json_response({"self": stolen, "descriptors": []})

    app = web.Application()
    app.router.add_post("/v1/peer/descriptors", exchange)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls.server_context(impostor, tmp_path)).start()
    try:
        with pytest.raises(PeerRefused) as refused:
            await a.app[NODE].peers.add(f"https://127.0.0.1:{port}")
        assert f"its own descriptor is node {honest.app[IDENTITY].id}'s, but node {impostor.id} answered" \
            in str(refused.value)
        assert seen == [impostor.id]  # the exchange itself was pinned to (and signed for) the key that answered
        assert a.app[NODE].peers.peers() == []
    finally:
        await runner.cleanup()


def test_a_node_address_may_carry_the_node_id_that_pins_it() -> None:
    from xsc.config import https_url, normalize_peer_url, split_peer_address

    node = Identity.generate().id
    assert split_peer_address("https://127.0.0.1:7070/") == ("https://127.0.0.1:7070", None)
    assert split_peer_address(f"https://{node}@example.org:7443") == ("https://example.org:7443", node)
    assert split_peer_address("http://[::1]:7070") == ("http://[::1]:7070", None)
    assert https_url("http://127.0.0.1:7070") == "https://127.0.0.1:7070"
    for bad in ("ftp://h:1", "https://h", "https://user@h:1", f"https://{node}:pw@h:1", "https://h:1/x",
                "https://h:1?q", "https://h:1#f", f"https://{node.upper()}@h:1"):
        with pytest.raises(ValueError):
            split_peer_address(bad)
    with pytest.raises(ValueError):  # a descriptor's url never carries an id
        normalize_peer_url(f"https://{node}@h:1")


async def test_with_tls_off_plaintext_goes_to_loopback_only(node_factory) -> None:
    plain = {**FAST, "peers": {"gossip_interval": 3600, "tls": False}}
    a, b = await node_factory("a", **plain), await node_factory("b", **plain)
    assert b.app[NODE].peers.url.startswith("http://127.0.0.1:")  # the plaintext baseline of bench/bench_tls.py
    added = await a.app[NODE].peers.add(b.app[NODE].peers.url)
    response = await a.app[NODE].peers.request(added.url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=added.id,
                                               max_size=1 << 20)
    assert response.status == 200 and response.node is None  # plaintext: nothing proved but the signature
    client = a.app[NODE].peers.client
    assert client.target("http://127.0.0.1:7070") == "http://127.0.0.1:7070"
    assert client.target("http://10.1.2.3:7070") == "https://10.1.2.3:7070"  # never plaintext off this machine
    assert a.app[NODE].peers.client.tls is False and b.app[NODE].peers.client.target("https://[::1]:1") == "https://[::1]:1"


@pytest.mark.both_loops
async def test_a_stopped_node_takes_no_request_on_a_kept_alive_tls_connection(node_factory) -> None:
    """Closing a TLS connection only starts a close that waits for the peer: the node cuts them when it stops."""
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    b_id, b_url = b.app[IDENTITY].id, b.app[NODE].peers.url
    await a.app[NODE].peers.add(b_url)
    assert (await a.app[NODE].peers.request(b_url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=b_id,
                                            max_size=1 << 20)).status == 200
    await b.close()
    with pytest.raises(PeerUnreachable):
        await a.app[NODE].peers.request(b_url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=b_id,
                                        max_size=1 << 20)


@pytest.mark.both_loops
async def test_a_silent_connection_is_plain_http_after_a_moment(node_factory, monkeypatch) -> None:
    """A TLS client speaks first: a connection silent for PEEK_TIMEOUT goes to aiohttp as plain HTTP (its idle
    timeout and connection caps apply), those pushed out of the MAX_PENDING watched ones too."""
    from xsc.net import sniff

    monkeypatch.setattr(sniff, "MAX_PENDING", 2)
    monkeypatch.setattr(sniff, "PEEK_TIMEOUT", 0.5)
    node = await node_factory("n", **FAST)
    port = _port(node)
    server = node.server.runner.server  # the node's SniffingServer, in front of aiohttp's
    handed = len(server.inner.connections)
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    await eventually_async(lambda: len(server.inner.connections) >= handed + 4 and not server.sniffing,
                           "the silent connections to be handed to aiohttp", 10)
    for reader, writer in silent:  # every one of them is served as plain HTTP now
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()


@pytest.mark.both_loops
async def test_a_clienthello_a_busy_client_sends_seconds_after_its_connect_is_answered_in_tls(node_factory) -> None:
    """A client's loop on a busy machine can be held up for seconds between its connect and its ClientHello: the
    connection is still settled by its first byte, not called plain HTTP for its silence (a ClientHello answered
    in plaintext fails its handshake with "wrong version number")."""
    node = await node_factory("n", **FAST)
    sock = socket.create_connection(("127.0.0.1", _port(node)))
    try:
        await asyncio.sleep(1.5)  # the held-up client, silent for longer than a moment: its silence is what is tested
        reader, writer = await asyncio.open_connection(sock=sock, ssl=tls.client_context(node.app[IDENTITY].id),
                                                       server_hostname="127.0.0.1")
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        sock.close()


@pytest.mark.both_loops
async def test_a_silent_connection_pushed_out_by_newer_ones_is_settled_by_its_first_byte(node_factory,
                                                                                         monkeypatch) -> None:
    """Past MAX_PENDING connections waiting for their first byte, the oldest stops being watched, but is not called
    plain HTTP for it: a peer's burst of connects outruns its ClientHellos on a busy machine, and a ClientHello
    answered in plaintext fails the handshake ("wrong version number").  Its first byte settles it, TLS or not."""
    from xsc.net import sniff

    monkeypatch.setattr(sniff, "MAX_PENDING", 2)
    monkeypatch.setattr(sniff, "PEEK_TIMEOUT", 60.0)  # the pushed-out ones wait for the whole test, however slow
    node = await node_factory("n", **FAST)
    port, server = _port(node), node.server.runner.server
    oldest = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    newer: list[socket.socket] = []
    try:
        await eventually_async(lambda: len(server.sniffing) == 2, "the silent connections to be sniffed", 10)
        pushed_out = set(server.sniffing)
        newer.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(2))
        await eventually_async(lambda: not pushed_out & set(server.sniffing), "newer connections to push them out", 10)
        reader, writer = await asyncio.open_connection(sock=oldest[0], ssl=tls.client_context(node.app[IDENTITY].id),
                                                       server_hostname="127.0.0.1")
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
        reader, writer = await asyncio.open_connection(sock=oldest[1])
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        for sock in oldest + newer:
            sock.close()


@pytest.mark.both_loops
async def test_past_the_connections_reading_their_first_byte_the_oldest_is_plain_http(node_factory, monkeypatch):
    """Connections pushed out of the watched ones hold a descriptor each: past MAX_READING of them the oldest is
    plain HTTP at once, under aiohttp's idle timeout and connection caps (a flood of silent connects)."""
    from xsc.net import sniff

    monkeypatch.setattr(sniff, "MAX_PENDING", 1)
    monkeypatch.setattr(sniff, "MAX_READING", 1)
    monkeypatch.setattr(sniff, "PEEK_TIMEOUT", 60.0)
    node = await node_factory("n", **FAST)
    server = node.server.runner.server
    handed = len(server.inner.connections)
    oldest = await asyncio.open_connection("127.0.0.1", _port(node))
    await eventually_async(lambda: len(server.sniffing) == 1, "the silent connection to be sniffed", 10)
    newer = [await asyncio.open_connection("127.0.0.1", _port(node)) for _ in range(2)]
    try:
        await eventually_async(lambda: len(server.inner.connections) == handed + 1, "the oldest to be handed on", 10)
        assert len(server.sniffing) == 1 and len(server.reading) == 1
        reader, writer = oldest
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    finally:
        for _, writer in [oldest, *newer]:
            writer.close()

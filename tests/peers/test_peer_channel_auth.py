"""Peers proven by their connection: a client certificate of the node key, checked once, requests unsigned.

A node's PeerClient presents its client certificate (xsc/net/tls.py) over TLS and sends requests with no
signature, nonce or digest; the server takes the node the handshake proved as the sender of every request on
that connection (xsc/node/peer_auth.py).  Each way round it is refused: a certificate that is not the node
claimed, a connection that changes who speaks, a request moved to another connection, the same unsigned
request in plaintext, a certificate that does not chain to the client root."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
from cryptography.hazmat.primitives import serialization

from xsc.health import new_nonce
from xsc.identity import Identity, channel_request, sign_request
from xsc.net import tls
from xsc.node.appkeys import IDENTITY, NODE, REPLAY_GUARD

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
CHALLENGE = "/v1/peer/challenge"


def _port(node) -> int:
    return int(node.app[NODE].peers.url.rsplit(":", 1)[1])


def _request(headers: dict[str, str], port: int) -> bytes:
    body = json.dumps({"nonce": new_nonce()}).encode()
    lines = [f"POST {CHALLENGE} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _unsigned(sender: Identity, receiver: str, port: int) -> bytes:
    return _request(channel_request(sender, "POST", CHALLENGE, receiver=receiver), port)


class Connection:
    """One keep-alive connection to a node, over TLS with `client`'s certificate (or none), or in plaintext."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, receiver: str | None, client: Identity | None, *, plaintext: bool = False):
        context = None if plaintext else tls.client_context(receiver, client)
        return cls(*await asyncio.open_connection("127.0.0.1", port, ssl=context))

    async def send(self, request: bytes) -> tuple[int, dict]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await self.reader.readexactly(length)
        return int(head.split(b" ", 2)[1]), json.loads(body)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def two(node_factory):
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    return a, b


async def test_a_node_talks_to_its_peer_unsigned_on_a_connection_its_certificate_proves(two) -> None:
    a, b = two
    b_id = b.app[IDENTITY].id
    added = await a.app[NODE].peers.add(b.app[NODE].peers.url)
    for _ in range(3):
        response = await a.app[NODE].peers.request(added.url, "POST", CHALLENGE, json={"nonce": new_nonce()}, to=b_id,
                                                   max_size=1 << 20)
        assert response.status == 200 and response.node == b_id
    assert len(b.app[REPLAY_GUARD]) == 0  # no nonce was sent, none remembered: the connection proved a
    conn = await Connection.open(_port(b), b_id, a.app[IDENTITY])
    try:
        assert (await conn.send(_unsigned(a.app[IDENTITY], b_id, _port(b))))[0] == 200
    finally:
        conn.close()


async def test_a_client_certificate_that_is_not_the_claimed_node_is_refused(two) -> None:
    _, b = two
    b_id, mallory, victim = b.app[IDENTITY].id, Identity.generate(), Identity.generate()
    conn = await Connection.open(_port(b), b_id, mallory)
    try:
        status, problem = await conn.send(_unsigned(victim, b_id, _port(b)))
    finally:
        conn.close()
    assert status == 401 and problem["code"] == "bad-signature"
    assert f"certificate is node {mallory.id}" in problem["detail"] and victim.id in problem["detail"]


async def test_a_connection_cannot_change_who_speaks_on_it(two) -> None:
    _, b = two
    b_id, first, other = b.app[IDENTITY].id, Identity.generate(), Identity.generate()
    port = _port(b)
    conn = await Connection.open(port, b_id, first)
    try:
        assert (await conn.send(_unsigned(first, b_id, port)))[0] == 200
        status, problem = await conn.send(_unsigned(other, b_id, port))  # unsigned, claiming another node
        assert status == 401 and problem["code"] == "bad-signature"
        body = json.dumps({"nonce": new_nonce()}).encode()  # signed by the other node: still not on this connection
        signed = sign_request(other, "POST", CHALLENGE, body, receiver=b_id)
        status, problem = await conn.send(_request(signed, port).rsplit(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body)
        assert status == 401 and f"signed by node {other.id}" in problem["detail"]
        assert (await conn.send(_unsigned(first, b_id, port)))[0] == 200  # its own node still speaks on it
    finally:
        conn.close()


async def test_an_unsigned_request_moved_to_another_connection_is_refused(two) -> None:
    _, b = two
    b_id, sender, thief = b.app[IDENTITY].id, Identity.generate(), Identity.generate()
    port = _port(b)
    captured = _unsigned(sender, b_id, port)
    conn = await Connection.open(port, b_id, sender)
    try:
        assert (await conn.send(captured))[0] == 200
    finally:
        conn.close()
    for client in (thief, None):  # another node's connection, a connection without a certificate
        other = await Connection.open(port, b_id, client)
        try:
            status, problem = await other.send(captured)
        finally:
            other.close()
        assert status == 401 and problem["code"] == ("bad-signature" if client else "unsigned-request"), problem


async def test_an_unsigned_request_in_plaintext_is_refused(two) -> None:
    a, b = two
    b_id, port = b.app[IDENTITY].id, _port(b)
    conn = await Connection.open(port, b_id, None, plaintext=True)
    try:
        status, problem = await conn.send(_unsigned(a.app[IDENTITY], b_id, port))
        assert status == 401 and problem["code"] == "unsigned-request", problem
        # Plaintext loopback peers sign: a's own client does, and is answered.
        response = await a.app[NODE].peers.request(b.app[NODE].peers.url.replace("https://", "http://"), "POST",
                                                   CHALLENGE, json={"nonce": new_nonce()}, to=b_id, max_size=1 << 20)
        assert response.status == 200
    finally:
        conn.close()


async def test_a_client_certificate_not_issued_by_the_client_root_fails_the_handshake(two, tmp_path) -> None:
    _, b = two
    b_id, rogue = b.app[IDENTITY].id, Identity.generate()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # presents the node's self-signed server certificate
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    pem = tmp_path / "self-signed.pem"
    pem.write_bytes(rogue.private_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())
                    + tls.certificate(rogue).public_bytes(serialization.Encoding.PEM))
    context.load_cert_chain(pem)
    with pytest.raises((OSError, ConnectionError, asyncio.IncompleteReadError)):
        conn = Connection(*await asyncio.open_connection("127.0.0.1", _port(b), ssl=context))
        try:
            await conn.send(_unsigned(rogue, b_id, _port(b)))
        finally:
            conn.close()
    assert rogue.id not in [p.id for p in b.app[NODE].peers.peers()]

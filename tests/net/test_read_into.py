"""Answers read straight into their blocks (xsc/net/into.py, `PeerClient.read_into`): a share's blocks from a real
holder over TLS on one kept connection, and every answer a holder may send that is not the blocks asked (another
length, cut, extra bytes, chunked, a refusal, nothing) refused or reported, never handed over as blocks; and at most
PER_PEER connections to one peer at once.

The loopback servers here count only connections whose first request is one of this file's: in a full suite a port
the system hands out may be one another test's node knew a peer at, and that node may still be dialling it."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from xsc.errors import PeerIdentityMismatch, PeerRefused, PeerUnreachable
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.node.appkeys import NODE
from xsc.storage.core import layout
from xsc.storage.core.capability import Capability
from xsc.storage.core.wire import share_path

from tests.support.nodes import free_port

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}
SEGMENT = 1024 * 1024  # storage.segment_size's default


async def test_a_holders_blocks_come_whole_over_one_kept_tls_connection(node_factory) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    data = os.urandom(3 * SEGMENT + 5)  # every share of it held by b, which knows no other node
    cap = Capability.parse((await (await b.post("/v1/store/files", data=data)).json())["capability"])
    client, b_url, b_id = a.app[NODE].peers.client, b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    si, share = cap.storage_index, 2
    lengths = [layout.segment_block_length(layout.plaintext_length(len(data), SEGMENT, i)) for i in range(4)]
    wanted = [b.app[NODE].store.get_block(si, share, i) for i in range(4)]
    assert [len(w) for w in wanted] == lengths
    path = f"{share_path(si, share)}/blocks?from=0&count=4"
    for _ in range(3):
        assert [bytes(block) for block in await client.read_into(b_url, path, lengths, to=b_id)] == wanted
    assert client._into.opened == 1  # one connection, kept alive for all three

    with pytest.raises(PeerRefused) as refused:  # the holder's problem comes through whole
        await client.read_into(b_url, f"{share_path(si, share)}/blocks?from=2&count=3", [1, 1, 1], to=b_id)
    assert refused.value.details["peer_status"] == 416
    with pytest.raises(PeerIdentityMismatch) as mismatch:  # another node's key at that URL: nothing is sent
        await client.read_into(b_url, path, lengths, to=Identity.generate().id)
    assert mismatch.value.details["sent"] is False and mismatch.value.details["presented"] == b_id
    with pytest.raises(PeerRefused, match="where the 4 blocks asked make"):  # not the holder's lengths: never cut
        await client.read_into(b_url, path, [n + 1 for n in lengths], to=b_id)
    assert [bytes(block) for block in await client.read_into(b_url, path, lengths, to=b_id)] == wanted


class _Peer:
    """A loopback HTTP/1.1 server that answers each request with the next of `answers` (raw bytes; ("cut", bytes):
    those, then the connection closed; "stall": nothing, the connection kept), counting connections and requests."""

    def __init__(self, answers: list) -> None:
        self.answers, self.connections, self.requests = list(answers), 0, 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        try:
            while self.answers:
                if not _ours(await reader.readuntil(b"\r\n\r\n")):
                    break
                if not counted:
                    self.connections, counted = self.connections + 1, True
                self.requests += 1
                answer = self.answers.pop(0)
                cut = isinstance(answer, tuple)
                if cut:
                    answer = answer[1]
                if answer == "stall":
                    await reader.read(1)  # until the client gives up and closes
                    break
                for i in range(0, len(answer), 7000):  # in pieces, so an answer spans many reads
                    writer.write(answer[i:i + 7000])
                    await writer.drain()
                if cut:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _ours(head: bytes) -> bool:
    return head.startswith((b"GET /v1/peer/x ", b"GET /x "))


def _ok(body: bytes, length: int | None = None, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n{extra}\r\n").encode() + body


async def _with_peer(answers: list):
    peer = _Peer(answers)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    session = aiohttp.ClientSession()
    client = PeerClient(Identity.generate(), session, 5.0, tls=False)  # plaintext: loopback only
    return peer, server, url, session, client


async def _close(server, session, client) -> None:
    client.close()
    server.close()
    await server.wait_closed()
    await session.close()


async def test_every_answer_that_is_not_the_blocks_asked_is_refused_and_its_connection_dropped() -> None:
    one, two = os.urandom(300_000), os.urandom(123_457)
    refusal = (b'HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\nContent-Length: 46\r\n\r\n'
               b'{"code": "share-not-found", "detail": "gone"} ')
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    answers = [_ok(one + two), _ok(one + two),  # kept alive between them
               _ok(one + two, length=len(one) + len(two) - 1),  # another length than the blocks make
               ("cut", _ok((one + two)[:1000], length=len(one) + len(two))),  # the connection ends mid-answer
               _ok(one + two + b"extra", length=len(one) + len(two)),  # more than its Content-Length ...
               _ok(one + two),  # ... so the next answer on that connection is out of step
               refusal, chunked, b"HTTP/1.1 200 OK\r\n\r\n" + one + two, b"nonsense\r\n\r\n", _ok(one + two)]
    peer, server, url, session, client = await _with_peer(answers)
    try:
        ask = lambda: client.read_into(url, "/v1/peer/x", [len(one), len(two)])  # noqa: E731
        assert [bytes(b) for b in await ask()] == [one, two]
        assert [bytes(b) for b in await ask()] == [one, two]
        assert peer.connections == 1
        with pytest.raises(PeerRefused, match="a body of 423456 bytes where the 2 blocks asked make 423457"):
            await ask()
        with pytest.raises(PeerUnreachable) as cut:  # it may have been sent whole: the holder is not to blame
            await ask()
        assert cut.value.details["sent"] is True
        assert [bytes(b) for b in await ask()] == [one, two]  # its blocks are whole: what follows them is not used
        with pytest.raises(PeerRefused, match="something else than an HTTP/1.x status line: 'extraHTTP/1.1 200"):
            await ask()
        with pytest.raises(PeerRefused) as refused:
            await ask()
        assert refused.value.details["peer_status"] == 404 and refused.value.details["peer_code"] == "share-not-found"
        for wrong in ("a transfer encoding", "no Content-Length", "something else than an HTTP/1.x status line"):
            with pytest.raises(PeerRefused, match=wrong):
                await ask()
        assert [bytes(b) for b in await ask()] == [one, two]
        assert peer.requests == len(answers)
        assert peer.connections == 8  # every connection that failed or was refused dropped, the others kept
    finally:
        await _close(server, session, client)


async def test_a_holder_that_stalls_mid_answer_times_out_and_its_connection_is_not_kept() -> None:
    block = os.urandom(200_000)
    peer, server, url, session, client = await _with_peer([_ok(block), "stall", _ok(block)])
    try:
        assert [bytes(b) for b in await client.read_into(url, "/v1/peer/x", [len(block)])] == [block]
        with pytest.raises(PeerUnreachable) as timed_out:  # on the kept connection: sent at once, however busy
            await client.read_into(url, "/v1/peer/x", [len(block)], timeout=0.3)
        assert timed_out.value.details["sent"] is True and timed_out.value.details["reason"] == "timed out"
        assert [bytes(b) for b in await client.read_into(url, "/v1/peer/x", [len(block)])] == [block]
        assert peer.connections == 2
    finally:
        await _close(server, session, client)


async def test_nothing_listening_is_unreached_and_nothing_was_sent() -> None:
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 5.0, tls=False)
        try:
            with pytest.raises(PeerUnreachable) as unreachable:
                await client.read_into(f"http://127.0.0.1:{free_port()}", "/v1/peer/x", [10])
            assert unreachable.value.details["sent"] is False
            assert unreachable.value.details["reason"] == "connection refused"
        finally:
            client.close()


async def test_at_most_per_peer_connections_are_open_to_one_peer_and_the_rest_wait_for_them() -> None:
    from xsc.net.into import PER_PEER

    block = os.urandom(1000)
    full, gate, connections, most = asyncio.Event(), asyncio.Event(), [0], [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _ours(await reader.readuntil(b"\r\n\r\n")):
                return
            connections[0] += 1
            most[0] = max(most[0], connections[0])
            if connections[0] == PER_PEER:
                full.set()
            while True:
                await gate.wait()
                writer.write(_ok(block))
                await writer.drain()
                await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 10.0, tls=False)
        try:
            asks = [asyncio.ensure_future(client.read_into(url, "/v1/peer/x", [len(block)]))
                    for _ in range(PER_PEER + 8)]
            await asyncio.wait_for(full.wait(), 10)
            gate.set()  # the first PER_PEER answered: the others go on their connections, no new one made
            assert all([bytes(b) for b in answer] == [block] for answer in await asyncio.gather(*asks))
            assert most[0] == PER_PEER and client._into.opened == PER_PEER
        finally:
            client.close()
            server.close()
            await server.wait_closed()


async def test_a_holder_met_keeps_a_pool_only_while_it_keeps_a_connection() -> None:
    from xsc.net.into import Into
    from xsc.net.kept import Unreached

    block = os.urandom(1000)
    peer, server, url, session, client = await _with_peer([_ok(block)] * 3)
    into = Into(most_peers=2)
    head = b"GET /x HTTP/1.1\r\n\r\n"
    try:
        for _ in range(40):  # holders a stranger's record names, not listening
            with pytest.raises(Unreached):
                await into.request("127.0.0.1", free_port(), None, head, [len(block)], timeout=5)
        assert len(into.pools) == 0
        port = server.sockets[0].getsockname()[1]
        for _ in range(3):
            assert [bytes(b) for b in (await into.request("127.0.0.1", port, None, head, [len(block)],
                                                          timeout=5))[1]] == [block]
        assert len(into.pools) == 1 and into.opened == 1 and peer.connections == 1
    finally:
        into.close()
        await _close(server, session, client)

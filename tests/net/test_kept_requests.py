"""Signed requests over the peer client's kept-alive connections (xsc/net/kept.py, `request(..., kept=True)`):
the same answers and the same errors as through aiohttp, one connection for many requests, and the edges of
HTTP/1.1 a peer may answer with (chunked, no length, close, cut, too large)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from xsc.errors import PeerIdentityMismatch, PeerRefused, PeerUnreachable
from xsc.health import check_answer, new_nonce
from xsc.identity import Identity
from xsc.net import PeerClient
from xsc.node.appkeys import NODE

from tests.support.nodes import free_port
from tests.support.waiting import eventually_async

FAST = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


async def test_kept_requests_answer_as_the_session_does_over_one_tls_connection(node_factory) -> None:
    a, b = await node_factory("a", **FAST), await node_factory("b", **FAST)
    client, b_url, b_id = a.app[NODE].peers.client, b.app[NODE].peers.url, b.app[NODE].peers.identity.id
    for _ in range(5):
        nonce = new_nonce()
        response = await client.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": nonce}, to=b_id, kept=True,
                                        max_size=1 << 20)
        assert response.status == 200 and response.node == b_id  # the TLS handshake proved who answered
        check_answer(response.json(), nonce=nonce, prober=a.app[NODE].peers.identity.id, responder=b_id)
    assert client.kept_opened == 1  # one connection, kept alive for all five

    with pytest.raises(PeerRefused) as refused:  # the peer's problem comes through whole
        await client.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": "xyz"}, to=b_id, kept=True,
                             max_size=1 << 20)
    assert refused.value.details["peer_status"] == 400 and refused.value.details["peer_code"] == "invalid-argument"
    with pytest.raises(PeerRefused) as refused:
        await client.request(b_url, "POST", "/v1/peer/no-such-thing", data=b"\x00", to=b_id, kept=True,
                             max_size=1 << 20)
    assert refused.value.details["peer_status"] == 404
    assert client.kept_opened == 1  # error answers keep their connection too

    with pytest.raises(PeerIdentityMismatch) as mismatch:  # another node's key at that URL: nothing is sent
        await client.request(b_url, "POST", "/v1/peer/challenge", json={"nonce": new_nonce()},
                             to=Identity.generate().id, kept=True, max_size=1 << 20)
    assert mismatch.value.details["sent"] is False and mismatch.value.details["presented"] == b_id
    with pytest.raises(PeerUnreachable) as unreachable:
        await client.request(f"http://127.0.0.1:{free_port()}", "POST", "/v1/peer/challenge", json={}, kept=True,
                             max_size=1 << 20)
    assert unreachable.value.details["sent"] is False and unreachable.value.details["reason"] == "connection refused"


class _Peer:
    """A loopback HTTP/1.1 server that answers each request with the next of `answers` (raw bytes; None: close
    the connection without answering), counting connections."""

    def __init__(self, answers: list[bytes | None], close_each: bool = False) -> None:
        self.answers, self.connections, self.requests = list(answers), 0, 0
        self.close_each = close_each  # end each connection after its first answer (whatever the answer said)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"POST /v1/peer/x "):  # a stray: another test's node dialling a port it knew
                    break
                if not counted:
                    self.connections, counted = self.connections + 1, True
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_each or b"Connection: close" in answer or \
                        b"Content-Length" not in answer and b"chunked" not in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _serve(answers: list[bytes | None], close_each: bool = False) -> tuple[_Peer, asyncio.AbstractServer, str]:
    peer = _Peer(answers, close_each)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    return peer, server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def test_kept_requests_read_every_kind_of_answer_and_report_a_cut_one_as_maybe_sent() -> None:
    chunked = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:2}\r\n0\r\n\r\n'
    unframed = b'HTTP/1.1 200 OK\r\n\r\n{"b": 3}'  # no length: the answer ends with the connection
    answers = [_ok(b'{"n": 1}'), _ok(b'{"n": 2}'), chunked, _ok(b'{"n": 4}', "Connection: close\r\n"), unframed,
               _ok(b"x" * 100), None]
    peer, server, url = await _serve(answers)
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 5.0, tls=False)  # plaintext: loopback only
        try:
            ask = lambda max_size=1024: client.request(url, "POST", "/v1/peer/x", json={}, kept=True,  # noqa: E731
                                                       max_size=max_size)
            assert (await ask()).json() == {"n": 1}
            assert (await ask()).json() == {"n": 2}
            assert (await ask()).json() == {"a": 2}
            assert (await ask()).json() == {"n": 4}
            assert peer.connections == 1  # kept alive until the peer said close
            assert (await ask()).json() == {"b": 3}
            with pytest.raises(PeerRefused, match="more than 10 bytes"):
                await ask(max_size=10)
            with pytest.raises(PeerUnreachable) as cut:  # closed without an answer: it may have run
                await ask()
            assert cut.value.details["sent"] is True
            assert peer.connections == 4 and peer.requests == 7  # a too large answer's connection is dropped
        finally:
            client.close()
            server.close()
            await server.wait_closed()


async def test_a_kept_connection_the_peer_closed_while_idle_is_not_used_again() -> None:
    # The peer ends each connection after its answer, as node.idle_timeout ends an idle one.
    peer, server, url = await _serve([_ok(b"{}"), _ok(b'{"again": true}')], close_each=True)
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 5.0, tls=False)
        try:
            await client.request(url, "POST", "/v1/peer/x", json={}, kept=True, max_size=1 << 20)
            await eventually_async(lambda: all(reader.at_eof() for reader, _ in client._kept.pools.idle()),
                                   "the peer's close to be seen", 10, poll=0.02)
            assert (await client.request(url, "POST", "/v1/peer/x", json={}, kept=True,
                                         max_size=1 << 20)).json() == {"again": True}
            assert peer.connections == 2 and client.kept_opened == 2
        finally:
            client.close()
            server.close()
            await server.wait_closed()


async def test_a_peer_that_never_answers_times_out_as_maybe_sent() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # after its first answer
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
        writer.write(_ok(b'{"n": 1}'))
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, 5.0, tls=False)
        try:
            await client.request(url, "POST", "/v1/peer/x", json={}, kept=True, max_size=1 << 20)
            with pytest.raises(PeerUnreachable) as timed_out:  # on the kept connection: sent at once, however busy
                await client.request(url, "POST", "/v1/peer/x", json={}, kept=True, max_size=1 << 20, timeout=0.3)
            assert timed_out.value.details["sent"] is True and timed_out.value.details["reason"] == "timed out"
        finally:
            client.close()
            server.close()


async def test_the_pools_of_peers_met_are_bounded_and_one_in_use_is_never_taken_from_its_request() -> None:
    """A pool per peer met (each provider or holder a stranger's records may name) stays only while it keeps a
    connection: past `most_peers` the least recently used go, their idle connections closed, but never one that
    a request is using; a peer that was not reached leaves nothing."""
    from xsc.net.kept import Kept, Unreached

    gate, open_at = asyncio.Event(), {}

    def server_of(name: str, held: bool = False):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            counted = False
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head.startswith(b"POST /x "):  # a stray: another test's node dialling a port it knew
                        break
                    if not counted:
                        open_at[name], counted = open_at.get(name, 0) + 1, True
                    await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
                    if held:
                        await gate.wait()
                    writer.write(_ok(name.encode()))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                if counted:
                    open_at[name] -= 1
                writer.close()
        return handle

    kept = Kept(most_peers=4)
    servers = {name: await asyncio.start_server(server_of(name, name == "held"), "127.0.0.1", 0)
               for name in ("held", *(f"p{i}" for i in range(6)))}
    port = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    head = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n"
    ask = lambda p: kept.request("127.0.0.1", p, None, head, b"{}", timeout=10, max_size=1000)  # noqa: E731
    try:
        held = asyncio.ensure_future(ask(port["held"]))
        await eventually_async(lambda: open_at.get("held") == 1, "the held request to be under way")
        for i in range(6):
            assert (await ask(port[f"p{i}"]))[2] == f"p{i}".encode()
        assert len(kept.pools) == 4  # the one in use and the three peers used last
        await eventually_async(lambda: sum(open_at.values()) == 4, "the pushed-out peers' connections to be closed")
        assert [open_at[f"p{i}"] for i in range(6)] == [0, 0, 0, 1, 1, 1]
        for _ in range(50):
            with pytest.raises(Unreached):
                await ask(free_port())
        assert len(kept.pools) == 4
        gate.set()
        assert (await held)[2] == b"held"  # its connection was never closed under it
        assert open_at["held"] == 1 and kept.opened == 7
    finally:
        kept.close()
        for server in servers.values():
            server.close()
            await server.wait_closed()

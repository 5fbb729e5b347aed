"""A get of shares all held here, passed on by threads (gateway_get's `Plaintext.pass_on`, serve/direct.py): exact
bytes whole or ranged, damage found mid-stream cuts the connection and is reported, a client gone stops the
threads; a TLS connection, or headers the socket did not take, keep the transport; the socket writer's refusals."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from types import SimpleNamespace

import aiohttp
import pytest

from xsc.node.appkeys import NODE, TOKEN
from xsc.serve.direct import SocketBody, Stalled, body_socket
from xsc.storage import Capability
from xsc.storage.core import erasure
from xsc.storage import gateway_get
from xsc.storage.gateway_get import GROUPED, PASSED_ON_AT_ONCE

from tests.support.waiting import eventually_async

SEG = 4096


@pytest.fixture
async def store_node(node_factory):
    return await node_factory(storage={"segment_size": SEG, "capacity": 8 * 1024 * 1024})


async def put(client, data: bytes) -> str:
    resp = await client.post("/v1/store/files", data=data, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["capability"]


async def test_a_get_of_many_segments_held_here_is_passed_on_by_threads_whole_or_ranged(store_node, passed_on) -> None:
    data = os.urandom(37 * SEG + 123)
    cap = await put(store_node, data)
    resp = await store_node.get(f"/v1/store/files/{cap}")
    assert resp.status == 200 and await resp.read() == data
    resp = await store_node.get(f"/v1/store/files/{cap}", headers={"Range": f"bytes={SEG - 5}-{5 * SEG + 7}"})
    assert resp.status == 206 and await resp.read() == data[SEG - 5:5 * SEG + 8]
    await eventually_async(lambda: len(passed_on) == 2, "both gets' handlers done")  # the body is out before
    assert passed_on == [len(data), 4 * SEG + 13]
    # one segment (a small file, or a range within one) is iterated on the loop: no threads for it
    small = await put(store_node, b"hello")
    assert await (await store_node.get(f"/v1/store/files/{small}")).read() == b"hello"
    resp = await store_node.get(f"/v1/store/files/{cap}", headers={"Range": "bytes=10-20"})
    assert await resp.read() == data[10:21]
    assert len(passed_on) == 2


async def test_a_get_passed_on_decrypts_into_the_buffers_its_writer_has_passed_on(store_node) -> None:
    """Once `write` returns, its pieces' buffers are taken again: a get of many segments makes only as many as are in
    flight at once (K a segment: the groups of GROUPED segments queued, one being read, one being written), and its
    bytes stay exact."""
    data = os.urandom(60 * SEG + 77)
    cap = Capability.parse(await put(store_node, data))
    _, plaintext = await store_node.app[NODE].storage.open(cap)
    out, buffers = bytearray(), {}  # each buffer by its id, held so that no id is another's later

    def write(pieces, stop) -> None:
        for piece in pieces:
            out.extend(piece)
            buffers[id(piece.obj)] = piece.obj

    try:
        assert plaintext.take_threads()
        assert await plaintext.pass_on(write) == len(data)
    finally:
        await plaintext.aclose()
    assert out == data
    queued = max(1, store_node.app[NODE].gateway.depth // GROUPED)
    assert len(buffers) <= (queued + 2) * GROUPED * erasure.K


async def test_gets_passed_on_at_once_are_bounded_and_their_slots_come_back_as_they_close(store_node,
                                                                                            passed_on) -> None:
    """PASSED_ON_AT_ONCE gets hold threads at once; the next one is iterated on the loop, whole and exact; a slot
    is the gateway's again once its get is closed, whether or not it was passed on."""
    data = os.urandom(9 * SEG)
    cap = Capability.parse(await put(store_node, data))
    storage, gateway = store_node.app[NODE].storage, store_node.app[NODE].gateway
    opened = [(await storage.open(cap))[1] for _ in range(PASSED_ON_AT_ONCE)]
    assert all(p.take_threads() for p in opened) and gateway.passing_on == PASSED_ON_AT_ONCE
    resp = await store_node.get(f"/v1/store/files/{cap}")
    assert resp.status == 200 and await resp.read() == data and passed_on == []
    for p in opened:
        await p.aclose()
    assert gateway.passing_on == 0
    resp = await store_node.get(f"/v1/store/files/{cap}")
    assert await resp.read() == data
    await eventually_async(lambda: passed_on == [len(data)], "the get passed on once a slot was free")
    await eventually_async(lambda: gateway.passing_on == 0, "its slot back as the get closed")


async def test_damage_found_mid_stream_cuts_the_connection_and_is_reported(store_node, passed_on) -> None:
    """Three shares bad in one segment, found only when it is read: the bytes before it went out, then the
    connection is cut (a short body, never wrong bytes), and the shares are reported for repair."""
    data = os.urandom(40 * SEG)
    cap = await put(store_node, data)
    si = Capability.parse(cap).storage_index
    store = store_node.app[NODE].gateway.store
    for share in (0, 1, 2):
        block = bytearray(store.get_block(si, share, 30))
        block[7] ^= 0x10
        store.put_repaired_blocks(si, 30, {share: bytes(block)})
    resp = await store_node.get(f"/v1/store/files/{cap}")
    assert resp.status == 200
    got = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            got += chunk
    assert len(got) < len(data) and bytes(got) == data[:len(got)]

    async def reported() -> bool:
        check = await (await store_node.get(f"/v1/store/files/{cap}/check")).json()
        return [s["share"] for s in check["shares"] if s["status"] == "corrupt"] == [0, 1, 2]
    await eventually_async(reported, "shares 0, 1, 2 reported corrupt")
    assert passed_on == [-1] and store.db.in_use == 0  # the reading thread's iterator released as it failed
    other = os.urandom(3 * SEG)
    assert await (await store_node.get(f"/v1/store/files/{await put(store_node, other)}")).read() == other


def _get_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("xsc-reader", "xsc-sender"))]


async def test_a_client_gone_mid_get_stops_both_threads(store_node, passed_on) -> None:
    data = os.urandom(512 * SEG)
    cap = await put(store_node, data)
    app = store_node.app

    def get_and_leave() -> bytes:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the node's writer waits for room
            sock.settimeout(10)
            sock.connect((store_node.host, store_node.port))
            sock.sendall(f"GET /v1/store/files/{cap} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {app[TOKEN]}"
                         f"\r\n\r\n".encode())
            head = sock.recv(4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a reset
            return head

    assert b" 200 " in await asyncio.get_running_loop().run_in_executor(None, get_and_leave)

    async def ended() -> bool:
        return _get_threads() == []
    await eventually_async(ended, "the get's threads ended")
    await eventually_async(lambda: passed_on == [-1], "the get's handler done")
    assert app[NODE].gateway.store.db.in_use == 0  # the reading thread's iterator released as it stopped
    resp = await store_node.get(f"/v1/store/files/{cap}")
    assert resp.status == 200 and await resp.read() == data


def _get_on_a_narrow_socket(node, cap: str) -> socket.socket:
    """A connection that has asked for the file and holds little of its answer: the node's writer finds it full."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((node.host, node.port))
    sock.sendall(f"GET /v1/store/files/{cap} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 f"Authorization: Bearer {node.app[TOKEN]}\r\n\r\n".encode())
    return sock


async def test_a_get_passed_on_lets_go_of_the_database_while_its_client_takes_nothing(node_factory,
                                                                                  monkeypatch) -> None:
    """Its reading thread reads the blocks through one iterator (share_store.BlockReader), which a reopen of the
    database waits for: released while that thread waits for the writer, whose client takes nothing, and when the
    get ends."""
    monkeypatch.setattr(gateway_get, "HELD_FOR", 1 << 30)  # released only for want of room ahead
    node = await node_factory(storage={"segment_size": 256 * 1024, "capacity": 64 * 1024 * 1024})
    data = os.urandom(24 * 1024 * 1024)  # more than the sockets hold: the node's writer waits for room
    cap = await put(node, data)
    db, storage = node.app[NODE].gateway.store.db, node.app[NODE].storage
    go_on = threading.Event()

    def get_after_a_while() -> bytes:
        with _get_on_a_narrow_socket(node, cap) as sock:
            answer = bytearray(sock.recv(4096))
            go_on.wait(30)
            while chunk := sock.recv(1 << 20):
                answer += chunk
            return bytes(answer)

    answer = asyncio.get_running_loop().run_in_executor(None, get_after_a_while)
    try:
        await eventually_async(lambda: storage.status()["gets"]["passed_on"] == 1 and db.in_use == 0,
                               "the database let go of while the get waits for its client")
    finally:
        go_on.set()
    head, body = (await answer).split(b"\r\n\r\n", 1)
    assert b" 200 " in head and body == data
    await eventually_async(lambda: _get_threads() == [], "the get's threads ended")
    assert db.in_use == 0


async def test_a_client_that_reads_nothing_after_the_headers_is_cut_once_idle_timeout_passes(node_factory,
                                                                                             caplog) -> None:
    node = await node_factory(storage={"segment_size": 256 * 1024, "capacity": 64 * 1024 * 1024},
                              node={"idle_timeout": 1})
    data = os.urandom(24 * 1024 * 1024)  # more than the sockets hold: the node's writer waits for room
    cap = await put(node, data)
    storage = node.app[NODE].storage

    def get_and_stall() -> int:
        with _get_on_a_narrow_socket(node, cap) as sock:
            head = sock.recv(64)
            assert b" 200 " in head
            while storage.status()["gets"]["open"]:  # connected, reading nothing, until the node gives up on it
                threading.Event().wait(0.05)
            got = len(head)
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            return got

    caplog.set_level(logging.INFO, logger="xsc.node.problems")
    got = await asyncio.get_running_loop().run_in_executor(None, get_and_stall)
    assert got < len(data)  # cut: a short body
    await eventually_async(lambda: "took no bytes for 1 s" in caplog.text, "the cut logged as a stall")
    assert storage.status()["gets"] == {"open": 0, "passed_on": 0, "tag_failures": 0}
    await eventually_async(lambda: _get_threads() == [], "the get's threads ended")
    resp = await node.get(f"/v1/store/files/{cap}")
    assert resp.status == 200 and await resp.read() == data


class _Transport:
    def __init__(self, extra: dict, buffered: int = 0) -> None:
        self.extra, self.buffered = extra, buffered

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str):
        return self.extra.get(name)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class _Response:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_a_tls_connection_or_headers_still_buffered_keep_the_transport() -> None:
    a, b = socket.socketpair()
    try:
        tls = SimpleNamespace(transport=_Transport({"socket": a, "ssl_object": object()}))
        response = _Response()
        assert await body_socket(tls, response) is None and response.written == []  # nothing past TLS, ever
        buffered = SimpleNamespace(transport=_Transport({"socket": a}, buffered=100))
        assert await body_socket(buffered, _Response()) is None
        plain = SimpleNamespace(transport=_Transport({"socket": a}))
        body = await body_socket(plain, _Response())
        assert body is not None and body.fd != a.fileno()  # a descriptor of its own
        assert await body.fill(lambda write: _written(write, [b"ab", bytearray(b"cd"), memoryview(b"ef")])) == 6
        assert b.recv(10) == b"abcdef"
        with pytest.raises(OSError):
            os.fstat(body.fd)  # closed once filled
    finally:
        a.close()
        b.close()


async def _written(write, pieces) -> int:
    await asyncio.get_running_loop().run_in_executor(None, write, pieces, threading.Event())
    return sum(len(p) for p in pieces)


def test_a_writer_waiting_for_a_client_that_reads_nothing_gives_up_once_stopped() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        stop = threading.Event()
        outcome: list[BaseException] = []

        def write() -> None:
            try:
                SocketBody(a.fileno()).write([bytes(8 << 20)], stop)
            except BaseException as exc:
                outcome.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        stop.set()
        writer.join(10)
        assert not writer.is_alive() and isinstance(outcome[0], ConnectionError)
    finally:
        a.close()
        b.close()


def test_a_writer_whose_client_is_gone_raises() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        b.close()
        with pytest.raises(OSError):
            SocketBody(a.fileno()).write([b"x" * 1000], threading.Event())
    finally:
        a.close()


def test_a_writer_whose_client_takes_nothing_for_its_stall_time_raises_stalled() -> None:
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        writer = SocketBody(a.fileno())
        writer.stall = 0.3
        with pytest.raises(Stalled):
            writer.write([bytes(8 << 20)], threading.Event())
    finally:
        a.close()
        b.close()

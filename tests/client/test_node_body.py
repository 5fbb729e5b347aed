"""A large body passed on from the node's socket (xsc.client.sync.NodeBody.splice_to: the CLI's get, the S3 front's
relay): by splice(2), or by copying where the system or the output has none; exactly, and either side ending early
is an error, never a hang."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from xsc.client import sync
from xsc.client.sync import NodeBody


@pytest.fixture(params=["splice", "copy"])
def mode(request, monkeypatch) -> str:
    if request.param == "splice" and not sync.SPLICE:
        pytest.skip("splice(2) is Linux only")
    if request.param == "copy":
        monkeypatch.setattr(sync, "SPLICE", False)
    return request.param


def _relay(data: bytes, length: int, head: bytes = b"", close_source: bool = True, with_head: bool = False
           ) -> tuple[bytes, BaseException | None, NodeBody]:
    node_side, front_in = socket.socketpair()
    front_out, client_side = socket.socketpair()
    front_out.setblocking(False)  # as an asyncio transport's socket is
    body = NodeBody(front_in, head, length)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            body.splice_to(os.dup(front_out.fileno()), threading.Event(), idle=5, head=with_head)
        except OSError as exc:
            failure.append(exc)
        finally:
            front_out.close()

    relay = threading.Thread(target=run)
    relay.start()
    writer = threading.Thread(target=lambda: (node_side.sendall(data), close_source and node_side.close()))
    writer.start()
    got = bytearray()
    while chunk := client_side.recv(1 << 20):
        got += chunk
    relay.join(10)
    writer.join(10)
    client_side.close()
    node_side.close()
    return bytes(got), failure[0] if failure else None, body


def test_the_relay_passes_every_byte_on_exactly(mode: str) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    head = b"already read with the headers"
    got, failure, body = _relay(data, len(head) + len(data), head)
    assert failure is None and got == data and body.passed == len(data)
    got, failure, body = _relay(data, len(head) + len(data), head, with_head=True)
    assert failure is None and got == head + data and body.passed == len(head) + len(data)


def test_a_source_that_ends_early_is_an_error_and_the_client_sees_a_short_body(mode: str) -> None:
    data = os.urandom(300_000)
    got, failure, body = _relay(data, len(data) + 1000)
    assert isinstance(failure, sync.IncompleteBody) and "1000 bytes short" in str(failure)
    assert got == data and body.passed == len(data)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


@pytest.mark.parametrize("pair", [socket.socketpair, _tcp_pair])  # a TCP socket's splice waits unless non-blocking
def test_a_stalled_source_times_out(mode: str, pair) -> None:
    data = os.urandom(1000)
    node_side, front_in = pair()
    front_out, client_side = socket.socketpair()
    front_out.setblocking(False)
    node_side.sendall(data)
    body = NodeBody(front_in, b"", len(data) + 1)
    with pytest.raises(TimeoutError):
        body.splice_to(os.dup(front_out.fileno()), threading.Event(), idle=0.3)
    assert client_side.recv(2000) == data
    for s in (node_side, front_out, client_side):
        s.close()


def test_a_stopped_relay_ends(mode: str) -> None:
    node_side, front_in = _tcp_pair()
    front_out, client_side = socket.socketpair()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()  # while it waits for the node's next byte
    with pytest.raises(ConnectionError, match="stopped"):
        NodeBody(front_in, b"", 10).splice_to(os.dup(front_out.fileno()), stop)
    for s in (node_side, front_out, client_side):
        s.close()


def test_peek_gives_up_on_a_node_that_sends_nothing(mode: str) -> None:
    node_side, front_in = _tcp_pair()
    body = NodeBody(front_in, b"", 10)
    body.idle = 0.2
    with pytest.raises(TimeoutError):
        body.peek(4)
    body.close()
    node_side.close()


def test_a_file_opened_for_appending_takes_the_body_by_copying(mode: str, tmp_path: Path) -> None:
    """splice(2) refuses such a file (EINVAL) once bytes wait in its pipe: those are written out, the rest copied."""
    data = os.urandom(3 * 1024 * 1024 + 7)
    node_side, front_in = socket.socketpair()
    target = tmp_path / "out.bin"
    target.write_bytes(b"before:")
    writer = threading.Thread(target=lambda: (node_side.sendall(data[5:]), node_side.close()))
    writer.start()
    body = NodeBody(front_in, data[:5], len(data))
    body.splice_to(os.open(target, os.O_WRONLY | os.O_APPEND), idle=5, head=True)
    writer.join(10)
    assert target.read_bytes() == b"before:" + data and body.passed == len(data)


def test_peek_reads_the_start_into_head(mode: str) -> None:
    node_side, front_in = socket.socketpair()
    node_side.sendall(b"23456789")  # what follows the head
    node_side.close()
    body = NodeBody(front_in, b"01", 10)
    assert body.peek(4) == b"0123" and body.head == b"0123" and body.left == 6
    out, reader = socket.socketpair()
    body.splice_to(os.dup(out.fileno()), head=True)
    out.close()
    assert reader.recv(100) == b"0123456789"
    reader.close()


def test_a_file_object_without_a_descriptor_takes_the_body_by_copying(mode: str) -> None:
    import io

    data = os.urandom(2 * 1024 * 1024 + 3)
    node_side, front_in = socket.socketpair()
    writer = threading.Thread(target=lambda: (node_side.sendall(data[2:]), node_side.close()))
    writer.start()
    sink = io.BytesIO()
    NodeBody(front_in, data[:2], len(data)).splice_to(sink, idle=5, head=True)
    writer.join(10)
    assert sink.getvalue() == data and not sink.closed


def _answering(answer: bytes, requests: list[bytes] | None = None) -> int:
    """A server that reads one request (into `requests`) and writes `answer`, then closes; its port."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            if requests is not None:
                requests.append(request)
            conn.sendall(answer)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


@pytest.mark.parametrize("answer, words", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "no Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "before the body"),
    (b"nonsense\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", "without a whole answer"),
])
def test_an_answer_open_body_cannot_use_is_a_connection_error(answer: bytes, words: str) -> None:
    with pytest.raises(ConnectionError, match=words):
        sync.open_body("127.0.0.1", _answering(answer), "Bearer t", "/v1/store/files/x")


def test_the_nodes_refusal_is_its_error() -> None:
    from xsc.errors import NotFound

    problem = b'{"code": "not-found", "detail": "this node holds no file with that capability", "status": 404}'
    answer = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\nContent-Length: "
              + str(len(problem)).encode() + b"\r\n\r\n" + problem)
    with pytest.raises(NotFound, match="no file with that capability"):
        sync.open_body("127.0.0.1", _answering(answer), "Bearer t", "/v1/store/files/x")


def test_a_range_is_asked_for_and_the_body_starts_where_the_headers_end() -> None:
    answer = (b"HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n"
              b"content-range: bytes 2-6/10\r\n\r\n23456")
    requests: list[bytes] = []
    body = sync.open_body("127.0.0.1", _answering(answer, requests), "Bearer t", "/v1/store/files/x", 2, 6)
    assert body.length == 5 and body.peek(5) == b"23456"
    body.close()
    assert requests[0].startswith(b"GET /v1/store/files/x HTTP/1.1\r\n")
    assert b"\r\nRange: bytes=2-6\r\n" in requests[0] and b"\r\nAuthorization: Bearer t\r\n" in requests[0]

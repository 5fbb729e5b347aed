"""The front's relay of a large GetObject body: bytes go from the node's socket to the client's by splice(2)
(xsc.client.aio.NodeBody.splice_to), exactly, and either side ending early is an error, never a hang."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from xsc.client.aio import SPLICE, NodeBody

pytestmark = pytest.mark.skipif(not SPLICE, reason="splice(2) is Linux only; elsewhere the front copies")


def _relay(data: bytes, length: int, head: bytes = b"", close_source: bool = True) -> tuple[bytes, BaseException | None]:
    node_side, front_in = socket.socketpair()
    front_out, client_side = socket.socketpair()
    front_out.setblocking(False)  # as an asyncio transport's socket is
    body = NodeBody(front_in, head, length)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            body.splice_to(os.dup(front_out.fileno()), threading.Event(), idle=5)
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
    return bytes(got), failure[0] if failure else None


def test_the_relay_passes_every_byte_on_exactly() -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    head = b"already read with the headers"
    got, failure = _relay(data, len(head) + len(data), head)
    assert failure is None and got == data


def test_a_source_that_ends_early_is_an_error_and_the_client_sees_a_short_body() -> None:
    data = os.urandom(300_000)
    got, failure = _relay(data, len(data) + 1000)
    assert isinstance(failure, ConnectionError) and "short" in str(failure)
    assert got == data


def test_a_stalled_source_times_out() -> None:
    data = os.urandom(1000)
    node_side, front_in = socket.socketpair()
    front_out, client_side = socket.socketpair()
    front_out.setblocking(False)
    node_side.sendall(data)
    body = NodeBody(front_in, b"", len(data) + 1)
    with pytest.raises(TimeoutError):
        body.splice_to(os.dup(front_out.fileno()), threading.Event(), idle=0.3)
    assert client_side.recv(2000) == data
    for s in (node_side, front_out, client_side):
        s.close()

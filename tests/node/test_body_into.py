"""A request's body read straight into its parts past aiohttp's parser (xsc/serve/body.py), over TLS and in plaintext:
exact parts however the body is cut into reads, the connection aiohttp's again after it (the next request, pipelined
or not, answered on it); a body cut short or too slow refused, its connection closed, the server unharmed."""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest
from aiohttp import web

from xsc.identity import Identity
from xsc.net import tls
from xsc.serve.body import BodyCut, BodyLate, read_into

from tests.support.nodes import free_port

LENGTHS = [5, 70_000, 3, 40_000]


class _Server:
    def __init__(self) -> None:
        self.refused: list[BaseException] = []
        self.refusal = asyncio.Event()
        self.reading = asyncio.Event()  # a handler is in read_into: the connection is its protocol's

    async def parts(self, request: web.Request) -> web.Response:
        lengths = [int(n) for n in request.query["lengths"].split(",")]
        self.reading.set()  # read_into takes the connection before it first waits, so before any waiter wakes
        try:
            parts = await read_into(request, lengths, float(request.query.get("seconds", 30)))
        except (BodyCut, BodyLate) as refused:
            self.refused.append(refused)
            self.refusal.set()
            if isinstance(refused, BodyCut):
                raise
            return web.Response(status=408, text=str(refused.received))
        assert all(type(part) is bytearray for part in parts)
        return web.Response(body=b"".join(parts))

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")


@pytest.fixture(params=["tls", "plain"])
async def server(request, tmp_path):
    served = _Server()
    app = web.Application()
    app.router.add_put("/parts", served.parts)
    app.router.add_get("/ping", served.ping)
    runner = web.AppRunner(app, lingering_time=1.0)  # a refused body's rest is drained for this long, then closed
    await runner.setup()
    port = free_port()
    context = tls.server_context(Identity.generate(), tmp_path) if request.param == "tls" else None
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    served.port, served.client_context = port, (tls.client_context(None) if context is not None else None)
    yield served
    await runner.cleanup()


async def _connect(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context: ssl.SSLContext | None = server.client_context
    return await asyncio.open_connection("127.0.0.1", server.port, ssl=context)


def _put(body: bytes, lengths: list[int], seconds: float = 30) -> bytes:
    query = ",".join(map(str, lengths))
    return (f"PUT /parts?lengths={query}&seconds={seconds} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def test_a_body_is_read_into_its_parts_and_its_connection_serves_the_next_request(server) -> None:
    body = os.urandom(sum(LENGTHS))
    reader, writer = await _connect(server)
    try:
        request = _put(body, LENGTHS)
        writer.write(request[:len(request) - len(body) + 10])  # the head and a few of the body's bytes
        await writer.drain()
        for start in range(10, len(body), 4096):  # the rest in pieces, each its own write
            writer.write(body[start:start + 4096])
            await writer.drain()
        assert await _answer(reader) == (200, body)
        writer.write(PING)
        assert await _answer(reader) == (200, b"pong")
        again = os.urandom(sum(LENGTHS))  # and another body on the same connection
        writer.write(_put(again, LENGTHS))
        assert await _answer(reader) == (200, again)
    finally:
        writer.close()


async def test_requests_pipelined_after_a_body_are_answered_in_turn(server) -> None:
    """Nothing past the body is read into its parts: the next requests, sent with it in one write, reach aiohttp."""
    first, second, small = os.urandom(sum(LENGTHS)), os.urandom(sum(LENGTHS)), os.urandom(7)
    reader, writer = await _connect(server)
    try:
        writer.write(_put(first, LENGTHS) + PING + _put(second, LENGTHS) + _put(small, [3, 4]) + PING)
        assert [await _answer(reader) for _ in range(5)] == [(200, first), (200, b"pong"), (200, second),
                                                               (200, small), (200, b"pong")]
    finally:
        writer.close()


async def test_a_body_cut_short_is_refused_and_the_server_goes_on(server) -> None:
    body = os.urandom(sum(LENGTHS))
    reader, writer = await _connect(server)
    request = _put(body, LENGTHS)
    writer.write(request[:len(request) - 50_000])
    await writer.drain()
    await asyncio.wait_for(server.reading.wait(), 30)  # cut once the body is being read into its parts
    writer.close()
    await asyncio.wait_for(server.refusal.wait(), 30)
    assert isinstance(server.refused[0], BodyCut)
    reader, writer = await _connect(server)
    try:
        writer.write(PING)
        assert await _answer(reader) == (200, b"pong")
    finally:
        writer.close()


async def test_a_body_too_slow_is_refused_with_what_came_and_its_connection_closed(server) -> None:
    body = os.urandom(sum(LENGTHS))
    reader, writer = await _connect(server)
    try:
        request = _put(body, LENGTHS, seconds=0.2)
        writer.write(request[:len(request) - 30_000])  # the rest never comes
        await writer.drain()
        status, received = await _answer(reader)
        assert status == 408 and int(received) == len(body) - 30_000
        assert isinstance(server.refused[0], BodyLate)
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed once answered: its bytes are out of step
    finally:
        writer.close()

"""A stopping node closes a connection whose request it answered before reading the body (a put that does not
fit, 507), rather than waiting for aiohttp's linger on that body to run out, and one set up as the stop began,
rather than waiting for its first request: on each of the node's runners."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from xsc.devnet import free_port
from xsc.serve.connections import ProblemRunner
from xsc.serve.listener import GuardedNodeRunner, NodeRunner, NodeSite

BODY = 3 * 1024 * 1024
HANG = 30.0  # a deadline against a hang, never a timing assertion: the linger below is an hour


async def _full(request: web.Request) -> web.Response:
    return web.Response(status=507, text="full")  # the body is never read


async def _serve(kind: str) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/full", _full)
    # A client that sends nothing more after the answer: without the fix, the stop waits the linger out.
    options = {"lingering_time": 3600.0, "shutdown_timeout": 3600.0}
    if kind == "node":
        runner: web.AppRunner = GuardedNodeRunner(app, max_connections=64, max_per_ip=16, **options)
    elif kind == "in-process":
        runner = NodeRunner(app, **options)
    else:
        runner = ProblemRunner(app, **options)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port) if kind == "web" else NodeSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, port


@pytest.mark.parametrize("kind", ["node", "in-process", "web"])
async def test_a_stop_closes_a_connection_lingering_on_a_body_answered_unread(kind):
    runner, port = await _serve(kind)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST /full HTTP/1.1\r\nHost: n\r\nContent-Length: {BODY}\r\n\r\n".encode() + b"x" * 65536)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
        assert head.startswith(b"HTTP/1.1 507")
        await asyncio.wait_for(reader.readexactly(4), HANG)  # "full": the answer went out, the body is unread

        # The client holds its connection open and sends nothing more; the stop closes it all the same.
        await asyncio.wait_for(runner.cleanup(), HANG)
        try:
            rest = await asyncio.wait_for(reader.read(), HANG)
        except ConnectionResetError:  # the unread body's bytes make the close a reset
            rest = b""
        assert rest == b"" and not writer.is_closing()
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["node", "in-process", "web"])
async def test_a_stop_begun_as_a_connection_is_set_up_does_not_wait_for_its_first_request(kind):
    runner, _ = await _serve(kind)
    server = runner.server
    assert server is not None
    handlers = getattr(server, "inner", server)  # aiohttp's handler factory (under the sniffer on a node's port)
    ours, theirs = socket.socketpair()

    def handler_set_up_as_the_stop_begins():
        handler = handlers()
        made = handler.connection_made

        def connection_made(transport):
            made(transport)
            server.pre_shutdown()  # in the same loop turn, before the handler waits for a first request

        handler.connection_made = connection_made
        return handler

    try:
        await asyncio.get_running_loop().connect_accepted_socket(handler_set_up_as_the_stop_begins, ours)
        # Its client holds the connection open and sends nothing; the stop is done all the same.
        await asyncio.wait_for(server.shutdown(3600.0), HANG)
        theirs.settimeout(HANG)
        assert theirs.recv(1) == b""
    finally:
        theirs.close()
        await runner.cleanup()

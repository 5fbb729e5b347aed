"""A node's stop, as every node stops (`xsc node start`, a node in a test's process): it says it leaves, stops
listening, lets its requests in flight end (saying what it waits for), whatever saying it leaves meets.

A stopping node closes a connection whose request it answered before reading the body (a put that does not
fit, 507), rather than waiting for aiohttp's linger on that body to run out, and one set up as the stop began,
rather than waiting for its first request: on each of the node's runners."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

import pytest
from aiohttp import web

from xsc.devnet import free_port
from xsc.node.appkeys import IN_FLIGHT, NODE, TOKEN
from xsc.serve.connections import ProblemRunner
from xsc.serve.listener import GuardedNodeRunner, NodeRunner, NodeSite

from tests.support.nodes import close_node
from tests.support.waiting import eventually_async

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


async def _put_held(node, size: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A put of `size` bytes on `node` whose handler runs, its body not sent yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.server.port)
    writer.write(f"POST /v1/store/files HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {node.app[TOKEN]}\r\n"
                 f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)).startswith(b"HTTP/1.1 100")
    await eventually_async(lambda: node.app[IN_FLIGHT].count == 1, "the put's handler to run")
    return reader, writer


async def _stop_while_a_put_is_in_flight(node, caplog) -> None:
    """Stop `node` while a put is in flight: it says it leaves and stops listening, says it waits for the put, and
    the put, its body sent then, is stored before the node stops."""
    caplog.set_level(logging.INFO, logger="xsc.serve.stop")
    market, port, data = node.app[NODE].market, node.server.port, os.urandom(100_000)
    reader, writer = await _put_held(node, len(data))
    closing = asyncio.ensure_future(close_node(node))
    try:
        await eventually_async(lambda: "stopping: waiting for 1 request in flight (POST /v1/store/files)" in caplog.text,
                               "the stop to say it waits for the put")
        assert market.ask("storage") is None  # it offers nothing: it left before it waits
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)  # and it listens no more
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
        assert head.startswith(b"HTTP/1.1 201"), head
        await closing
    finally:
        writer.close()
        closing.cancel()


async def test_a_node_in_a_tests_process_stops_as_a_started_node_does_leaving_first_then_letting_its_work_end(
        node_factory, caplog) -> None:
    await _stop_while_a_put_is_in_flight(await node_factory(), caplog)


async def test_a_stop_whose_leave_meets_a_full_disk_still_lets_its_requests_in_flight_end(
        node_factory, caplog, monkeypatch) -> None:
    """The offer of nothing is not written (a full disk): the stop goes on, and the put in flight still ends."""
    node = await node_factory()

    def full(*_args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(node.app[NODE].market.store, "keep_own", full)
    await _stop_while_a_put_is_in_flight(node, caplog)
    assert "could not tell the peers this node leaves" in caplog.text

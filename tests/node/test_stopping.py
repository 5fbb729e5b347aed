"""A node's stop, as every node stops (`xsc node start`, a node in a test's process): it says it leaves, stops
listening, lets its requests in flight end (saying what it waits for), whatever saying it leaves meets.

A stopping node closes a connection whose request it answered before reading the body (a put that does not
fit, 507), rather than waiting for aiohttp's linger on that body to run out, and one set up as the stop began,
rather than waiting for its first request: on each of the node's runners.

On every listener of a real node process, stopped as a user's Ctrl-C stops it: its web functions' and its S3
front's requests under way end as the user API's do, new ones on the connections already open (the user API's among
them) are refused 503 `node-stopping` in each listener's own form, told to come back (Retry-After) on a connection of
their own, and a second Ctrl-C stops it at once, even while it still tells its peers it leaves.

A put admitted before the stop (on the user API, or an S3 PutObject) keeps the node's own offer, which the stop
withdraws from its peers only: one whose quote comes after the leave is stored."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.client
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from aiohttp import web

from xsc.devnet import free_port
from xsc.errors import NodeStopping
from xsc.node.appkeys import CONFIG, IN_FLIGHT, NODE, TOKEN
from xsc.node.datadir import TOKEN_FILE
from xsc.serve.connections import ProblemRunner
from xsc.serve.listener import GuardedNodeRunner, NodeRunner, NodeSite

from tests.support.compute import WASM
from tests.support.nodes import NodeProcess, close_node
from tests.support.s3 import NODE_ENV, create_key, reserved, sign_headers, signed_answer, signed_exchange
from tests.support.waiting import eventually, eventually_async

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


@pytest.mark.both_loops
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


@pytest.mark.both_loops
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
        with pytest.raises(NodeStopping):
            market.offer.honoured_ask("storage")  # it takes no more work from its peers: it left before it waits
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


async def test_a_request_expecting_100_continue_as_the_node_stops_is_refused_before_its_body_is_asked_for(
        node_factory, caplog) -> None:
    """A route's expect handler runs before the app's middlewares: on a connection kept open, a put that says
    `Expect: 100-continue` once the stop began is answered 503 `node-stopping` at once, never told to send a body
    that would not be read."""
    caplog.set_level(logging.INFO, logger="xsc.serve.stop")
    node = await node_factory()
    token, port = node.app[TOKEN], node.server.port
    kept_reader, kept = await asyncio.open_connection("127.0.0.1", port)
    kept.write(f"GET /v1/node/status HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    await _answer(kept_reader)
    reader, writer = await _put_held(node, 1000)
    closing = asyncio.ensure_future(close_node(node))
    try:
        await eventually_async(lambda: "stopping: waiting for 1 request in flight" in caplog.text,
                               "the stop to wait for the put in flight")
        kept.write(f"POST /v1/store/files HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {token}\r\n"
                   "Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n".encode())
        refused, problem = await _answer(kept_reader)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert b"Retry-After: 5" in refused and b"Connection: close" in refused, refused
        assert json.loads(problem)["code"] == "node-stopping", problem
        writer.write(b"x" * 1000)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)).startswith(b"HTTP/1.1 201")
        await closing
    finally:
        kept.close()
        writer.close()
        closing.cancel()


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """An answer's head and its body (of the length it says)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head, await asyncio.wait_for(reader.readexactly(length), HANG)


# --- every listener of a real node process -----------------------------------------------------------------

UNHEARD = [sys.executable, str(Path(__file__).parents[1] / "support" / "unheard_node.py")]
BOTH = (b"S3 PUT /{tail}", b"web POST /fn/{name}/{path}")  # the requests under way, as the stop names them


def _listening_node(tmp_path: Path) -> tuple[NodeProcess, int, int, dict]:
    """A node with a web listener serving `echo` (cgi.wasm: its body answered back) and an S3 listener with a bucket
    `bkt`: (the node, the web port, the S3 port, an S3 key)."""
    web_port, s3_port = free_port(), free_port()
    node = NodeProcess(tmp_path / "node", free_port(), env={**NODE_ENV, "XSC_NODE_WEB_LISTEN": f"127.0.0.1:{web_port}",
                                                             "XSC_NODE_S3_LISTEN": f"127.0.0.1:{s3_port}"}).start()
    assert node.xsc("compute", "serve", "echo", str(WASM / "cgi.wasm")).returncode == 0
    key = create_key(node.data_dir)
    assert _s3(http.client.HTTPConnection("127.0.0.1", s3_port, timeout=60), s3_port, key, "PUT", "/bkt")[0] == 200
    return node, web_port, s3_port, key


def _begun(port: int, method: str, path: str, headers: dict[str, str], first: bytes) -> http.client.HTTPConnection:
    """A request whose head and the first part of its body are sent, the rest not yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(first)
    return conn


def _s3_put(node: NodeProcess, port: int, key: dict, body: bytes) -> http.client.HTTPConnection:
    """A PutObject of `body` half sent, once the node has begun storing it (its room reserved)."""
    headers = sign_headers("PUT", f"http://127.0.0.1:{port}/bkt/o", key, {"Content-Length": str(len(body))})
    conn = _begun(port, "PUT", "/bkt/o", headers, body[:len(body) // 2])
    eventually(lambda: reserved(node) > 0, "the node to begin storing the upload", 60)
    return conn


def _s3(conn: http.client.HTTPConnection, port: int, key: dict, method: str, path: str,
        body: bytes = b"") -> tuple[int, bytes]:
    return signed_exchange(conn, f"http://127.0.0.1:{port}", key, method, path, body)


def _web_post(port: int, body: bytes) -> http.client.HTTPConnection:
    """A request to `echo` whose body is half sent."""
    return _begun(port, "POST", "/fn/echo/up", {"Content-Length": str(len(body))}, body[:len(body) // 2])


def _waiting_for_both(node: NodeProcess) -> bool:
    """The stop says it waits for the web function's request and the S3 put."""
    return any(b"stopping: waiting for 2 requests in flight (" in line and all(kind in line for kind in BOTH)
               for line in node.log.read_bytes().splitlines())


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.timeout(180)
def test_a_stop_lets_web_and_s3_requests_under_way_end_and_refuses_new_ones_on_open_connections(tmp_path) -> None:
    node, web_port, s3_port, key = _listening_node(tmp_path)
    # a connection of each listener kept open after a first request
    user_kept, user = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60), _user(node)
    user_kept.request("GET", "/v1/node/status", headers=user)
    assert user_kept.getresponse().read() and user_kept.sock is not None
    web_kept = http.client.HTTPConnection("127.0.0.1", web_port, timeout=60)
    web_kept.request("GET", "/fn/echo/first")
    first = web_kept.getresponse()
    assert first.status == 200 and first.read()
    s3_kept = http.client.HTTPConnection("127.0.0.1", s3_port, timeout=60)
    assert _s3(s3_kept, s3_port, key, "PUT", "/bkt/before", b"before") == (200, b"")
    posted, put = os.urandom(256 * 1024), os.urandom(1024 * 1024)
    web_call, s3_call = _web_post(web_port, posted), _s3_put(node, s3_port, key, put)

    node.send(signal.SIGINT)
    eventually(lambda: _waiting_for_both(node), "the stop to wait for both requests under way")
    assert _refused(web_port) and _refused(s3_port)  # they listen no more
    user_kept.request("POST", "/v1/store/files?name=during", body=b"during", headers=user)
    _refused_as_stopping(user_kept.getresponse())
    web_kept.request("GET", "/fn/echo/again")
    _refused_as_stopping(web_kept.getresponse())
    refused, error = signed_answer(s3_kept, f"http://127.0.0.1:{s3_port}", key, "PUT", "/bkt/during", b"during")
    assert refused.status == 503 and b"<Code>ServiceUnavailable</Code>" in error, error
    assert b"this node is stopping" in error and _told_to_come_back(refused)
    web_call.send(posted[len(posted) // 2:])  # the rest of their bodies: both are answered whole
    answered = web_call.getresponse()
    assert answered.status == 200 and answered.read().endswith(posted)
    s3_call.send(put[len(put) // 2:])
    stored = s3_call.getresponse()
    assert stored.status == 200, stored.read()
    assert stored.getheader("ETag") == f'"{hashlib.md5(put).hexdigest()}"'
    assert node.proc.wait(60) == 0
    assert b"Traceback" not in node.log.read_bytes()

    node.start()
    s3 = http.client.HTTPConnection("127.0.0.1", s3_port, timeout=60)
    assert _s3(s3, s3_port, key, "GET", "/bkt/o") == (200, put)
    assert _s3(s3, s3_port, key, "GET", "/bkt/before") == (200, b"before")
    assert _s3(s3, s3_port, key, "GET", "/bkt/during")[0] == 404  # refused, not stored
    assert b"during" not in node.xsc("store", "ls").stdout
    node.stop()


def _user(node: NodeProcess) -> dict[str, str]:
    """The headers of a request of the node's user (its API token)."""
    return {"Authorization": f"Bearer {(node.data_dir / TOKEN_FILE).read_text().strip()}"}


def _told_to_come_back(refused: http.client.HTTPResponse) -> bool:
    """A stopping server's refusal: try again later, on a connection of its own."""
    return int(refused.getheader("Retry-After", "0")) > 0 and refused.getheader("Connection") == "close"


def _refused_as_stopping(refused: http.client.HTTPResponse) -> None:
    problem = json.loads(refused.read())
    assert refused.status == 503 and refused.getheader("Content-Type").startswith("application/problem+json")
    assert problem["code"] == "node-stopping" and problem["detail"].startswith("this node is stopping"), problem
    assert _told_to_come_back(refused), refused.headers


@pytest.mark.timeout(180)
def test_a_second_signal_cuts_short_the_web_and_s3_requests_under_way(tmp_path) -> None:
    node, web_port, s3_port, key = _listening_node(tmp_path)
    posted, put = os.urandom(256 * 1024), os.urandom(1024 * 1024)
    web_call, s3_call = _web_post(web_port, posted), _s3_put(node, s3_port, key, put)
    node.send(signal.SIGINT)
    eventually(lambda: _waiting_for_both(node), "the stop to wait for both requests under way")
    assert node.stop(signal.SIGINT, timeout=20) == 0  # (a deadline against a hang: unforced, it would wait 30 s)
    for cut in (web_call, s3_call):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            cut.getresponse()  # cut short, unanswered
    log = node.log.read_bytes()
    assert b"stopping: cutting short 2 requests in flight" in log and b"Traceback" not in log


def test_a_second_signal_cuts_short_the_wait_for_the_peers_to_hear_the_node_leaves(tmp_path) -> None:
    node = NodeProcess(tmp_path / "node", free_port(), launcher=UNHEARD).start()
    node.send(signal.SIGINT)
    eventually(lambda: b"leaving: the peers do not answer" in node.log.read_bytes(), "the stop to tell the peers")
    assert node.stop(signal.SIGINT, timeout=30) == 0  # (a deadline against a hang: unforced, it would wait an hour)
    log = node.log.read_bytes()
    assert b"stopping: no longer waiting for the peers to hear this node leaves" in log and b"Traceback" not in log


def _quoting_after_the_leave(node) -> asyncio.Event:
    """Each put's quote on `node` waits for its stop to have begun (its market left); the event is set as one
    waits."""
    storage, market, quoting = node.app[NODE].storage, node.app[NODE].market, asyncio.Event()
    quote = storage.quote

    async def after_the_leave(*args, **kwargs):
        quoting.set()
        await eventually_async(lambda: market.leaving, "the stop to begin")
        return await quote(*args, **kwargs)

    storage.quote = after_the_leave
    return quoting


async def test_a_put_admitted_before_the_stop_is_stored_though_its_quote_comes_after_the_leave(node_factory) -> None:
    """The node's own offer, withdrawn from its peers as the stop begins, is still there for the put."""
    node = await node_factory()
    quoting = _quoting_after_the_leave(node)
    data = os.urandom(100_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.server.port)
    writer.write(f"POST /v1/store/files HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {node.app[TOKEN]}\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    await asyncio.wait_for(quoting.wait(), HANG)
    closing = asyncio.ensure_future(close_node(node))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
        assert head.startswith(b"HTTP/1.1 201"), head + await reader.read(2000)
        await closing
    finally:
        writer.close()
        closing.cancel()


async def test_an_s3_put_admitted_before_the_stop_is_stored_though_its_quote_comes_after_the_leave(
        node_factory) -> None:
    port = free_port()
    node = await node_factory(node={"s3_listen": f"127.0.0.1:{port}"})
    key = await asyncio.to_thread(create_key, node.app[CONFIG].data_dir)
    assert (await asyncio.to_thread(_s3, http.client.HTTPConnection("127.0.0.1", port, timeout=60), port, key, "PUT",
                                    "/bkt"))[0] == 200
    quoting = _quoting_after_the_leave(node)
    data = os.urandom(100_000)
    put = asyncio.ensure_future(asyncio.to_thread(
        _s3, http.client.HTTPConnection("127.0.0.1", port, timeout=60), port, key, "PUT", "/bkt/o", data))
    await asyncio.wait_for(quoting.wait(), HANG)
    closing = asyncio.ensure_future(close_node(node))
    try:
        assert await asyncio.wait_for(put, HANG) == (200, b"")
        await closing
    finally:
        closing.cancel()

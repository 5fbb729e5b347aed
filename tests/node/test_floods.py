"""Idle sockets, slowloris heads, bodies that stop, and floods with the user's token and one peer key, against
a real node process (bench/bench_floods.py with small numbers): the bounds that are not timings hold."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import signal
import socket

import pytest
from aiohttp import web

from bench import bench_floods
from xsc.devnet import HOST, NodeProcess, free_port
from xsc.net import sniff
from xsc.identity import Identity
from xsc.net import tls
from xsc.net.sniff import MAX_HANDSHAKES, MAX_PENDING, MAX_READING
from xsc.net.addresses import address_key, network_key
from xsc.node import limits
from xsc.node.appkeys import TOKEN
from xsc.serve import connections, listener
from xsc.serve.listener import GuardedNodeRunner, NodeSite
from xsc.serve.connections import ACCEPT_QUEUE, LISTEN_BACKLOG, RESERVED_FDS, GuardedRunner, connection_cap

from tests.support.waiting import eventually_async

CAP, PER_IP = 64, 48
# A flood of 300 meets 429s once it outruns the rate past its burst (twice the rate): at 25 a second, any flood faster
# than 30 requests a second does, however busy the machine; and the burst alone lets 50 through.
ENV = {"XSC_NODE_MAX_CONNECTIONS": str(CAP), "XSC_NODE_MAX_CONNECTIONS_PER_IP": str(PER_IP),
       "XSC_NODE_IDLE_TIMEOUT": "2", "XSC_NODE_USER_RATE_LIMIT": "25", "XSC_PEERS_RATE_LIMIT": "25"}
RSS_BOUND = 200 * 2**20  # anonymous memory of the node at any moment (about 45 MiB idle)
pytestmark = pytest.mark.both_loops


@pytest.mark.slow
def test_idle_sockets_slow_bodies_and_floods_leave_the_node_bounded_and_answering(tmp_path):
    # Each phase held twice the idle timeout: the slowloris sockets still trickle when the node closes them.
    figures = bench_floods.run(tmp_path, idle=300, slow=20, requests=300, seconds=2,
                               env={**ENV, "XSC_NODE_IDLE_TIMEOUT": "1"}, grace=20)
    summary = figures.summary()
    text = bench_floods.report(figures)
    assert figures.counts["after"]["node_alive"], text
    assert all(s.health_status == 200 for s in figures.samples), text  # /health answered throughout
    assert max(s.anonymous for s in figures.samples) < RSS_BOUND, text
    # The node's descriptors: its own handful (LevelDB, logs, the listening socket), at most CAP connections, one
    # per connection waiting for its first byte, and a burst's connections accepted but not yet refused or evicted
    # (one loop turn accepts at most the listen backlog: RESERVED_FDS leaves room for them, so the node never meets
    # EMFILE).
    assert summary["idle"]["fds_max"] <= CAP + MAX_PENDING + MAX_READING + LISTEN_BACKLOG + 40, text
    assert LISTEN_BACKLOG + MAX_PENDING + MAX_READING + MAX_HANDSHAKES < RESERVED_FDS
    idle = figures.counts["idle"]
    assert idle["opened"] == 350 and idle["connect_failed"] == 0, text
    # Every idle and slowloris socket was closed by the node: evicted to make room, or after the idle timeout.
    assert idle["idle_closed_by_node"] == 300 and idle["slowloris_closed_by_node"] == 50, text
    for flood in ("user_flood", "peer_flood"):
        counts = figures.counts[flood]
        assert counts["answers"].get("429", 0) > 0 and counts["answers"].get("200", 0) >= 50, text
        assert counts["429_has_retry_after"] and counts["429_has_problem_body"], text
        assert set(counts["answers"]) <= {"200", "429"}, text


@pytest.mark.slow
def test_past_the_cap_with_every_connection_busy_a_new_one_gets_503_and_a_problem(tmp_path):
    node = NodeProcess(tmp_path / "node", env={**ENV, "XSC_NODE_IDLE_TIMEOUT": "30"},
                       log=tmp_path / "node.log").start(timeout=60)
    token = (tmp_path / "node" / "api-token").read_text().strip()
    busy = []
    try:
        for _ in range(PER_IP):  # requests in progress: their bodies never finish
            sock = socket.create_connection((HOST, node.port), timeout=10, source_address=(bench_floods.ATTACKER, 0))
            sock.sendall(f"POST /v1/compute/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode())
            busy.append(sock)
        extra = socket.create_connection((HOST, node.port), timeout=10, source_address=(bench_floods.ATTACKER, 0))
        answer = b""
        while chunk := extra.recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head, answer
        problem = json.loads(body)
        assert problem["code"] == "too-many-connections" and f"at most {PER_IP}" in problem["detail"], problem
        assert node.alive()
        limits = next(line for line in open(f"/proc/{node.pid}/limits") if line.startswith("Max open files"))
        soft, hard = limits.split()[3:5]
        assert soft == hard, limits  # raised to the hard limit at start
    finally:
        for sock in busy:
            sock.close()
        node.stop()


@pytest.mark.slow
def test_a_burst_of_connects_waits_in_the_kernel_queue_while_the_node_is_busy(tmp_path):
    # With the node's loop held (SIGSTOP), only the kernel completes connects, until its queue is full; past that,
    # SYNs are dropped and a connect waits for the client's retries (1 s, 3 s, ...).  The queue is ACCEPT_QUEUE
    # long, not the LISTEN_BACKLOG connections asyncio takes per loop turn: more than that many connect at once.
    node = NodeProcess(tmp_path / "node", env=ENV, log=tmp_path / "node.log").start(timeout=60)
    burst = []
    try:
        os.kill(node.pid, signal.SIGSTOP)
        try:
            for _ in range(LISTEN_BACKLOG + 150):
                burst.append(socket.create_connection((HOST, node.port), timeout=5))  # a dropped SYN: timeout
        finally:
            os.kill(node.pid, signal.SIGCONT)
            for sock in burst:
                sock.close()
        assert len(burst) == LISTEN_BACKLOG + 150 < ACCEPT_QUEUE
        assert node.health(timeout=30) is not None  # and it serves the queue once it runs again
    finally:
        node.stop()


def test_the_connection_cap_stays_under_the_open_files_limit():
    assert connection_cap(2048, 1024) == 1024 - RESERVED_FDS  # past it the node would meet EMFILE
    assert connection_cap(2048, 1 << 20) == 2048
    assert connection_cap(2048, 100) == 16  # a floor, so that a tiny limit still serves someone


async def _raw(port: int, head: str, body: bytes) -> bytes:
    """Send a request head and part of its body, then wait (sending nothing more) for the node's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 30)
    finally:
        writer.close()


async def test_a_small_body_that_stops_midway_is_answered_408(node, monkeypatch):
    monkeypatch.setattr(limits, "BODY_SECONDS", 0.3)
    answer = await _raw(node.port, f"POST /v1/compute/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{node.app[TOKEN]}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
                        b'{"module": ')
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["code"] == "body-timeout"


async def test_a_put_whose_body_stalls_fails_after_the_idle_timeout(node_factory):
    node = await node_factory(node={"listen": f"127.0.0.1:{free_port()}", "idle_timeout": 1})
    answer = await _raw(node.port, f"POST /v1/store/files?name=stalled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                   f"{node.app[TOKEN]}\r\nContent-Length: 5000000\r\n\r\n", os.urandom(100_000))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["code"] == "body-timeout" and not (await (await node.get("/v1/store/files")).json())["files"]


async def test_a_connection_that_speaks_at_once_is_sniffed_without_pushing_out_those_still_silent(node, monkeypatch):
    """A client that has sent its request by the time the node accepts it (any HTTP client, and every connection
    of a burst) is handed on at once: it never waits among the connections still silent, so a burst of them does
    not settle those (a TLS peer whose ClientHello is on its way) before their first byte."""
    monkeypatch.setattr(sniff, "PEEK_TIMEOUT", 60.0)  # the silent ones wait for the whole test, however slow the box
    sniffing = node.server.runner.server.sniffing
    silent = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(MAX_PENDING)]
    speaking = []
    try:
        await eventually_async(lambda: len(sniffing) == MAX_PENDING, "the silent connections to be sniffed", 10)
        waiting = set(sniffing)
        assert len(waiting) == MAX_PENDING
        for _ in range(3 * MAX_PENDING):  # connected and sent before the loop runs again: here when accepted
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            speaking.append(sock)
        answers = await asyncio.gather(*(_read_all(sock) for sock in speaking))
        assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), answers
        assert set(sniffing) == waiting  # the silent ones still wait for their first byte
    finally:
        for sock in silent + speaking:
            sock.close()


async def _read_all(sock: socket.socket) -> bytes:
    """Everything the node sends on `sock` until it closes it (read by this loop: the node runs in it)."""
    sock.setblocking(False)
    answer = b""
    while chunk := await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), 30):
        answer += chunk
    return answer


async def test_a_connection_past_the_caps_is_answered_503_on_its_bare_socket(monkeypatch):
    """The node's own accepting (NodeSite): a connection past the caps gets its 503 without a transport or a
    protocol being made for it (a burst of refusals costs the loop little); the others are served as before,
    and the site's stop closes the port."""
    made = _count_protocols(monkeypatch)

    async def slow(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    runner, site, port = await _site("POST", "/slow", slow, max_per_ip=3)
    loop = asyncio.get_running_loop()
    busy = []
    try:
        for _ in range(3):  # requests in progress: the per-address cap, with nothing idle to make room
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n12345")
            busy.append((reader, writer))
        await eventually_async(lambda: runner.server.inner.open >= 3, "three requests in progress", 10, poll=0.01)
        refused = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        answers = await asyncio.gather(*(_read_all(sock) for sock in refused))
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head, answer
            assert json.loads(body)["code"] == "too-many-connections"
        assert len(made) == 3 and runner.server.inner.refused == 20
        for reader, writer in busy:  # the refusals cost the requests in progress nothing
            writer.write(b"67890")
            assert (await asyncio.wait_for(reader.read(), 30)).endswith(b"\r\n\r\n10")
        await site.stop()
        with pytest.raises(OSError):
            await loop.sock_connect(socket.socket(), ("127.0.0.1", port))
    finally:
        for _, writer in busy:
            writer.close()
        await runner.cleanup()


async def test_a_connection_that_speaks_is_set_up_before_those_still_silent_which_count_against_the_caps(
        monkeypatch):
    """In a burst, NodeSite sets up a connection whose request is there when it is accepted at once; silent ones
    wait (a burst of them set up first made a monitor's request wait for all of them), counted against the caps
    meanwhile, and the site's stop closes them."""
    monkeypatch.setattr(listener, "SILENT_DELAY", 60.0)  # the silent ones wait for the whole test,
    monkeypatch.setattr(listener, "SILENT_BURST", 0)  # as in a burst
    made = _count_protocols(monkeypatch)
    runner, site, port = await _site("GET", "/hello", _hello, max_per_ip=4)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    others = []
    try:
        await eventually_async(lambda: site.silent == 3, "the three silent connections to be admitted", 10, poll=0.01)
        speaking = socket.create_connection(("127.0.0.1", port))
        speaking.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        others.append(speaking)
        answer = await _read_all(speaking)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer
        assert len(made) == 1  # only the one that spoke was set up
        others.append(socket.create_connection(("127.0.0.1", port)))  # a fourth silent one: within the cap
        refused = socket.create_connection(("127.0.0.1", port))
        others.append(refused)
        head = (await _read_all(refused)).partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 503"), head  # the four waiting count against the cap of 4
        await site.stop()
        for sock in silent:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed by the stop, never set up
        assert len(made) == 1
    finally:
        for sock in silent + others:
            sock.close()
        await runner.cleanup()


async def test_a_connection_being_handed_on_counts_against_its_address_s_cap():
    """A connection that spoke is handed to aiohttp over a loop turn or two, and aiohttp counts it only then: a
    connection accepted with it, in the same loop turn, finds it counted all the same."""
    runner, site, port = await _site("GET", "/hello", _hello, max_per_ip=1)
    speaking = socket.create_connection(("127.0.0.1", port))
    speaking.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # (kept alive: it holds the address's one place)
    silent = socket.create_connection(("127.0.0.1", port))  # both accepted in the node's next loop turn
    try:
        head, _, body = (await _read_all(silent)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == "too-many-connections", head
    finally:
        speaking.close()
        silent.close()
        await site.stop()
        await runner.cleanup()


async def test_tls_handshakes_under_way_count_against_the_caps_and_the_oldest_past_the_bound_is_cut(
        tmp_path, monkeypatch):
    """A connection that sends a ClientHello's first byte and no more holds a descriptor through its handshake, before
    aiohttp counts it: it counts against its address's cap meanwhile, and past MAX_HANDSHAKES the oldest is cut, so
    a stranger's stalled handshakes cannot hold descriptors past the connection caps.  A peer's handshake then
    goes through."""
    runner, site, port = await _site("GET", "/hello", _hello, max_per_ip=4, tls_dir=tmp_path)
    server = runner.server
    stalled = []
    try:
        for _ in range(4):
            stalled.append(socket.create_connection(("127.0.0.1", port)))
            stalled[-1].sendall(b"\x16")
            await eventually_async(lambda: len(server.handshaking) == len(stalled), "the handshake to begin", 10,
                                   poll=0.01)
        refused = socket.create_connection(("127.0.0.1", port))
        stalled.append(refused)
        head, _, body = (await _read_all(refused)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == "too-many-connections", head
        monkeypatch.setattr(sniff, "MAX_HANDSHAKES", 3)  # one more begun: the oldest is cut
        server.inner.max_per_ip = 16  # (room for one more from this address, as from another)
        oldest = stalled[0]
        stalled.append(socket.create_connection(("127.0.0.1", port)))
        stalled[-1].sendall(b"\x16")
        assert await _read_all(oldest) == b""
        await eventually_async(lambda: len(server.handshaking) == 3, "the oldest handshake to be cut", 10, poll=0.01)
        for sock in stalled:
            sock.close()
        await eventually_async(lambda: not server.handshaking, "the stalled handshakes to end", 10, poll=0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls.client_context(None))
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"hello")
        writer.close()
    finally:
        for sock in stalled:
            sock.close()
        await runner.cleanup()


async def test_a_connection_refused_past_the_caps_where_the_loop_accepts_is_answered_503_with_nothing_logged(
        caplog, collector_paused):
    """The web functions' and S3 listeners let the loop accept, and refuse a connection past their caps once
    aiohttp has it: it is answered 503, and its handler's task ends without an error logged."""
    app = web.Application()
    app.router.add_route("GET", "/hello", _hello)
    runner = GuardedRunner(app, max_connections=64, max_per_ip=1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    kept = socket.create_connection(("127.0.0.1", port))
    refused = socket.create_connection(("127.0.0.1", port))
    try:
        kept.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # (kept alive: it holds the address's one place)
        head, _, body = (await _read_all(refused)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == "too-many-connections", head
        await eventually_async(lambda: len(_handler_tasks()) == 1, "the refused connection's handler to end", 10,
                               poll=0.01)
        gc.collect()  # (a task that failed logs it as it is collected)
        assert "Task exception was never retrieved" not in caplog.text, caplog.text
    finally:
        kept.close()
        refused.close()
        await site.stop()
        await runner.cleanup()


def _handler_tasks() -> list[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "RequestHandler.start"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_ipv6_connections_are_capped_per_64_as_the_rate_limits_key_them():
    """One host holds a whole IPv6 /64: capped per address, it would open max_per_ip connections from each of its
    2^64 addresses.  A real listener on ::1 holds two requests in progress from ::1; a connection from ::2 (the
    same /64) finds the cap reached, one from another /64 does not."""
    async def slow(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    runner, site, port = await _site("POST", "/slow", slow, max_per_ip=2, host="::1")
    busy = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("::1", port)
            writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\n12345")
            busy.append((reader, writer))
        await eventually_async(lambda: runner.server.inner.open >= 2, "two requests in progress", 10, poll=0.01)
        with socket.create_connection(("::1", port)) as refused:
            head, _, body = (await _read_all(refused)).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and "(an IPv6 /64)" in json.loads(body)["detail"], body
        guarded = runner.server.inner
        assert guarded.refusal("::2") is not None and guarded.refusal("0:0:0:0:ffff::9") is not None
        assert guarded.refusal("2001:db8::1") is None and guarded.refusal("::1:0:0:0:1") is None
        for reader, writer in busy:
            writer.write(b"67890")
            assert (await asyncio.wait_for(reader.read(), 30)).endswith(b"\r\n\r\n10")
    finally:
        for _, writer in busy:
            writer.close()
        await site.stop()
        await runner.cleanup()


async def test_a_flood_past_the_node_s_cap_does_not_lock_its_user_out(monkeypatch):
    """Strangers from 12 addresses keep more connections open than the node's cap, each just answered (idle for
    less than no connection of theirs may close another's: EVICTABLE_AFTER, made long here so that none is, however
    slow the machine): the user's own, from the loopback address its API is reached at, closes the longest idle of
    theirs and is served."""
    monkeypatch.setattr(connections, "EVICTABLE_AFTER", 3600.0)
    runner, site, port = await _site("GET", "/hello", _hello, max_per_ip=8, max_connections=64)
    strangers, answers = [], []
    try:
        for n in range(12 * 8):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{2 + n % 12}", 0))
            strangers.append(writer)
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # and kept open
            answers.append((await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).split(b" ", 2)[1])
        assert answers.count(b"200") == 64 and answers.count(b"503") == 32, answers
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
        strangers.append(writer)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 30)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer
        assert runner.server.inner.evicted == 1
    finally:
        for writer in strangers:
            writer.close()
        await runner.cleanup()


def _count_protocols(monkeypatch) -> list:
    """aiohttp's protocols of every connection the node set up (SniffingServer.handler), as they come."""
    made: list = []
    handler = sniff.SniffingServer.handler
    monkeypatch.setattr(sniff.SniffingServer, "handler", lambda self: made.append(handler(self)) or made[-1])
    return made


async def _site(method: str, path: str, handler, max_per_ip: int, host: str = "127.0.0.1",
                tls_dir=None, max_connections: int = 64) -> tuple[web.AppRunner, NodeSite, int]:
    """A NodeSite on a free port for an app of one route, under the node's connection caps (answering TLS too with a
    node key's certificate, kept in `tls_dir`)."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    if tls_dir is not None:
        app[listener.TLS_CONTEXT] = tls.server_context(Identity.generate(), tls_dir)
    runner = GuardedNodeRunner(app, max_connections=max_connections, max_per_ip=max_per_ip)
    await runner.setup()
    port = free_port()
    site = NodeSite(runner, host, port)
    await site.start()
    return runner, site, port


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


class _OutOfDescriptorsOnce:
    """A listening socket whose next accept fails as at the open-files limit (EMFILE), then accepts as before."""

    def __init__(self, listening: socket.socket) -> None:
        self.listening, self.failed = listening, False

    def accept(self):
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return self.listening.accept()

    def close(self) -> None:
        self.listening.close()


async def test_out_of_descriptors_the_site_pauses_accepting_logs_it_and_serves_the_waiting_connection(caplog):
    runner, site, port = await _site("GET", "/hello", _hello, max_per_ip=4)
    try:
        [fd] = site._listening
        site._listening[fd] = _OutOfDescriptorsOnce(site._listening[fd])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await _read_all(sock)  # waited in the kernel's queue through the pause, then served
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer
        assert site._listening[fd].failed
        assert any("cannot accept connections" in r.getMessage() and "open-files limit" in r.getMessage()
                   for r in caplog.records)
    finally:
        await site.stop()
        await runner.cleanup()


def test_a_caller_is_rate_limited_by_its_ipv4_address_or_its_ipv6_64():
    """A host is given an IPv6 /64: keyed by its whole address, it would send each request from a fresh one with
    a full bucket (and push every other caller's out of the table).  IPv4 callers of a dual-stack listener, seen
    at IPv4-mapped addresses, keep a bucket each."""
    key = address_key
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:bbbb:cccc:dddd:9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:127.0.0.1") == "127.0.0.1" != key("::ffff:127.0.0.2")
    assert key("127.0.0.1") == "127.0.0.1" and key(None) == "?"
    assert key("[2001:db8:1:2::1]") == key("2001:db8:1:2::1%eth0") == "2001:db8:1:2::/64"  # a URL's host, a zone
    assert key(key("2001:db8:1:2::1")) == "2001:db8:1:2::/64"  # a key keys itself
    limiter = limits.RateLimiter(1, 2)
    for n in range(2):
        limiter.check(key(f"2001:db8:1:2::{n + 1:x}"), 0.0, "an address")
    with pytest.raises(limits.QuotaExceeded):
        limiter.check(key("2001:db8:1:2::ffff"), 0.0, "a fresh address of the same /64")


def test_a_network_is_an_ipv4_24_or_an_ipv6_64():
    """What the node ids of one network may hold together is counted by its /24 (IPv4) or /64 (IPv6); a host of
    this node's own site (a private or loopback address) by its address."""
    assert network_key("8.8.4.7") == network_key("::ffff:8.8.4.250") == "8.8.4.0/24"
    assert network_key("8.8.5.7") != network_key("8.8.4.7")
    assert network_key("10.0.0.7") == "10.0.0.7" != network_key("10.0.0.8")
    assert network_key("127.0.0.1") == "127.0.0.1"
    assert network_key("[2001:db8:1:2::1]") == network_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network_key(None) == "?"


def test_fresh_keys_refused_at_once_are_forgotten_as_the_table_fills():
    """A cost above the burst is refused even to a fresh key (a setting below the largest message's cost): each
    key so refused is remembered within MAX_KEYS, as a key served is."""
    limiter = limits.RateLimiter(1, 2)
    for n in range(limits.MAX_KEYS + 500):
        with pytest.raises(limits.QuotaExceeded):
            limiter.check(f"stranger-{n}", 0.0, "a stranger", cost=3)
    assert len(limiter) == limits.MAX_KEYS

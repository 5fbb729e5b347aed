"""The node's runner: its one port answers TLS (peers) and plain HTTP (the user: the CLI, the S3 front, the browser).

The connection sniffing is xsc/net/sniff.py; here it is put under aiohttp's runner (every site of the
runner then sniffs: NodeSite, which accepts itself, and aiohttp's own, the tests' TestServer), and `TlsOnlySite`
is a listener that speaks TLS only (`node.peer_listen`).  Whether a plaintext connection may carry peer requests is the signature
middleware's decision (`peer_auth.require_tls`), by path and remote address."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections import Counter, deque
from typing import Any

from aiohttp import web

from ..net.addresses import address_key
from ..net.congestion import choose as choose_congestion
from ..net.sniff import SniffingServer
from .connections import ACCEPT_QUEUE, LISTEN_BACKLOG, GuardedRunner, ProblemRunner
from .stop import Draining

TLS_CONTEXT = web.AppKey("tls_context", ssl.SSLContext)  # the peer listener's TLS: the node key's certificate
TLS_SERVED = web.AppKey("tls_served", bool)  # set by NodeRunner: its port answers TLS, so peers get https://

log = logging.getLogger(__name__)

SILENT_DELAY = 0.02  # seconds a connection silent when accepted waits before it is set up
SILENT_BATCH = 16  # silent connections set up per loop turn
SILENT_BURST = 16  # connections accepted in one loop turn, or silent ones waiting, that make a burst


class _Sniffing(Draining):
    """Makes an AppRunner's sites answer TLS (peers) and plain HTTP (the user) on one port, and its cleanup the
    node's stop (stop.py) before aiohttp's own."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        app[TLS_SERVED] = True  # before startup: the node advertises https:// to its peers

    async def _make_server(self) -> Any:
        server = await super()._make_server()  # type: ignore[misc]
        return SniffingServer(server, self.app.get(TLS_CONTEXT))


class NodeRunner(_Sniffing, ProblemRunner):
    """aiohttp's AppRunner, TLS and plain HTTP on one port (in-process test nodes)."""


class GuardedNodeRunner(_Sniffing, GuardedRunner):
    """The node's runner (`xsc node start`): connection caps (connections.py), TLS and plain HTTP on one port; its
    user's connections are not locked out by strangers' (`user_room`)."""

    user_room = True


class NodeSite(web.TCPSite):
    """The node's port.  Its kernel queue is ACCEPT_QUEUE long, so that a burst of connects waits in it rather
    than having its SYNs dropped (a client retries a dropped SYN after 1 s: a monitor's fresh connection behind
    a burst of 2,000 idle connects took 1.1 s).  The node accepts from it itself, at most LISTEN_BACKLOG per loop
    turn, in place of asyncio: a connection past the caps (connections.py) is answered 503 and closed on its bare
    socket, with no transport or protocol made for it (through asyncio, each refusal cost ~100 µs of the loop:
    a monitor's connection behind 2,000 refused ones waited 200 ms in the queue).  A connection that has sent
    its first bytes by the time it is accepted (any HTTP client) is set up at once; in a burst (SILENT_BURST
    connections in one loop turn), one still silent waits SILENT_DELAY, and then such connections are set up
    SILENT_BATCH a loop turn (each costs ~250 µs: a burst of silent sockets set up first made a monitor's request
    accepted behind them wait for all of them).  The silent ones waiting count against their address's cap as
    open connections do; against the node's cap they do not (they cannot be closed to make room for another
    address's connection), and at most LISTEN_BACKLOG wait, within RESERVED_FDS."""

    tls_only = False  # (TlsOnlySite)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, congestion: str = "") -> None:
        """`congestion`: the TCP congestion control its connections use (peers.congestion; empty: the host's)."""
        super().__init__(runner, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
        self.congestion = congestion
        self.congestion_in_use: str | None = None  # what the kernel gave its listening socket (None: not TCP)
        self._listening: dict[int, socket.socket] = {}  # the sockets it accepts on (duplicates of the loop's), by fd
        self._silent: deque[tuple[socket.socket, str]] = deque()  # admitted, no byte yet, not set up yet
        self._waiting: Counter[str] = Counter()  # of them, per client address
        self._draining = False

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        # The loop's server only binds (it never serves): the site accepts from a socket of its own, the same on
        # asyncio's loop and on uvloop, whose listening sockets cannot be read by anyone else.
        self._server = await loop.create_server(self._runner.server, self._host, self._port, reuse_address=True,
                                                backlog=LISTEN_BACKLOG, start_serving=False)
        self._bound_port = self._server.sockets[0].getsockname()[1]
        for sock in self._server.sockets:
            listening = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            listening.setblocking(False)
            listening.listen(ACCEPT_QUEUE)
            self.congestion_in_use = choose_congestion(listening, self.congestion)  # accepted sockets keep it
            self._listening[listening.fileno()] = listening
            loop.add_reader(listening.fileno(), self._accept, listening.fileno())

    @property
    def silent(self) -> int:
        """Connections admitted that have sent no byte yet (set up once they speak, or after SILENT_DELAY)."""
        return len(self._silent)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for fd, listening in self._listening.items():
            loop.remove_reader(fd)
            listening.close()  # (the loop's own socket is closed by aiohttp's stop, below)
        self._listening.clear()
        while self._silent:
            self._silent.popleft()[0].close()
        self._waiting.clear()
        await super().stop()

    def _accept(self, fd: int) -> None:
        listening = self._listening.get(fd)
        if listening is None:
            return
        server = self._runner.server
        assert isinstance(server, SniffingServer)
        loop = asyncio.get_running_loop()
        accepted = 0
        try:
            for accepted in range(LISTEN_BACKLOG):
                try:
                    conn, address = listening.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    return
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        raise
                    # out of descriptors or memory: wait a second, as asyncio does, rather than spin on the queue
                    log.warning("cannot accept connections (%s): accepting again in 1 s; the connections waiting "
                                "stay in the kernel's queue (raise the open-files limit, or lower "
                                "node.max_connections)", exc)
                    loop.remove_reader(fd)
                    loop.call_later(1.0, self._resume, fd)
                    return
                conn.setblocking(False)
                ip = address_key(address[0] if isinstance(address, tuple) else None)
                answer = server.refusal(ip, self._waiting[ip])
                if answer is not None:
                    with contextlib.suppress(OSError):
                        conn.send(answer)  # a few hundred bytes into an empty send buffer: never blocks
                    conn.close()
                    continue
                try:
                    conn.recv(1, socket.MSG_PEEK)
                except BlockingIOError:  # silent so far: set up after those that spoke (at most LISTEN_BACKLOG wait)
                    if len(self._silent) >= LISTEN_BACKLOG:
                        server.accepted(conn, self.tls_only)
                        continue
                    self._silent.append((conn, ip))
                    self._waiting[ip] += 1
                    continue
                except OSError:  # reset already
                    conn.close()
                    continue
                server.accepted(conn, self.tls_only)
        finally:
            if self._silent and not self._draining:
                self._draining = True
                if accepted >= SILENT_BURST or len(self._silent) > SILENT_BURST:
                    loop.call_later(SILENT_DELAY, self._drain)
                else:
                    self._drain()  # no burst: a client whose request is on its way waits for nothing

    def _drain(self) -> None:
        """Hand on SILENT_BATCH of the silent connections waiting; the rest on the next loop turn."""
        for _ in range(min(SILENT_BATCH, len(self._silent))):
            conn, ip = self._silent.popleft()
            self._waiting[ip] -= 1
            if not self._waiting[ip]:
                del self._waiting[ip]
            server = self._runner.server
            assert isinstance(server, SniffingServer)
            server.accepted(conn, self.tls_only)
        if self._silent:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._draining = False

    def _resume(self, fd: int) -> None:
        if fd in self._listening:
            asyncio.get_running_loop().add_reader(fd, self._accept, fd)


class TlsOnlySite(NodeSite):
    """A listener that speaks TLS only (`node.peer_listen`): a plaintext client is cut off unanswered."""

    tls_only = True

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"


__all__ = ["GuardedNodeRunner", "NodeRunner", "TlsOnlySite"]

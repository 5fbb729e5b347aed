"""One port, two protocols: TLS for peers, plain HTTP for the local user (the server side of xsc/net/tls.py).

Every accepted connection is first *peeked at* on its own socket (MSG_PEEK: nothing is consumed), before any
transport is made for it: at once (a client speaks first, and in a burst its first byte has arrived by the time it
is accepted), else when its first byte comes.  A TLS ClientHello starts with the byte 0x16, which no HTTP request
does: such a connection is handed to the loop with the node's TLS context (`connect_accepted_socket`: the loop's
own TLS, a TLS 1.3 handshake with the node's certificate), any other as it is (as Go's cmux and sslh do).  Nothing
is read before the hand-over, so the same holds on asyncio's loop and on uvloop (whose transports start reading
as soon as they are made).  The node's sites accept themselves and hand each connection to `accepted`
(xsc/serve/listener.py); a site of aiohttp's own (the tests' TestServer) is served through `_Adopting`.
This module knows nothing of aiohttp.web: it takes the factory and the context it is given."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import Counter
from typing import Any

from .addresses import address_key

log = logging.getLogger(__name__)

TLS_RECORD_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello
# A TLS client sends its ClientHello at once, and an HTTP client its request: a connection silent this long is plain
# HTTP, handed to aiohttp (whose idle timeout and connection caps then apply, as without sniffing); on a TLS-only
# port it is cut.  As long as a handshake may take: a client's loop on a busy machine can be held up for seconds
# between its connect and its ClientHello, and a ClientHello answered as plain HTTP fails its handshake; the
# connections waiting meanwhile are bounded (MAX_PENDING, MAX_READING), not their wait.
PEEK_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
MAX_PENDING = 12  # the newest connections waiting for their first byte (1 fd each); past it the oldest is pushed
# out to `reading`, where it waits all the same
MAX_READING = 64  # connections pushed out, waiting for their first byte (1 fd each: two peers' bursts of 32); past
# it the oldest is plain HTTP, handed to aiohttp and its caps (a flood of silent connects), so that the descriptors
# of connections not counted by aiohttp stay bounded
# TLS handshakes under way (1 fd each, up to HANDSHAKE_TIMEOUT: aiohttp counts a connection only once it is handed
# over); past it the oldest is cut, most likely a stranger's stalled one (a peer's completes in milliseconds).  They
# count against their address's cap as open connections do (`refusal`).
MAX_HANDSHAKES = 64


class Sniffer:
    """An accepted connection before it is handed to aiohttp: its first byte, peeked at on its own socket (nothing
    is read: the loop's transport, made only once it is settled, reads every byte), says TLS or plain HTTP."""

    def __init__(self, server: "SniffingServer", sock: socket.socket, ip: str, tls_only: bool) -> None:
        self._server = server
        self._sock: socket.socket | None = sock  # ours until the loop takes it (`_connect`)
        self._ip = ip  # its address as the connection caps key it (`address_key`)
        self._tls_only = tls_only
        self._watched = False
        self._timer: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Task | None = None  # its hand-over, held: the loop keeps only weak references
        self._counted = False  # against its address's cap while it is handed over (`SniffingServer.hand_over_begins`)

    def start(self) -> None:
        first = self._peek()
        if first is not None:  # its first byte is here already (a client sends at once and is accepted a moment
            self._settle(first)  # later): settled now, without waiting among `sniffing` or a loop turn more
            return
        if not self._server.admit(self):
            self._close()
            return
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock.fileno(), self._readable)
        self._watched = True
        self._timer = loop.call_later(PEEK_TIMEOUT, self._give_up)

    def _peek(self) -> bytes | None:
        """The connection's first byte, left in place: b"" if it was closed or failed, None if none came yet."""
        assert self._sock is not None
        try:
            return self._sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watched and self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._watched = False
        self._server.release(self)

    def _close(self) -> None:
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        first = self._peek()
        if first is not None:  # (None: a spurious wake-up, it is still watched)
            self._settle(first)

    def _settle(self, first: bytes) -> None:
        self._unwatch()
        if not first:  # closed before saying anything
            self._close()
        elif first[0] == TLS_RECORD_HANDSHAKE and self._server.context is not None:
            self._hand_over(self._server.context)
        elif self._tls_only:
            self._close()  # a TLS-only port says nothing in plaintext
        else:
            self._hand_over(None)

    def _give_up(self) -> None:
        """Silent too long (or too many waiting): plain HTTP on a shared port, cut on a TLS-only one or when the
        listener is closing.  A connection whose first byte is there already (a burst of connects outran the loop's
        wake-ups) is settled by it."""
        if self._sock is None or self._connecting is not None:
            self._server.release(self)
            return
        first = None if self._server.closing else self._peek()
        if first is not None:
            self._settle(first)
        elif self._tls_only or self._server.closing:
            self._close()
        else:
            self._unwatch()
            self._hand_over(None)

    def _hand_over(self, context: ssl.SSLContext | None) -> None:
        self._connecting = asyncio.ensure_future(self._connect(context))
        self._server.hand_over_begins(self, tls=context is not None)

    def _handler(self) -> Any:
        """aiohttp's protocol for this connection, which counts it from its connection_made on: the hand-over's
        count against the caps ends there, neither before (a burst's next connection would find room that is not
        there) nor after (it would be counted twice)."""
        handler = self._server.handler()
        made = handler.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            self._server.hand_over_ended(self)
            made(transport)

        handler.connection_made = connection_made
        return handler

    def _cut(self) -> None:
        """Its handshake took too long among too many: the connection is cut."""
        if self._sock is not None:  # (its hand-over has not begun: the socket is still ours)
            self._sock.close()
            self._sock = None
        if self._connecting is not None:
            self._connecting.cancel()  # the loop closes the connection it was handed

    async def _connect(self, context: ssl.SSLContext | None) -> None:
        """The connection handed to the loop, and through it to aiohttp (after its TLS handshake, under `context`)."""
        sock, self._sock = self._sock, None
        if sock is None:  # cut before its hand-over began
            self._server.hand_over_ended(self)
            return
        try:
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                self._handler, sock, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT if context else None)
        except (OSError, asyncio.TimeoutError) as exc:  # (ssl.SSLError and ConnectionError are OSErrors)
            log.debug("connection lost before it was handed on: %s", exc)
            return
        finally:
            self._server.hand_over_ended(self)
        if self._server.closing:  # accepted before the listener closed, settled after: aiohttp's shutdown is past
            transport.abort()


class _Adopting(asyncio.Protocol):
    """A connection a loop's own server accepted (a site of aiohttp's, such as the tests' TestServer): its socket is
    taken before the transport reads a byte (both asyncio's loop and uvloop start reading once connection_made has
    returned, and not on a transport closed by then), and the transport dropped: the connection is sniffed as one
    the node accepts itself."""

    def __init__(self, server: "SniffingServer") -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            sock = transport.get_extra_info("socket").dup()  # the transport's close leaves this one open
        except (OSError, AttributeError):
            sock = None
        transport.abort()
        if sock is not None:
            sock.setblocking(False)
            self._server.accepted(sock)


class SniffingServer:
    """In front of aiohttp's web.Server: the connections a site accepts (`accepted`) are sniffed here, then handed to
    it (`handler`), through TLS or not; its bounds hold whatever loop the node runs on."""

    def __init__(self, server: Any, context: ssl.SSLContext | None) -> None:
        self.inner = server
        self.context = context
        self.closing = False
        self.sniffing: dict[Sniffer, None] = {}  # connections waiting for their first byte, the newest, oldest first
        self.reading: dict[Sniffer, None] = {}  # older ones pushed out of `sniffing`, waiting all the same (`admit`)
        self.handshaking: dict[Sniffer, str] = {}  # connections in their TLS handshake, oldest first: their addresses
        self._handing_from: Counter[str] = Counter()  # connections being handed to aiohttp (TLS or not), per address

    def __call__(self) -> asyncio.Protocol:
        """The protocol factory of a site that lets the loop accept (aiohttp's own sites: TestServer, TCPSite)."""
        return _Adopting(self)

    def handler(self) -> Any:
        """aiohttp's protocol for a connection handed on (through TLS or not)."""
        return self.inner()

    def accepted(self, sock: socket.socket, tls_only: bool = False) -> None:
        """A connection accepted (its socket non-blocking, now this server's): refused at once past the connection
        caps (`refusal`), else sniffed and handed to aiohttp, through TLS or not; `tls_only`: a plaintext client
        is cut off unanswered."""
        try:
            peer = sock.getpeername()
        except OSError:  # reset already
            sock.close()
            return
        ip = address_key(peer[0] if isinstance(peer, tuple) and peer else None)
        answer = self.refusal(ip)
        if answer is not None:
            with contextlib.suppress(OSError):
                sock.send(answer)  # a few hundred bytes into an empty send buffer: never blocks
            sock.close()
            return
        Sniffer(self, sock, ip, tls_only).start()

    def refusal(self, ip: str, waiting_from_ip: int = 0) -> bytes | None:
        """The answer that refuses a new connection from ip at once, unsniffed (the node's GuardedServer: its
        caps, counting `waiting_from_ip` connections from ip accepted but not set up yet); None: it may be served."""
        refusal = getattr(self.inner, "refusal", None)
        return refusal(ip, waiting_from_ip + self._handing_from[address_key(ip)]) if refusal else None

    def admit(self, sniffer: Sniffer) -> bool:
        """Room for one more connection before its first byte: past MAX_PENDING the oldest waiting one is pushed out
        to `reading` (it is still settled by its first byte), and past MAX_READING of those the oldest is given up."""
        if self.closing:
            return False
        while len(self.sniffing) >= MAX_PENDING:
            oldest = next(iter(self.sniffing))
            del self.sniffing[oldest]
            self.reading_first(oldest)
        self.sniffing[sniffer] = None
        return True

    def reading_first(self, sniffer: Sniffer) -> None:
        """One more connection pushed out of `sniffing`: the oldest past MAX_READING is plain HTTP."""
        self.reading[sniffer] = None
        while len(self.reading) > MAX_READING:
            next(iter(self.reading))._give_up()

    def hand_over_begins(self, sniffer: Sniffer, tls: bool) -> None:
        """One more connection being handed to aiohttp, which counts it only once it is set up (after its TLS
        handshake, up to HANDSHAKE_TIMEOUT): it counts against its address's cap meanwhile.  Past MAX_HANDSHAKES
        TLS handshakes under way, the oldest is cut."""
        self._handing_from[sniffer._ip] += 1
        sniffer._counted = True
        if tls:
            self.handshaking[sniffer] = sniffer._ip
            while len(self.handshaking) > MAX_HANDSHAKES:
                oldest = next(iter(self.handshaking))
                self.hand_over_ended(oldest)
                oldest._cut()

    def hand_over_ended(self, sniffer: Sniffer) -> None:
        self.handshaking.pop(sniffer, None)
        if sniffer._counted:
            sniffer._counted = False
            self._handing_from[sniffer._ip] -= 1
            if not self._handing_from[sniffer._ip]:
                del self._handing_from[sniffer._ip]

    def release(self, sniffer: Sniffer) -> None:
        self.sniffing.pop(sniffer, None)
        self.reading.pop(sniffer, None)

    def pre_shutdown(self) -> None:
        """The listeners are closed: connections still being sniffed are never served (nor those in their handshake,
        once it ends)."""
        self.closing = True
        for sniffer in [*self.sniffing, *self.reading]:
            sniffer._give_up()
        self.inner.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """aiohttp's shutdown (requests in flight finish), then every TLS connection is cut: closing one only
        starts a TLS close that waits for the peer, and until then it could still carry requests in."""
        self.closing = True
        tls = [handler.transport for handler in self.inner.connections
               if handler.transport is not None and handler.transport.get_extra_info("sslcontext") is not None]
        await self.inner.shutdown(timeout)
        for transport in tls:
            # (On Python 3.11.2, Debian 12's, a transport closed twice has let its TLS protocol go, and its abort
            # raises AttributeError: it is closed already.)
            with contextlib.suppress(AttributeError):
                transport.abort()

    def __getattr__(self, name: str) -> Any:  # shutdown, pre_shutdown, connections, ...
        return getattr(self.inner, name)


__all__ = ["MAX_HANDSHAKES", "MAX_PENDING", "MAX_READING", "Sniffer", "SniffingServer"]

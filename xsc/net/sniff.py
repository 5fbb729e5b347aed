"""One port, two protocols: TLS for peers, plain HTTP for the local user (the server side of xsc/net/tls.py).

Every accepted connection is first *peeked at* (MSG_PEEK: nothing is consumed): at once (a client speaks
first, and in a burst its first byte has arrived by the time it is accepted), else when its first byte comes.
A TLS ClientHello starts with the byte 0x16, which no HTTP request does: such a connection gets a TLS 1.3
handshake with the node's certificate, any other is handed on as it is (as Go's cmux and sslh do).  `SniffingServer`
wraps aiohttp's protocol factory (web.Server); xsc/serve/listener.py puts it under the node's runner.
This module knows nothing of aiohttp.web: it takes the factory and the context it is given."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import socket
import ssl
import weakref
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
MAX_PENDING = 12  # connections watched for their first byte (2 fds each); past it the oldest gives back its
# duplicate and waits on its own transport (`_read_first`), so the node's descriptors stay within its connection caps
MAX_READING = 64  # connections pushed out that wait on their transports (1 fd each: two peers' bursts of 32); past
# it the oldest is plain HTTP, handed to aiohttp and its caps (a flood of silent connects)
# TLS handshakes under way (1 fd each, up to HANDSHAKE_TIMEOUT: aiohttp counts a connection only once it is handed
# over); past it the oldest is cut, most likely a stranger's stalled one (a peer's completes in milliseconds).  They
# count against their address's cap as open connections do (`refusal`).
MAX_HANDSHAKES = 64


class Sniffer(asyncio.Protocol):
    """Looks at the first byte of a connection, then hands it to aiohttp, through TLS or not."""

    def __init__(self, server: "SniffingServer", tls_only: bool) -> None:
        self._server = server
        self._context = server.context
        self._tls_only = tls_only
        self._transport: asyncio.Transport | None = None
        self._peer: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._early = bytearray()  # bytes read before the hand-over (the end of a handshake, a request's first)
        self._handler: Any = None
        self._handshake: asyncio.Task | None = None  # held: the loop keeps only weak references to tasks
        self._lost = False
        self._reading = False  # waiting for its first byte on its transport, read rather than peeked at
        self._ip = "?"  # its address as the connection caps key it (`address_key`)

    # --- before the first byte --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()
        peer = transport.get_extra_info("peername")
        self._ip = address_key(peer[0] if isinstance(peer, tuple) and peer else None)
        if self._server.refused(transport):  # past the connection caps: refused at once, unsniffed
            return
        try:
            self._peer = transport.get_extra_info("socket").dup()  # asyncio owns the fd: peek through a duplicate
        except (OSError, AttributeError):
            transport.abort()
            return
        if self._peek() is not None:  # its first byte is here already (a client sends at once and is accepted a
            self._readable()  # moment later): settled now, without waiting among `sniffing` or a loop turn more
            return
        if not self._server.admit(self, transport):
            self._unwatch()
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self._peer.fileno(), self._readable)
        self._timer = loop.call_later(PEEK_TIMEOUT, self._give_up)

    def _peek(self) -> bytes | None:
        """The connection's first byte, left in place: b"" if it was closed or failed, None if none came yet."""
        assert self._peer is not None
        try:
            return self._peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._drop_duplicate()

    def _drop_duplicate(self) -> None:
        if self._peer is not None:
            asyncio.get_running_loop().remove_reader(self._peer.fileno())
            self._peer.close()
            self._peer = None

    def _read_first(self) -> None:
        """Pushed out of the watched ones by newer connections: settled by the byte it has sent by then, else it gives
        back its duplicate descriptor and reads its first bytes off its own transport, up to PEEK_TIMEOUT as before.
        Never called plain HTTP for being pushed out: a peer's burst of connects outruns its ClientHellos on a busy
        machine, and a ClientHello answered in plaintext fails its handshake ("wrong version number")."""
        if self._handshake is not None:
            self._server.release(self)
            return
        if self._peer is not None and not self._lost and self._peek() is not None:
            self._readable()
            return
        self._server.release(self)
        self._drop_duplicate()  # (its timer stays: silent PEEK_TIMEOUT, it is plain HTTP as any other)
        if self._transport is None or self._lost:
            return
        if self._server.closing:
            self._give_up()
            return
        self._reading = True
        self._server.reading_first(self)
        self._transport.resume_reading()

    def _give_up(self) -> None:
        """Silent too long (or too many waiting): plain HTTP on a shared port, cut on a TLS-only one.  A connection
        whose first byte is there already (a burst of connects outran the loop's reads) is settled by it."""
        if self._handshake is not None:  # TLS already: it no longer waits for a byte, its handshake goes on
            self._server.release(self)
            return
        if self._peer is not None and not self._lost and self._peek() is not None:  # (b"": _readable cuts it)
            self._readable()
            return
        self._reading = False
        self._unwatch()
        self._server.release(self)
        if self._transport is None or self._lost:
            return
        if self._tls_only or self._server.closing:
            self._transport.abort()
        else:
            self._hand_over(self._transport)

    def _readable(self) -> None:
        assert self._peer is not None and self._transport is not None
        first = self._peek()
        if first is None:
            return  # spurious wake-up: keep watching
        self._unwatch()
        if not first:  # closed before saying anything
            self._transport.abort()
        elif first[0] == TLS_RECORD_HANDSHAKE and self._context is not None:
            self._begin_tls()
        elif self._tls_only:
            self._transport.abort()  # a TLS-only port says nothing in plaintext
        else:
            self._hand_over(self._transport)

    def _begin_tls(self, first: bytes = b"") -> None:
        """Its handshake, held till done (the loop keeps only weak references to tasks); `first`: bytes read already."""
        assert self._transport is not None and self._context is not None
        self._handshake = asyncio.ensure_future(self._start_tls(self._transport, self._context, first))
        self._server.handshake_begins(self)

    def _cut(self) -> None:
        """Its handshake took too long among too many: the connection is cut (its task then ends as any failed one)."""
        if self._transport is not None:
            self._transport.abort()

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext, first: bytes = b"") -> None:
        loop = asyncio.get_running_loop()
        try:
            if first:
                tls = await _start_tls_after(transport, self, context, first)
            else:
                tls = await loop.start_tls(transport, self, context, server_side=True,
                                           ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            self._server.release(self)
            transport.abort()
            return
        finally:
            self._server.handshake_ended(self)
        if tls is None or self._lost:
            self._server.release(self)
            return
        self._server.tls_connections.add(transport)
        self._hand_over(tls)

    def _hand_over(self, transport: asyncio.Transport) -> None:
        self._server.release(self)
        if self._server.closing:  # accepted before the listener closed, sniffed after: aiohttp's shutdown is past
            transport.abort()
            return
        handler = self._handler = self._server.inner()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._early:
            handler.data_received(bytes(self._early))
            self._early.clear()
        if not self._lost:
            transport.resume_reading()

    # --- the TLS transport may deliver data before it is handed over ---------------------
    def data_received(self, data: bytes) -> None:
        if not self._reading:
            self._early += data
            return
        self._reading = False  # its first bytes (`_read_first`): they settle it
        assert self._transport is not None
        self._transport.pause_reading()
        self._unwatch()
        if data[0] == TLS_RECORD_HANDSHAKE and self._context is not None:
            self._begin_tls(bytes(data))
        elif self._tls_only:
            self._transport.abort()
        else:
            self._early += data
            self._hand_over(self._transport)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._unwatch()
        self._server.release(self)


async def _start_tls_after(transport: asyncio.Transport, protocol: asyncio.Protocol, context: ssl.SSLContext,
                           first: bytes) -> asyncio.Transport:
    """loop.start_tls (server side) on a connection whose first bytes were read already: they go to the TLS layer
    ahead of the rest.  (start_tls itself expects them still in the socket.)"""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = asyncio.sslproto.SSLProtocol(loop, protocol, context, waiter, server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT, call_connection_made=False)
    transport.pause_reading()
    transport.set_protocol(tls)
    tls.connection_made(transport)
    left = memoryview(first)
    while len(left) and not transport.is_closing():
        buffer = tls.get_buffer(len(left))
        taken = min(len(buffer), len(left))
        buffer[:taken] = left[:taken]
        tls.buffer_updated(taken)
        left = left[taken:]
    transport.resume_reading()
    try:
        await waiter
    except BaseException:
        transport.close()
        raise
    return tls._app_transport


class SniffingServer:
    """aiohttp's web.Server (the protocol factory every site uses), making sniffers instead of handlers."""

    def __init__(self, server: Any, context: ssl.SSLContext | None) -> None:
        self.inner = server
        self.context = context
        self.closing = False
        self.sniffing: dict[Sniffer, None] = {}  # connections not handed to aiohttp yet, oldest first
        self.reading: dict[Sniffer, None] = {}  # those pushed out of `sniffing`, reading their first byte (_read_first)
        self.tls_connections: weakref.WeakSet = weakref.WeakSet()  # the TCP transports under TLS connections
        self.handshaking: dict[Sniffer, str] = {}  # connections in their TLS handshake, oldest first: their addresses
        self._handshakes_from: Counter[str] = Counter()  # of them, per address (`address_key`)

    def __call__(self) -> Sniffer:
        return Sniffer(self, tls_only=False)

    def tls_only(self) -> Sniffer:
        return Sniffer(self, tls_only=True)

    def refusal(self, ip: str, waiting_from_ip: int = 0) -> bytes | None:
        """The answer that refuses a new connection from ip at once, unsniffed (the node's GuardedServer: its
        caps, counting `waiting_from_ip` connections from ip accepted but not set up yet); None: it may be served."""
        refusal = getattr(self.inner, "refusal", None)
        return refusal(ip, waiting_from_ip + self._handshakes_from[address_key(ip)]) if refusal else None

    def refused(self, transport: Any) -> bool:
        """Has this connection been refused (`refusal`), its answer written and the transport closed?"""
        peer = transport.get_extra_info("peername")
        answer = self.refusal(peer[0] if isinstance(peer, tuple) and peer else "?")
        if answer is not None:
            transport.write(answer)
            transport.close()
        return answer is not None

    def admit(self, sniffer: Sniffer, transport: asyncio.Transport) -> bool:
        """Room for one more connection before its first byte: the oldest waiting one is settled to make it."""
        if self.closing:
            return False
        while len(self.sniffing) >= MAX_PENDING:
            next(iter(self.sniffing))._read_first()
        self.sniffing[sniffer] = None
        return True

    def reading_first(self, sniffer: Sniffer) -> None:
        """One more connection waits on its transport for its first byte: the oldest past MAX_READING is plain HTTP."""
        self.reading[sniffer] = None
        while len(self.reading) > MAX_READING:
            next(iter(self.reading))._give_up()

    def handshake_begins(self, sniffer: Sniffer) -> None:
        """One more connection in its TLS handshake: the oldest past MAX_HANDSHAKES is cut."""
        self.handshaking[sniffer] = sniffer._ip
        self._handshakes_from[sniffer._ip] += 1
        while len(self.handshaking) > MAX_HANDSHAKES:
            oldest = next(iter(self.handshaking))
            self.handshake_ended(oldest)
            oldest._cut()

    def handshake_ended(self, sniffer: Sniffer) -> None:
        ip = self.handshaking.pop(sniffer, None)
        if ip is not None:
            self._handshakes_from[ip] -= 1
            if not self._handshakes_from[ip]:
                del self._handshakes_from[ip]

    def release(self, sniffer: Sniffer) -> None:
        self.sniffing.pop(sniffer, None)
        self.reading.pop(sniffer, None)

    def pre_shutdown(self) -> None:
        """The listeners are closed: connections still being sniffed (or in their handshake) are never served."""
        self.closing = True
        for sniffer in [*self.sniffing, *self.reading]:
            sniffer._give_up()
        self.inner.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """aiohttp's shutdown (requests in flight finish), then every TLS connection is cut: closing one only
        starts a TLS close that waits for the peer, and until then it could still carry requests in."""
        self.closing = True
        await self.inner.shutdown(timeout)
        for transport in list(self.tls_connections):
            transport.abort()

    def __getattr__(self, name: str) -> Any:  # shutdown, pre_shutdown, connections, ...
        return getattr(self.inner, name)


__all__ = ["MAX_HANDSHAKES", "MAX_PENDING", "MAX_READING", "Sniffer", "SniffingServer"]

"""A response's body written to its connection's socket from threads, past aiohttp's transport (`send_body`: the
one way a file's plaintext is sent, by the user API's get and the node's own S3 listener alike).

aiohttp's writer takes a body on the event loop, a piece at a time: each piece a turn of the loop, a wake-up of it
by the thread that made the piece, and a send.  A large body that other threads make (a get of shares held here:
storage/gateway_get.py, `Plaintext.pass_on`) is written by those threads instead, on a plain connection, once
every byte the transport was given (the headers) is in the socket: the transport is given nothing more until the
body is written, so the bytes keep their order.  A TLS connection's bytes go through its transport, always.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from aiohttp import web

POLL_MS = 200  # a writer waiting for room in the socket looks this often whether it was stopped


class Body(Protocol):
    """A body's bytes, iterated on the loop."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@runtime_checkable
class ThreadedBody(Body, Protocol):
    """A body that may be passed on by threads of its own (storage/gateway_get.py, `Plaintext`): where
    `take_threads()`, handed whole to `pass_on`'s threads, each piece to `write(pieces, stop)`."""

    def take_threads(self) -> bool: ...

    async def pass_on(self, write: Callable[[Sequence, threading.Event], None]) -> int: ...


async def send_body(request: web.BaseRequest, response: web.StreamResponse, body: Body | ThreadedBody,
                    count: Callable[[int], object] = lambda n: None, *, stall: float | None = None) -> int:
    """Every byte of `body` after the prepared `response`'s headers: written by the body's own threads straight to
    the socket where it has threads and may take them (`ThreadedBody.take_threads`: a get of shares all held here,
    within the gateway's bound on such gets) and the connection lets it (`body_socket`), else piece by piece
    through the transport.  `count(n)` as bytes go out; the bytes sent.  The body's errors (a segment that cannot
    be read, a client gone) are raised.  A client that takes no bytes for `stall` seconds is cut (`Stalled`): a
    reader that stops, connected, would otherwise hold the get (its segments, its holders' ranges) for good."""
    threaded = isinstance(body, ThreadedBody) and body.take_threads()
    sock = await body_socket(request, response) if threaded else None
    try:
        if sock is not None:
            sent = await sock.fill(body.pass_on, stall)
            count(sent)
            return sent
        sent = 0
        async for chunk in body:
            if stall is None or request.transport is None:
                await response.write(chunk)
            else:
                await _written(response.write(chunk), request.transport, stall)
            sent += len(chunk)
            count(len(chunk))
        return sent
    except Stalled:
        if request.transport is not None:
            _reset(request.transport)
        raise


def _reset(transport: asyncio.BaseTransport) -> None:
    """The connection ended by a reset: a close, even asyncio's abort(), leaves the bytes the kernel holds for the
    client (megabytes) to be handed over as it takes them, keeping the socket and its buffer long after."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _written(write: Awaitable[None], transport: asyncio.Transport, stall: float) -> None:
    """`write` awaited while the client takes bytes: Stalled once it has taken none for `stall` seconds (the
    transport's buffer no smaller), however slowly it reads."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    left: int | None = None
    stalled = False

    def measure() -> None:  # runs once `write` has handed its bytes to the transport and waits for room
        nonlocal left
        left = transport.get_write_buffer_size()

    def check() -> None:
        nonlocal left, handle, stalled
        now = transport.get_write_buffer_size()
        if left is None or now < left:  # the client took some: it has `stall` seconds again
            left, handle = now, loop.call_later(stall, check)
        else:
            stalled = True
            task.cancel()

    loop.call_soon(measure)
    handle = loop.call_later(stall, check)
    try:
        await write
    except asyncio.CancelledError:
        if stalled and task.uncancel() == 0:
            raise Stalled(stall) from None
        raise
    finally:
        handle.cancel()


class Stalled(ConnectionResetError):
    """The client took no bytes of a body for `stall` seconds, its socket full all that while: it is cut."""

    def __init__(self, stall: float) -> None:
        super().__init__(f"the client took no bytes for {stall:g} s")


async def body_socket(request: web.BaseRequest, response: web.StreamResponse) -> SocketBody | None:
    """The socket the rest of the prepared `response`'s body may be written to (`SocketBody.write`), with its
    headers sent; None when it must go through the transport (TLS, or headers the socket did not take at once)."""
    transport = request.transport
    if transport is None or transport.is_closing() or transport.get_extra_info("ssl_object") is not None \
            or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    await response.write(b"")  # the headers, which aiohttp keeps until the body's first write
    if transport.get_write_buffer_size():
        return None
    # A descriptor of its own: should the transport close its socket while a thread writes, the number is not
    # reused for another connection under the writer's hands.
    return SocketBody(os.dup(sock.fileno()))


class SocketBody:
    """A non-blocking socket written from threads: `write` blocks until its pieces are in the socket."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.stall: float | None = None  # seconds `write` waits for room in the socket, at most (Stalled after)

    def write(self, pieces: Sequence[bytes | bytearray | memoryview], stop: threading.Event) -> None:
        """All of `pieces`, in order (writev); raises ConnectionError once `stop` is set, OSError when the client is
        gone, Stalled when it took nothing for `stall` seconds."""
        views = [memoryview(p).cast("B") for p in pieces if len(p)]
        poller = None
        since = None  # when the socket was last found full with nothing taken since
        while views:
            try:
                n = os.writev(self.fd, views)
            except BlockingIOError:
                n = 0
            if n:
                since = None
            elif self.stall is not None:
                now = time.monotonic()
                since = since or now
                if now - since >= self.stall:
                    raise Stalled(self.stall)
            while n and n >= views[0].nbytes:
                n -= views.pop(0).nbytes
            if n:
                views[0] = views[0][n:]
            elif views:
                if stop.is_set():
                    raise ConnectionError("the body's writing was stopped")
                if poller is None:
                    poller = select.poll()
                    poller.register(self.fd, select.POLLOUT)
                poller.poll(POLL_MS)

    async def fill(self, pass_on: Callable[[Callable[[Sequence, threading.Event], None]], Awaitable[int]],
                   stall: float | None = None) -> int:
        """`await pass_on(self.write)`, the bytes it passed, then this descriptor closed."""
        self.stall = stall
        try:
            return await pass_on(self.write)
        finally:
            os.close(self.fd)

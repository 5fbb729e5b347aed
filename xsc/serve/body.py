"""A request's body read as it comes: `paced_reader` for a body handed on in chunks (a put's, a web function's
stdin), held to a pace; `read_into` straight into buffers of known lengths, past aiohttp's parser: the one way a
peer's streamed body (a share's blocks, node/http/shares.py) is read.

A holder takes in a quarter of every file put through six nodes, at the pace the gateway sends it.  Through aiohttp's
server each byte was decrypted into a fresh 16 KiB record, the records of a read joined, copied again by the HTTP
parser into the request's stream, and once more as each block was cut out of the stream's chunks, and each read of
the socket was a turn of the parser, the stream and the handler's task.  Here, once aiohttp has parsed the head, the
connection is handed to a BufferedProtocol for the rest of the body: the TLS layer (or, in plaintext, the socket)
writes each part straight into a buffer of its own, made as its first bytes come, and the connection goes back to
aiohttp, with a fresh parser (the one it had still counts the body's bytes), as the body's last byte is taken.  What
aiohttp read with the head is taken from the request's stream first.  Nothing past the body is read: each buffer
handed out is at most what the body has left.

`read_into(request, lengths, seconds)` answers a bytearray per length, in order; the request's Content-Length must be
their sum (the caller checks it against its bound before, so nothing is allocated for bytes a peer only announces).  It
raises `BodyCut` when the connection ends within the body, `BodyLate` when the body is not in within `seconds`, or,
given `min_rate`, when less than `min_rate` bytes a second of it came in a `window` of seconds (counted from when its
reading began): a body that stalls gives back what it holds then, not at its deadline.  A
read that does not finish (its deadline, a cancelled handler) gives the connection back to aiohttp as it is and has it closed once the answer is sent: the body's bytes
are not all read, so the next request on it cannot be told from them.
"""

from __future__ import annotations

import asyncio

from collections.abc import Awaitable, Callable

from aiohttp import StreamReader, web
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, HttpRequestParser, RequestHandler, RequestPayloadError

from ..errors import BodyTimeout, XscError

AUTO_DECOMPRESS = True  # what the node's server gives aiohttp's parsers (aiohttp's default), given to the fresh one


def expect_continue(check: Callable[[web.Request], object], refuse: Callable[[XscError], web.StreamResponse]
                    ) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An expect handler for aiohttp's routes: a request whose `check` raises (its refusals that need nothing of the
    body) is answered `refuse(err)` before the caller sends its body, else the caller is told to send it (100
    Continue, which aiohttp's own handler sends whatever the route will answer)."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {request.headers['Expect']}")
        try:
            check(request)
        except XscError as err:
            response = refuse(err)
            response.force_close()  # the body is not read
            return response
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own handler: the answer has not begun
        return None

    return expect


def paced_reader(content: StreamReader, stall: float, *, min_rate: int = 0, what: str = "the body",
                 hint: str = "send it again") -> Callable[[int], Awaitable[bytes]]:
    """`read(n)` of a request's body as it comes: BodyTimeout (408) once none of it comes for `stall` seconds, or,
    given `min_rate`, once it averages less than `min_rate` bytes a second since the node first waited for it.  A
    body that stops, or comes a byte every few seconds, would hold what its request holds (a put, a function's run
    and its budget) for as long as its sender liked."""
    loop = asyncio.get_running_loop()
    started, received = 0.0, 0

    async def read(n: int) -> bytes:
        nonlocal started, received
        chunk = content.read_nowait(n)  # a body that is here already (or none): no timer to set and cancel
        if not chunk and not content.at_eof():
            now = loop.time()
            started = started or now
            wait = min(stall, started + stall + received / min_rate - now) if min_rate else stall
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    chunk = await content.read(n)
            except TimeoutError:
                pace = f", at less than {min_rate:,} bytes a second" if min_rate else ""
                raise BodyTimeout(f"{what} stalled: {received:,} bytes came, none for {wait:.3g} s{pace}",
                                  hint=hint) from None
        received += len(chunk)
        return chunk

    return read


class BodyCut(ConnectionError):
    """The connection ended within the body."""


class BodyLate(TimeoutError):
    """The body did not come within its deadline, or came too slowly; `received`: the bytes of it that did; `why`:
    which, in words (`the body ...`)."""

    def __init__(self, received: int, why: str) -> None:
        super().__init__(f"{received} bytes of the body came in time")
        self.received, self.why = received, why


class _Parts(asyncio.BufferedProtocol):
    """The connection while the rest of one body comes: each part filled in turn, then the connection handed back."""

    def __init__(self, request: web.BaseRequest, parts: list[bytearray], lengths: list[int], at: int,
                 filled: int) -> None:
        self._request = request
        self._handler: RequestHandler = request.protocol
        self._transport = request.transport
        self._parts = parts
        self._lengths = lengths
        self._at, self._filled = at, filled  # the part being filled, and how much of it
        self.received = sum(lengths[:at]) + filled
        self.done: asyncio.Future[list[bytearray]] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._at == len(self._parts):
            self._parts.append(bytearray(self._lengths[self._at]))
        return memoryview(self._parts[self._at])[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        self.received += nbytes
        if self._filled == self._lengths[self._at]:
            self._at, self._filled = self._at + 1, 0
            if self._at == len(self._lengths):
                self._give_back(parser=True)
                self._request.content.feed_eof()  # the body as aiohttp's request sees it: all read
                self.done.set_result(self._parts)

    def _give_back(self, parser: bool) -> None:
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._handler)
        if parser:  # aiohttp's parser is still within this body: the next request is parsed by a fresh one
            handler = self._handler
            handler._parser = HttpRequestParser(
                handler, handler._loop, handler._read_bufsize, max_line_size=handler.max_line_size,
                max_field_size=handler.max_field_size, max_headers=handler.max_headers,
                payload_exception=RequestPayloadError, auto_decompress=AUTO_DECOMPRESS,
                max_msg_queue_size=MAX_MSG_QUEUE_SIZE)

    def abandon(self) -> None:
        """The body is not read to its end: aiohttp's handler takes the connection back and closes it once the
        answer is sent."""
        self._give_back(parser=False)
        self._handler.force_close()

    def eof_received(self) -> bool | None:
        return None  # the peer stopped sending within the body: the transport closes, connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)  # aiohttp's handler is the connection's owner: it cleans up
        if not self.done.done():
            self.done.set_exception(BodyCut(f"the connection ended within the body ({exc or 'closed'})"))

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


async def read_into(request: web.BaseRequest, lengths: list[int], seconds: float, *, min_rate: int = 0,
                    window: float = 0.0) -> list[bytearray]:
    """The request's body as a bytearray per length (each at least 1; Content-Length, checked by the caller, is
    their sum), within `seconds` and, given `min_rate`, at least `min_rate * window` bytes each `window` (else
    BodyLate)."""
    assert request.content_length == sum(lengths) and all(lengths), "the parts make the body"
    parts: list[bytearray] = []
    at = filled = 0
    early = request.content.read_nowait()  # what came with the head, parsed by aiohttp already
    view = memoryview(early)
    while len(view):
        if at == len(parts):
            parts.append(bytearray(lengths[at]))
        take = min(len(view), lengths[at] - filled)
        parts[at][filled:filled + take] = view[:take]
        view, filled = view[take:], filled + take
        if filled == lengths[at]:
            at, filled = at + 1, 0
    if at == len(lengths):
        return parts
    transport = request.transport
    if transport is None or transport.is_closing():
        raise BodyCut("the connection ended within the body")
    protocol = _Parts(request, parts, lengths, at, filled)
    transport.set_protocol(protocol)
    if not transport.is_reading():  # aiohttp paused it while its stream was full
        transport.resume_reading()
    try:
        async with asyncio.timeout(seconds):
            while min_rate:
                before = protocol.received
                await asyncio.wait([protocol.done], timeout=window)
                if protocol.done.done():
                    break
                if protocol.received - before < min_rate * window:
                    protocol.done.cancel()  # as the deadline leaves it (below)
                    raise BodyLate(protocol.received, f"came at less than {min_rate:,} bytes a second for "
                                                      f"{window:g} s: cut off")
            return await protocol.done
    except BodyLate:
        raise
    except TimeoutError:
        protocol.done.cancel()  # as a deadline met in `await protocol.done` leaves it: the answer goes out
        raise BodyLate(protocol.received, f"did not arrive within {seconds:.0f} s") from None
    finally:
        if not protocol.done.done():
            protocol.abandon()


__all__ = ["BodyCut", "BodyLate", "read_into"]

"""Answers of known length read straight into buffers of their parts, over kept-alive HTTP/1.1 connections.

A get reads three of a file's four data shares from other nodes: 0.75 GiB of blocks through the gateway's event
loop per GiB of the file.  Through aiohttp's client each byte is decrypted into a fresh 16 KiB record, joined into
the read's chunk, copied again by the HTTP parser into the body's stream and once more into its block; here an
asyncio BufferedProtocol has the TLS layer decrypt each block straight into a buffer of its own, and the loop
takes one turn per read of the socket rather than a turn of the parser, the stream and the waiting task
(docs/storage.md, "Speed").

`Into.request(host, port, context, head, lengths, timeout)` sends `head` (a GET's request line and headers, ending in
an empty line) and answers (200, [a bytearray per length]) when the answer's body is exactly those lengths one after
the other, or (status, its first MAX_REFUSAL bytes) for any other status.  It raises, as net/kept.py does:
- `Unreached(exc)`: no connection could be made (nothing was sent);
- `Cut(exc)`: the connection failed or timed out after the request was (maybe) sent, or ended within the answer;
- `NotTheAnswer(why)`: an answer that is not what was asked: not HTTP/1.x, without a Content-Length (chunked, or
  ending with the connection), of another length than the blocks make, or following bytes the answer before it
  did not account for.

Connections are pooled per (host, port, the node the TLS context is pinned to, the client certificate it shows): one
made to node X is never used for a request addressed to node Y.  At most PER_PEER are open to one peer at once, at
most PER_PEER kept idle; one that ended, or on which anything came while it was idle, is dropped, not used.  One whose
request failed, timed out or was cancelled is closed (its state unknown), never kept.  The pools of at most MOST_PEERS
peers are kept, as net/kept.py keeps them."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from ..units import is_whole_number
from .dial import dial
from .kept import MOST_PEERS, Cut, Pool, Pools, Unreached

PER_PEER = 32  # connections open to one peer at once, and kept idle (as net/kept.py)
MAX_HEAD = 64 * 1024  # bytes of status line and headers an answer may have
MAX_REFUSAL = 64 * 1024  # bytes of a refusal's body kept (the rest is not read: its connection is closed)


class NotTheAnswer(Exception):
    pass


class _Answer(asyncio.BufferedProtocol):
    """One connection, one request at a time: the head read into a small buffer, the body into its blocks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future | None = None  # the answer under way: (status, blocks or refusal body, keep)
        self._head = bytearray()  # an answer's head (MAX_HEAD bytes while one is awaited; then a refusal's body)
        self._framed = 0  # bytes of `_head` filled
        self._blocks: list[bytearray] = []
        self._lengths: list[int] = []
        self._at = 0  # the block being filled
        self._filled = 0  # bytes of it filled
        self._body: bytearray | None = None  # a refusal's body
        self._body_left = 0
        self._keep = False
        self._code = 0
        self._spare = bytearray(1024)  # what comes when no answer is under way: any of it spoils the connection
        self.spoilt = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def expect(self, lengths: list[int]) -> asyncio.Future:
        self.done = asyncio.get_running_loop().create_future()
        self._framed, self._at, self._filled, self._body, self._body_left, self._code = 0, 0, 0, None, 0, 0
        self._lengths, self._blocks, self._head = lengths, [], bytearray(MAX_HEAD)
        return self.done

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.done is None or self.done.done():
            return memoryview(self._spare)
        if self._lengths and self._code == 200:
            return memoryview(self._block())[self._filled:]
        if self._body is not None:
            return memoryview(self._head)[:max(1, self._body_left)]
        if self._framed == len(self._head):  # a head longer than MAX_HEAD: the connection is spoilt anyway
            return memoryview(self._spare)
        return memoryview(self._head)[self._framed:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done is None or self.done.done():
            self.spoilt = True  # more than the answer: the connection is out of step
            return
        if self._lengths and self._code == 200:
            self._fill(nbytes)
        elif self._body is not None:
            self._refused(memoryview(self._head)[:nbytes])
        else:
            self._framed += nbytes
            try:
                self._parse_head()
            except NotTheAnswer as exc:
                self.spoilt = True
                self.done.set_exception(exc)

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n", 0, self._framed)
        if end < 0:
            if self._framed == len(self._head):
                raise NotTheAnswer(f"a head longer than {MAX_HEAD} bytes")
            return
        lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not is_whole_number(code):
            raise NotTheAnswer(f"something else than an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise NotTheAnswer(f"a malformed header line: {line[:80]!r}")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise NotTheAnswer("a transfer encoding where a Content-Length was expected")
        length = headers.get("content-length", "")
        if not is_whole_number(length):
            raise NotTheAnswer(f"no Content-Length (its value: {length[:40]!r})")
        self._keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        rest_view = memoryview(self._head)[end + 4:self._framed]
        self._code = int(code)
        if self._code != 200:
            self._body, self._body_left, self._keep = bytearray(), min(int(length), MAX_REFUSAL), False
            self._refused(rest_view)
            return
        if int(length) != sum(self._lengths):
            raise NotTheAnswer(f"a body of {int(length)} bytes where the {len(self._lengths)} blocks asked make "
                               f"{sum(self._lengths)}")
        self._fill(0)
        while len(rest_view) and not self.done.done():  # the body's first bytes came with the head
            room = memoryview(self._block())[self._filled:]
            take = min(len(room), len(rest_view))
            room[:take] = rest_view[:take]
            rest_view = rest_view[take:]
            self._fill(take)
        if len(rest_view):
            self.spoilt = True

    def _block(self) -> bytearray:
        """The block being filled, made as its first bytes come: the blocks of an answer made at once, as its head
        comes, would be megabytes at a time taken from the heap's top and given back together (faulting in and
        zeroing their pages afresh), and held before their bytes are on their way."""
        if self._at == len(self._blocks):
            self._blocks.append(bytearray(self._lengths[self._at]))
        return self._blocks[self._at]

    def _fill(self, nbytes: int) -> None:
        self._filled += nbytes
        while self._at < len(self._lengths) and self._filled == self._lengths[self._at]:
            if self._at == len(self._blocks):  # a block of no bytes
                self._blocks.append(bytearray())
            self._at, self._filled = self._at + 1, 0
        if self._at == len(self._lengths):
            self._finish(self._blocks)

    def _refused(self, data: memoryview) -> None:
        assert self._body is not None
        self._body += data[:self._body_left]
        self._body_left -= min(len(data), self._body_left)
        if not self._body_left:
            self._finish(bytes(self._body))

    def _finish(self, result) -> None:
        self.done.set_result((self._code, result))
        self._blocks, self._lengths, self._head = [], [], bytearray()  # a connection kept idle holds no buffer

    @property
    def reusable(self) -> bool:
        return self._keep and not self.spoilt and not self.closed.done() and self.transport is not None \
            and not self.transport.is_closing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(Cut(exc or ConnectionError("the answer ended early")))

    def eof_received(self) -> bool | None:
        return None  # close the transport


def _close_answer(answer: _Answer) -> None:
    if answer.transport is not None:
        answer.transport.close()


class Into:
    def __init__(self, congestion: str = "", most_peers: int = MOST_PEERS,
                 dialable: Callable[[str], bool] | None = None) -> None:
        self.congestion = congestion  # the TCP congestion control its connections ask for (net/congestion.py)
        self.dialable = dialable  # the addresses its peers' names may resolve to (config.dialable; None: any)
        self.pools: Pools[_Answer] = Pools(_close_answer, most_peers)
        self._closed = False
        self.opened = 0  # connections opened (tests, status)

    async def request(self, host: str, port: int, context: ssl.SSLContext | None, head: bytes, lengths: list[int],
                      *, timeout: float) -> tuple[int, list[bytearray] | bytes]:
        if self._closed:
            raise Unreached(ConnectionError("the node is shutting down"))
        pin = None if context is None else ("tls", getattr(context, "xsc_node", None),
                                            getattr(context, "xsc_client", None))
        key = (host, port, pin)
        peer = self.pools.take(key)
        answer: _Answer | None = None
        sent = False
        try:
            async with asyncio.timeout(timeout):
                async with peer.slots:
                    answer = await self._connection(peer, host, port, context)
                    done = answer.expect(lengths)
                    sent = True  # from here on the peer may have the request, whatever happens next
                    answer.transport.write(head)
                    status, result = await done
            if answer.reusable and not self._closed and len(peer.idle) < PER_PEER:
                peer.idle.append(answer)
                answer = None
            return status, result
        except (Unreached, Cut, NotTheAnswer):
            raise
        except OSError as exc:  # TimeoutError is an OSError: the whole request's time ran out
            raise (Cut(exc) if sent else Unreached(exc)) from None
        finally:
            if answer is not None and answer.transport is not None:  # not kept: its state is unknown
                answer.transport.close()
            self.pools.give_back(key, peer)

    async def _connection(self, peer: Pool[_Answer], host: str, port: int, context: ssl.SSLContext | None) -> _Answer:
        while peer.idle:
            answer = peer.idle.pop()
            if answer.reusable:
                return answer
            if answer.transport is not None:
                answer.transport.close()
        try:
            sock = await dial(host, port, self.congestion, self.dialable)
            transport, answer = await asyncio.get_running_loop().create_connection(
                _Answer, sock=sock, ssl=context, server_hostname=host if context is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise Unreached(exc) from None
        self.opened += 1
        return answer

    def close(self) -> None:
        """Close every kept connection (the node stops)."""
        self._closed = True
        self.pools.close()


__all__ = ["Into", "MAX_REFUSAL", "NotTheAnswer"]

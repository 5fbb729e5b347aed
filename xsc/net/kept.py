"""Small signed requests to peers over kept-alive HTTP/1.1 connections, without aiohttp's client.

A paid remote invoke is one small POST and one small answer, many times a second to the same provider.
aiohttp's ClientSession spends about as much CPU on one such request as the provider spends running the
call; this writes the request in one piece and reads the answer (Content-Length, chunked, or up to the
close) straight from asyncio streams, on connections kept per (host, port, the node the TLS context is pinned to).

The TLS context is PeerClient's pinned one (xsc/net/tls.py): the handshake fails unless the peer holds the
key of the node the request is addressed to, before a byte of the request is sent.  At most PER_PEER
connections to one peer are open at once (as aiohttp's limit_per_host), at most PER_PEER kept idle; an idle
one the peer has closed (it closes idle connections after node.idle_timeout) is dropped, not used.  The pools of
at most MOST_PEERS peers are kept (`Pools`): a node meets a provider or holder per address a stranger may name.

`Kept.request` answers (status, headers, body) or raises:
- `Unreached(exc)`: no connection could be made (nothing was sent);
- `Cut(exc)`: the connection failed after the request was (maybe) sent, or the answer was cut or malformed;
- `TooLarge`: the answer is larger than `max_size` (its connection is dropped).
PeerClient maps them to PeerUnreachable (sent=False / sent=True) and PeerRefused, as its aiohttp path does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from multidict import CIMultiDict

from ..units import is_whole_number
from .dial import dial

PER_PEER = 32  # connections open to one peer at once, and kept idle (aiohttp's limit_per_host of the session)
MAX_HEAD = 64 * 1024  # bytes of status line and headers an answer may have
# Peers (host, port, pin) whose pools are kept at most.  The peers met are whoever a stranger's descriptors, provider
# records and holders records name: without a bound, a pool stayed for each of them, however long ago it was used.
MOST_PEERS = 1024
C = TypeVar("C")


class Unreached(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Cut(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class TooLarge(Exception):
    pass


@dataclass
class Pool(Generic[C]):
    """One peer's connections: those kept idle, the slots of those open, and the requests using it (waiting too)."""
    idle: list[C] = field(default_factory=list)
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PER_PEER))
    users: int = 0


class Pools(Generic[C]):
    """The pools of at most `most` peers, each kept while a request uses it or it keeps an idle connection.  When a
    request leaves more than `most`, the least recently used pools no request is using go, their idle connections
    closed; pools in use are never taken from their requests (there are then as many more as requests under way),
    and a peer not reached pushes none out."""

    def __init__(self, close: Callable[[C], None], most: int = MOST_PEERS) -> None:
        self._close = close  # closes an idle connection
        self.most = most
        self._pools: OrderedDict[tuple, Pool[C]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pools)

    def take(self, key: tuple) -> Pool[C]:
        """The pool of `key` for one request (made if need be); `give_back` it when the request ends."""
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool()
        else:
            self._pools.move_to_end(key)
        pool.users += 1
        return pool

    def give_back(self, key: tuple, pool: Pool[C]) -> None:
        pool.users -= 1
        if not pool.users and not pool.idle and self._pools.get(key) is pool:
            del self._pools[key]  # nothing kept in it: a peer met once leaves nothing behind
        self._prune()

    def _prune(self) -> None:
        passed = 0  # pools in use moved to the newest end: each is passed once a prune
        while len(self._pools) > self.most and passed < len(self._pools):
            key, pool = next(iter(self._pools.items()))
            if pool.users:
                self._pools.move_to_end(key)
                passed += 1
                continue
            del self._pools[key]
            self.close_idle(pool)

    def idle(self) -> list[C]:
        """Every connection kept idle (tests)."""
        return [connection for pool in self._pools.values() for connection in pool.idle]

    def close_idle(self, pool: Pool[C]) -> None:
        for connection in pool.idle:
            self._close(connection)
        pool.idle.clear()

    def close(self) -> None:
        for pool in self._pools.values():
            self.close_idle(pool)


def _close_streams(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    connection[1].close()


class Kept:
    def __init__(self, congestion: str = "", most_peers: int = MOST_PEERS,
                 dialable: Callable[[str], bool] | None = None) -> None:
        self.congestion = congestion  # the TCP congestion control its connections ask for (net/congestion.py)
        self.dialable = dialable  # the addresses its peers' names may resolve to (config.dialable; None: any)
        self.pools: Pools[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = Pools(_close_streams, most_peers)
        self._closed = False
        self.opened = 0  # connections opened (tests, status)

    async def request(self, host: str, port: int, context: ssl.SSLContext | None, head: bytes, body: bytes, *,
                      timeout: float | None, max_size: int) -> tuple[int, CIMultiDict[str], bytes]:
        """Send `head` (request line and headers, ending in an empty line) and `body`; the answer, read whole."""
        if self._closed:
            raise Unreached(ConnectionError("the node is shutting down"))
        # Pooled per peer and per pin (the node a TLS context accepts): a connection made to node X is never
        # used for a request addressed to node Y, whatever the URL.
        pin = None if context is None else ("tls", getattr(context, "xsc_node", None),
                                            getattr(context, "xsc_client", None))
        key = (host, port, pin)
        peer = self.pools.take(key)
        sent = False
        writer = None
        try:
            async with asyncio.timeout(timeout):
                async with peer.slots:
                    reader, writer = await self._connection(peer, host, port, context)
                    sent = True  # from here on the peer may have the request, whatever happens next
                    writer.write(head + body)
                    status, headers, answer, keep = await _answer(reader, max_size)
                    if keep and not self._closed and len(peer.idle) < PER_PEER:
                        peer.idle.append((reader, writer))
                        writer = None
            return status, headers, answer
        except TooLarge:
            raise
        except Unreached:
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            # (TimeoutError is an OSError: the whole request's time ran out, connecting or waiting.)
            raise (Cut(exc) if sent else Unreached(exc)) from None
        finally:
            if writer is not None:  # not kept: closed (also when cancelled mid-request, its state unknown)
                writer.close()
            self.pools.give_back(key, peer)

    async def _connection(self, peer: Pool, host: str, port: int, context: ssl.SSLContext | None):
        while peer.idle:
            reader, writer = peer.idle.pop()
            # Nothing may have come on it while it was idle: an end (the peer closed it), or anything else.
            if not reader.at_eof() and not writer.is_closing() and not getattr(reader, "_buffer", b""):
                return reader, writer
            writer.close()
        try:
            sock = await dial(host, port, self.congestion, self.dialable)
            connection = await asyncio.open_connection(sock=sock, ssl=context, limit=MAX_HEAD,
                                                       server_hostname=host if context is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise Unreached(exc) from None
        self.opened += 1
        return connection

    def close(self) -> None:
        """Close every kept connection (the node stops)."""
        self._closed = True
        self.pools.close()


async def _answer(reader: asyncio.StreamReader, max_size: int) -> tuple[int, CIMultiDict[str], bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not is_whole_number(code):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"a malformed header line: {line[:80]!r}")
        headers.add(name, value.strip())
    keep = version == "HTTP/1.1" and "close" not in headers.get("Connection", "").lower()
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size < 0 or len(body) + size > max_size:
                raise TooLarge()
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                    pass
                break
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("a chunk does not end in CRLF")
        return int(code), headers, bytes(body), keep
    length = headers.get("Content-Length")
    if length is not None:
        if not is_whole_number(length):
            raise ValueError(f"Content-Length is not a number: {length[:40]!r}")
        if int(length) > max_size:
            raise TooLarge()
        return int(code), headers, await reader.readexactly(int(length)), keep
    if int(code) in (204, 304) or 100 <= int(code) < 200:
        return int(code), headers, b"", keep
    body = await reader.read(max_size + 1)  # no length: the answer ends with the connection
    while len(body) <= max_size and (more := await reader.read(max_size + 1 - len(body))):
        body += more
    if len(body) > max_size:
        raise TooLarge()
    return int(code), headers, body, False


__all__ = ["Cut", "Kept", "MOST_PEERS", "Pool", "Pools", "TooLarge", "Unreached"]

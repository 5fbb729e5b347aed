"""The client nodes talk to each other with: every request authenticated by this node's key, sent over TLS.

One aiohttp ClientSession per app (its connection pool is shared by every feature), opened and
closed by the peers feature's cleanup context.

With `tls` on (the default, `peers.tls`) every request goes over TLS 1.3, http:// URLs included (a
node answers TLS on its one port: xsc/serve/listener.py).  The TLS handshake must prove the peer holds
the key of the node the request is addressed to (`to`); else the connection is dropped before a byte
of the request is sent, and the call fails with PeerIdentityMismatch.  Without `to` (first contact
by URL) any node key is accepted and the response says which node answered (`PeerResponse.node`).
Plaintext goes to loopback addresses only.

Over TLS this node presents its client certificate (`channel`, `peers.channel_auth`, on by default): the
handshake proves its key to the peer once per connection, and requests carry no signature, nonce or body
digest (xsc/node/peer_auth.py).  In plaintext, or with `channel` off, every request is signed.

An answer that proves its peer misbehaved (PeerMisbehaved: over the bounds the request set, a body that is not JSON
or not of the shape asked for) is told to `misbehaved(node, why)` (the node's quarantine strikes it), once the TLS
handshake proved which node gave it: a plaintext answer, or one to a request addressed to no node, proves nothing of
anyone.  Callers that find an answer not of its shape raise `response.shapeless(why)`.  An error status is not struck,
a 5xx included: an honest node answers 500 for a fault of its own (its database), 502 for its peers', 503 busy, 507
full; that is being unavailable, which availability counts, as a timeout or a cut answer is."""

from __future__ import annotations

import asyncio
import re
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import aiohttp
from aiohttp import payload
from multidict import CIMultiDictProxy
from yarl import URL

from ..codec import DuplicateKey, dumps, loads  # noqa: F401 - the one JSON reader and writer, for callers
from ..config import https_url, is_loopback_host
from ..errors import (MAX_CODE, InvalidArgument, PeerError, PeerIdentityMismatch, PeerMisbehaved, PeerRefused,
                      PeerUnreachable, connection_reason, quoted_id, shown)
from ..identity import Identity, channel_request, sign_request
from ..units import MAX_MICRO_CREDITS
from . import congestion
from . import tls as peer_tls
from .dial import dial
from .into import MAX_REFUSAL, Into, NotTheAnswer
from .kept import Cut, Kept, TooLarge, Unreached
from .traffic import RECEIVED, SENT, Meter, answer_head_bytes

_SPACE = re.compile(r"\s")  # what str.isspace() calls a space
MAX_RETRY_AFTER = 3600  # seconds of a peer's Retry-After kept at most

Misbehaved = Callable[[str, str], None]  # (node, why): an answer of `node` proved it misbehaved
NoAnswer = Callable[[str], None]  # (node): a request addressed to `node` found no answer


# Seconds a connection to a peer is kept open unused (the session's keep-alive).  Longer than the allocation's
# renewals of its subscriptions (every 20 s), so the connections to the peers a node subscribes at stay open between
# them, where each renewal was a TLS handshake on both nodes; shorter than node.idle_timeout's default, so this end
# closes first.
KEEPALIVE = 30.0


# Bytes of a body handed to the connection at once.  A body given whole to a TLS transport is encrypted whole into a
# growing memory buffer, read out of it whole and queued whole behind the socket, each a fresh copy of it; in pieces,
# each piece goes through in buffers that are reused, and the next waits until the socket has taken the last.
WRITE_PIECE = 256 * 1024

Body = bytes | Sequence[bytes]  # a body, or the parts it is made of (sent one after the other, never joined)


class EncodedJson(bytes):
    """JSON text already encoded, sent as it is: `request(..., json=EncodedJson(text))`."""


class Pieces(payload.Payload):
    """A body of one or more parts, written WRITE_PIECE bytes at a time, the parts never joined into one."""

    _autoclose = True  # nothing to close: the parts are in memory

    def __init__(self, parts: Sequence[bytes]) -> None:
        super().__init__(parts, content_type="application/octet-stream")
        self._size = sum(len(part) for part in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._value)

    async def write(self, writer) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        left = self._size if content_length is None else min(content_length, self._size)
        for part in self._value:
            view = memoryview(part)
            for start in range(0, len(view), WRITE_PIECE):
                if left <= 0:
                    return
                piece = view[start:start + min(WRITE_PIECE, left)]
                await writer.write(piece)  # waits while the connection's buffers are full
                left -= len(piece)


@dataclass
class PeerResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    node: str | None = None  # the node id the TLS handshake proved answered (None: plaintext)
    misbehaved: Misbehaved | None = field(default=None, repr=False)  # the client's (module docstring)

    def json(self) -> Any:
        try:
            return loads(self.body, unique_keys=True)
        except DuplicateKey as err:  # readers differ on which one counts: no answer at all
            raise self.shapeless(f"a peer answered with a body that gives the key {quoted_id(err.key)} twice") from None
        except ValueError:
            raise self.shapeless("a peer answered with a body that is not JSON") from None

    def shapeless(self, why: str, **details: Any) -> PeerMisbehaved:
        """The error for this answer, not of the shape asked for (to raise), struck against the node that gave it."""
        return _struck(self.misbehaved, self.node, PeerMisbehaved(why, **details))


def _struck(misbehaved: Misbehaved | None, node: str | None, err: PeerMisbehaved) -> PeerMisbehaved:
    """`err`, told to `misbehaved` against `node` (the one the handshake proved answered; None: nobody proven)."""
    if node is not None and misbehaved is not None:
        misbehaved(node, err.message)
        err.struck = True
    return err


def _refusal(url: str, method: str, path: str, status: int, body: bytes,
             headers: Mapping[str, str] | None = None) -> PeerRefused:
    """The peer's problem body: its status and code kept so callers can tell a 401 from a 404, its detail as `shown`,
    the micro-credits it says are missing (`peer_missing`, for a hint this node writes) when they are a whole
    number a ledger can hold, the seconds its `Retry-After` says to wait (`peer_retry_after`, at most
    MAX_RETRY_AFTER: a peer's word is bounded as any of its numbers), and whether it says it cut the work short once
    begun (`peer_cut_short`: a job's run its stop ended); its own hint is never kept."""
    try:
        problem = loads(body)
        code, detail = str(problem["code"]), str(problem["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail, problem = "http-error", body[:200].decode(errors="replace"), {}
    missing = problem.get("missing")
    counted = {"peer_missing": missing} if type(missing) is int and 0 < missing <= MAX_MICRO_CREDITS else {}
    if problem.get("cut_short") is True:
        counted["peer_cut_short"] = True
    if type(collectable := problem.get("collectable")) is int and 0 <= collectable <= MAX_MICRO_CREDITS:
        counted["peer_collectable"] = collectable  # what a prepayment's payee says it can still take
    wait = (headers or {}).get("Retry-After", "")
    if 0 < len(wait) <= 6 and wait.isascii() and wait.isdigit():  # seconds; an HTTP date is not kept
        counted["peer_retry_after"] = min(int(wait), MAX_RETRY_AFTER)
    return PeerRefused(f"peer {url} refused {method} {path}: {shown(detail) or f'HTTP {status}'}", url=url,
                       peer_status=status, peer_code=shown(code, MAX_CODE), **counted)


def their_words(exc: BaseException) -> str:
    """What a peer said in refusing a request, without the request (`_refusal`'s "peer URL refused METHOD PATH: its
    words"): the part a user reads, the same for every request the peer refused alike; any other error whole."""
    said, url = str(exc), (getattr(exc, "details", None) or {}).get("url")
    return (said.partition(": ")[2] or said) if url and said.startswith(f"peer {url} refused ") else said


def peer_session(congestion_control: str, meter: Meter,
                 dialable: Callable[[str], bool] | None = None) -> aiohttp.ClientSession:
    """The session a node's PeerClient sends on: its connections kept alive KEEPALIVE seconds, at most 32 to one peer
    and 256 in all, their sockets under `congestion_control` where the kernel allows it (xsc/net/congestion.py),
    each to an address `dialable` lets it (config.dialable; None: any)."""
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=32, keepalive_timeout=KEEPALIVE,
                                     socket_factory=congestion.socket_factory(congestion_control, dialable))
    return aiohttp.ClientSession(connector=connector, trace_configs=[meter.trace()])


class PeerClient:
    def __init__(self, identity: Identity, session: aiohttp.ClientSession, timeout: float, *, tls: bool = True,
                 grid_secret: str = "", channel: bool = True, meter: Meter | None = None,
                 congestion: str = "", dialable: Callable[[str], bool] | None = None,
                 misbehaved: Misbehaved | None = None, unreached: NoAnswer | None = None) -> None:
        self.identity = identity
        self.misbehaved = misbehaved  # told of answers that prove their peer misbehaved (module docstring)
        # Told of each request to a node that found no answer: the node's view of that peer (its probes) learns of
        # a failed contact at once, not at the next probe round.
        self.unreached = unreached
        self.meter = meter  # counts what the session's trace does not see: answers' bodies, the kept requests
        self.channel = channel
        self.session = session
        self.timeout = timeout
        self.tls = tls
        self.grid_secret = grid_secret  # a closed network's: every request proves this node knows it
        # Kept-alive connections of `request(..., kept=True)` (xsc/net/kept.py) and of `read_into` (xsc/net/into.py),
        # each asking for `congestion` once connected (the session's sockets ask as they are made: the node's).
        self._kept = Kept(congestion, dialable=dialable)
        self._into = Into(congestion, dialable=dialable)
        self._congestion, self._dialable = congestion, dialable

    def close(self) -> None:
        """Close the connections `request(..., kept=True)` and `read_into` keep (the session is its owner's)."""
        self._kept.close()
        self._into.close()

    @property
    def kept_opened(self) -> int:
        """Connections `request(..., kept=True)` has opened so far."""
        return self._kept.opened

    def target(self, peer_url: str) -> str:
        """Where a request to peer_url really goes: over TLS (the same host and port) unless TLS is off and the
        peer is on this machine.  Plaintext never leaves the machine."""
        url = peer_url.rstrip("/")
        if url.startswith("http://") and (self.tls or not is_loopback_host(URL(url).raw_host or "")):
            url = https_url(url)
        return url

    async def identify(self, peer_url: str, timeout: float | None = None) -> str | None:
        """The node id whose key the node at peer_url proves in a TLS handshake (trust on first use: what a
        request without a known receiver is then pinned to); None if it is reached in plaintext."""
        url = URL(self.target(peer_url))
        if url.scheme != "https":
            return None
        writer = None
        try:
            _, writer = await asyncio.wait_for(self._open_tls(url.raw_host, url.port), timeout or self.timeout)
            return peer_tls.peer_node(writer.get_extra_info("ssl_object"))
        except (OSError, asyncio.TimeoutError) as exc:
            reason = connection_reason(exc)
            raise PeerUnreachable(f"peer {peer_url} is unreachable: {reason}", url=peer_url, reason=reason, sent=False,
                                  hint="check that the node runs and its URL is right") from None
        finally:
            if writer is not None:
                writer.close()

    async def _open_tls(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await dial(host, port, self._congestion, self._dialable)
        return await asyncio.open_connection(sock=sock, ssl=peer_tls.client_context(None), server_hostname=host)

    def _prepare(self, peer_url: str, method: str, path: str, json: Any, data: Body | None,
                 to: str | None) -> tuple[URL, dict[str, str], bytes | list[bytes]]:
        if not path.startswith("/") or not path.isascii() or _SPACE.search(path):
            raise InvalidArgument(f"a peer request path must be an encoded absolute path, not {path[:80]!r}")
        if json is not None and data is not None:
            raise InvalidArgument("send either json or data, not both")
        headers: dict[str, str] = {}
        body: bytes | list[bytes] = b""
        if isinstance(json, EncodedJson):
            body = bytes(json)
            headers["Content-Type"] = "application/json"
        elif json is not None:
            body = dumps(json)
            headers["Content-Type"] = "application/json"
        elif data is not None:
            body = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
            headers["Content-Type"] = "application/octet-stream"
        url = URL(self.target(peer_url) + path, encoded=True)
        if self.channel and url.scheme == "https":  # the connection's client certificate proves the sender
            headers.update(channel_request(self.identity, method, path, receiver=to, grid_secret=self.grid_secret))
        else:  # the signature covers the path exactly as the receiver sees it (`request.raw_path`): no re-encoding
            headers.update(sign_request(self.identity, method, path, body, receiver=to, grid_secret=self.grid_secret))
        return url, headers, body

    def _context(self, to: str | None) -> ssl.SSLContext:
        """The TLS context pinned to `to`, presenting this node's client certificate when requests go unsigned."""
        return peer_tls.client_context(to, self.identity if self.channel else None)

    @asynccontextmanager
    async def open(self, peer_url: str, method: str, path: str, *, json: Any = None, data: Body | None = None,
                   to: str | None = None, timeout: float | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed request whose answer is streamed: yields the response once its status is known to be < 400.
        `data`: the body's bytes, or the parts it is made of (sent as they are, not joined first)."""
        url, headers, body = self._prepare(peer_url, method, path, json, data, to)
        # The pin is the node the request is signed for: the handshake checks it before the request is sent.
        tls_context = self._context(to) if url.scheme == "https" else False
        in_caller = False  # errors of the caller's own code pass through unchanged
        try:
            sent = Pieces(body) if isinstance(body, list) else body or None
            async with self.session.request(method, url, data=sent, headers=headers, ssl=tls_context,
                                            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as response:
                try:
                    if response.status >= 400:
                        raise _refusal(peer_url, method, path, response.status, await _read(response, 64 * 1024),
                                       response.headers)
                    in_caller = True
                    yield response
                finally:
                    if self.meter is not None:  # the body as far as it was read (or read ahead), however it ended
                        self.meter.add(RECEIVED, url, response.content.total_bytes)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            if in_caller and not isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
                raise
            # A connection never made means nothing was sent: the peer did no work for this request.
            unsent = isinstance(exc, aiohttp.ClientConnectorError)
            raise self._told(to, _unreached(peer_url, exc, sent=not unsent)) from None

    async def request(self, peer_url: str, method: str, path: str, *, json: Any = None, data: Body | None = None,
                      to: str | None = None, timeout: float | None = None,
                      max_size: int, kept: bool = False) -> PeerResponse:
        """A signed request, its answer read whole (at most max_size bytes: the largest answer an honest peer
        gives to it, which every caller names next to the protocol's path; a longer one is refused unread past it).

        `kept`: over this client's own kept-alive connections (xsc/net/kept.py) rather than the aiohttp
        session: for small requests sent often to the same peer (a paid remote invoke), at a fraction of the
        CPU.  Raises PeerUnreachable (no connection, timeout, cut answer) or PeerRefused (status >= 400)."""
        if kept:
            return await self._kept_request(peer_url, method, path, json, data, to, timeout, max_size)
        async with self.open(peer_url, method, path, json=json, data=data, to=to, timeout=timeout) as response:
            node = to if response.url.scheme == "https" else None  # the handshake proved it, or failed
            declared = response.content_length
            body = b"" if declared is not None and declared > max_size else await _read(response, max_size + 1)
            if len(body) > max_size or declared is not None and declared > max_size:
                raise _struck(self.misbehaved, node, PeerMisbehaved(
                    f"peer {peer_url} answered {method} {path} with more than {max_size} bytes", url=peer_url,
                    answer_limit=max_size))
            return PeerResponse(response.status, response.headers, body, node=node, misbehaved=self.misbehaved)

    def _own_connection(self, url: URL, method: str, path: str, headers: dict[str, str], to: str | None,
                        length: int | None) -> tuple[str, int, ssl.SSLContext | None, bytes]:
        """Where a request on this client's own connections goes (host, port, the TLS context pinned to `to`; None:
        plaintext) and its head: request line and headers, with a Content-Length where a body of `length` follows."""
        context = self._context(to) if url.scheme == "https" else None
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {url.raw_authority}\r\n"]
        if length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append("\r\n")
        return url.raw_host or "", url.port or (443 if url.scheme == "https" else 80), context, "".join(lines).encode()

    async def _kept_request(self, peer_url: str, method: str, path: str, json: Any, data: Body | None,
                            to: str | None, timeout: float | None, max_size: int) -> PeerResponse:
        url, headers, body = self._prepare(peer_url, method, path, json, data, to)
        body = b"".join(body) if isinstance(body, list) else body
        host, port, context, head = self._own_connection(url, method, path, headers, to, len(body))
        try:
            status, answer_headers, answer = await self._kept.request(
                host, port, context, head, body, timeout=timeout or self.timeout, max_size=max_size)
        except TooLarge:
            self._count_kept(url, len(head) + len(body), max_size)
            raise _struck(self.misbehaved, to if context is not None else None, PeerMisbehaved(
                f"peer {peer_url} answered {method} {path} with more than {max_size} bytes", url=peer_url,
                answer_limit=max_size)) from None
        except (Unreached, Cut) as failed:
            if isinstance(failed, Cut):
                self._count_kept(url, len(head) + len(body), 0)
            raise self._told(to, _unreached(peer_url, failed.cause, sent=isinstance(failed, Cut))) from None
        self._count_kept(url, len(head) + len(body), answer_head_bytes("", answer_headers.items()) + len(answer))
        node = to if context is not None else None  # the handshake proved it, or failed
        if status >= 400:
            raise _refusal(peer_url, method, path, status, answer[:64 * 1024], CIMultiDictProxy(answer_headers))
        return PeerResponse(status, CIMultiDictProxy(answer_headers), answer, node=node, misbehaved=self.misbehaved)

    async def read_into(self, peer_url: str, path: str, lengths: list[int], *, to: str | None = None,
                        timeout: float | None = None) -> list[bytearray]:
        """A signed GET whose answer is parts of the lengths given, one after the other: a buffer each, the body read
        straight into them (xsc/net/into.py), over this client's own kept-alive connections.  Raises PeerUnreachable
        (no connection, timeout, an answer cut short) or PeerRefused (status >= 400, or an answer that is not the parts
        asked: not HTTP, unframed, of another length than they make)."""
        url, headers, _ = self._prepare(peer_url, "GET", path, None, None, to)
        host, port, context, head = self._own_connection(url, "GET", path, headers, to, None)
        node = to if context is not None else None  # the handshake proved it, or failed
        try:
            status, answer = await self._into.request(host, port, context, head, lengths,
                                                      timeout=timeout or self.timeout)
        except (Unreached, Cut) as failed:
            if isinstance(failed, Cut):
                self._count_kept(url, len(head), 0)
            raise self._told(to, _unreached(peer_url, failed.cause, sent=isinstance(failed, Cut))) from None
        except NotTheAnswer as wrong:
            self._count_kept(url, len(head), 0)
            raise _struck(self.misbehaved, node, PeerMisbehaved(f"peer {peer_url} answered GET {path} with {wrong}",
                                                                url=peer_url)) from None
        if status != 200:
            self._count_kept(url, len(head), len(answer))
            if status < 400:
                raise _struck(self.misbehaved, node, PeerMisbehaved(
                    f"peer {peer_url} answered GET {path} with status {status}", url=peer_url))
            raise _refusal(peer_url, "GET", path, status, answer[:MAX_REFUSAL])
        self._count_kept(url, len(head), sum(lengths))
        return answer

    def _told(self, to: str | None, err: PeerError) -> PeerError:
        """`err`, told to `unreached` against `to`, the node the request was addressed to (none: first contact)."""
        if to is not None and self.unreached is not None:
            self.unreached(to)
        return err

    def _count_kept(self, url: URL, sent: int, received: int) -> None:
        if self.meter is not None:
            self.meter.add(SENT, url, sent)
            self.meter.add(RECEIVED, url, received)


def _unreached(peer_url: str, exc: BaseException, sent: bool) -> PeerError:
    """What a failed connection or answer raises: the peer's TLS key was not the node id expected (nothing was
    sent), or it is unreachable (`sent`: the request may have reached it)."""
    mismatch = _mismatch(exc)
    if mismatch is not None:
        return PeerIdentityMismatch(
            f"peer {peer_url} refused: {mismatch} (its TLS key is not the node id expected at that URL)",
            url=peer_url, sent=False, expected=mismatch.expected, presented=mismatch.presented,
            hint="nothing was sent; if the node at that URL changed, remove it and add it again")
    reason = connection_reason(exc)  # aiohttp's own text names the address three times
    return PeerUnreachable(f"peer {peer_url} is unreachable: {reason}", url=peer_url, reason=reason, sent=sent,
                           hint="check that the node runs and its URL is right")


def _mismatch(exc: BaseException) -> peer_tls.PeerKeyMismatch | None:
    for inner in (exc, getattr(exc, "certificate_error", None), getattr(exc, "os_error", None), exc.__cause__):
        if isinstance(inner, peer_tls.PeerKeyMismatch):
            return inner
    return None


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to its end or `limit` bytes, whichever comes first."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(min(256 * 1024, limit - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)

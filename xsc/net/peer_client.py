"""The client nodes talk to each other with: every request signed with this node's key.

One aiohttp ClientSession per app (its connection pool is shared by every feature), opened and
closed by the peers feature's cleanup context."""

from __future__ import annotations

import asyncio
import json as jsonlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from ..errors import InvalidArgument, PeerRefused, PeerUnreachable, connection_reason
from ..identity import Identity, sign_request

MAX_RESPONSE = 16 * 1024 * 1024  # bytes request() buffers; stream bigger answers with open()


@dataclass
class PeerResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            raise PeerRefused("a peer answered with a body that is not JSON") from None


def _refusal(url: str, method: str, path: str, status: int, body: bytes) -> PeerRefused:
    """The peer's problem body, kept whole so callers can tell a 401 from a 404."""
    try:
        problem = jsonlib.loads(body)
        code, detail = str(problem["code"]), str(problem["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail = "http-error", body[:200].decode(errors="replace") or f"HTTP {status}"
    return PeerRefused(f"peer {url} refused {method} {path}: {detail}", url=url, peer_status=status, peer_code=code)


class PeerClient:
    def __init__(self, identity: Identity, session: aiohttp.ClientSession, timeout: float, *,
                 grid_secret: str = "") -> None:
        self.identity = identity
        self.session = session
        self.timeout = timeout
        self.grid_secret = grid_secret  # a closed network's: every request proves this node knows it

    def _prepare(self, peer_url: str, method: str, path: str, json: Any, data: bytes | None,
                 to: str | None) -> tuple[URL, dict[str, str], bytes]:
        if not path.startswith("/") or not path.isascii() or any(c.isspace() for c in path):
            raise InvalidArgument(f"a peer request path must be an encoded absolute path, not {path[:80]!r}")
        if json is not None and data is not None:
            raise InvalidArgument("send either json or data, not both")
        headers: dict[str, str] = {}
        body = b""
        if json is not None:
            body = jsonlib.dumps(json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            body = bytes(data)
            headers["Content-Type"] = "application/octet-stream"
        # The signature covers the path exactly as the receiver sees it (`request.raw_path`): no re-encoding.
        headers.update(sign_request(self.identity, method, path, body, receiver=to, grid_secret=self.grid_secret))
        return URL(peer_url.rstrip("/") + path, encoded=True), headers, body

    @asynccontextmanager
    async def open(self, peer_url: str, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                   to: str | None = None, timeout: float | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed request whose answer is streamed: yields the response once its status is known to be < 400."""
        url, headers, body = self._prepare(peer_url, method, path, json, data, to)
        in_caller = False  # errors of the caller's own code pass through unchanged
        try:
            async with self.session.request(method, url, data=body or None, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as response:
                if response.status >= 400:
                    raise _refusal(peer_url, method, path, response.status, await _read(response, 64 * 1024))
                in_caller = True
                yield response
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            if in_caller and not isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
                raise
            reason = connection_reason(exc)  # aiohttp's own text names the address three times
            # A connection never made means nothing was sent: the peer did no work for this request.
            sent = not isinstance(exc, aiohttp.ClientConnectorError)
            raise PeerUnreachable(f"peer {peer_url} is unreachable: {reason}", url=peer_url, reason=reason,
                                  sent=sent, hint="check that the node runs and its URL is right") from None

    async def request(self, peer_url: str, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                      to: str | None = None, timeout: float | None = None,
                      max_size: int = MAX_RESPONSE) -> PeerResponse:
        """A signed request, its answer read whole (at most max_size bytes).

        Raises PeerUnreachable (no connection, timeout, cut answer) or PeerRefused (status >= 400)."""
        async with self.open(peer_url, method, path, json=json, data=data, to=to, timeout=timeout) as response:
            body = await _read(response, max_size + 1)
            if len(body) > max_size:
                raise PeerRefused(f"peer {peer_url} answered {method} {path} with more than {max_size} bytes",
                                  url=peer_url)
            return PeerResponse(response.status, response.headers, body)


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body up to its end or `limit` bytes, whichever comes first."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(min(256 * 1024, limit - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)

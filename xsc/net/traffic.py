"""What a node's requests to its peers cost on the wire, both ways (request and status lines, headers, bodies),
counted by the route they went to.

The aiohttp session's requests are counted by its trace (`Meter.trace`) as their heads and bodies are written and
their answers' heads read; an answer's body is counted by PeerClient as the caller reads it, whole or streamed (aiohttp's
trace sees only bodies read with `ClientResponse.read`, which no peer request uses), and the requests PeerClient sends
over its own kept-alive connections (net/kept.py) by PeerClient too."""

from __future__ import annotations

from typing import Any, Iterable

import aiohttp
from yarl import URL

SENT, RECEIVED = "sent", "received"


class Meter:
    """Adds bytes to `counter`, a Prometheus counter labelled (direction: SENT or RECEIVED, route)."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self._children: dict[tuple[str, str], Any] = {}  # label children, looked up once each (labels() takes a lock)

    def add(self, way: str, url: URL, size: int) -> None:
        key = (way, route(url))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.counter.labels(*key)
        child.inc(size)

    def trace(self) -> aiohttp.TraceConfig:
        """For `aiohttp.ClientSession(trace_configs=[...])`: each request's head and body chunks as they are
        written, its answer's status line and headers once read."""
        trace = aiohttp.TraceConfig()

        async def headers_sent(session, context, params) -> None:
            self.add(SENT, params.url, request_head_bytes(params.method, params.url, params.headers.items()))

        async def chunk_sent(session, context, params) -> None:
            self.add(SENT, params.url, len(params.chunk))

        async def answered(session, context, params) -> None:
            response = params.response
            self.add(RECEIVED, params.url, answer_head_bytes(response.reason or "", response.raw_headers))

        trace.on_request_headers_sent.append(headers_sent)
        trace.on_request_chunk_sent.append(chunk_sent)
        trace.on_request_end.append(answered)
        return trace


SUB_ROUTES = frozenset({"digest", "fork", "subscribe"})  # second path words kept apart (market/digest, ...)


def route(url: URL) -> str:
    """What a request was for, from its path: `market` for /v1/peer/market, `market/digest` for its digests (the
    words of SUB_ROUTES only: never an id), else the path's first part."""
    parts = url.raw_path.split("/", 5)
    if len(parts) > 3 and parts[1:3] == ["v1", "peer"]:
        if len(parts) > 4 and parts[4] in SUB_ROUTES:
            return f"{parts[3][:32]}/{parts[4]}"
        return parts[3][:32]
    return (parts[1] if len(parts) > 1 else "")[:32] or "/"


def request_head_bytes(method: str, url: URL, headers: Iterable[tuple]) -> int:
    """`METHOD /path?query HTTP/1.1`, its line end, and the header lines."""
    return len(method) + len(url.raw_path_qs) + 13 + _header_bytes(headers)


def answer_head_bytes(reason: str, headers: Iterable[tuple]) -> int:
    """`HTTP/1.1 200 OK`, its line end, and the header lines."""
    return len(reason) + 15 + _header_bytes(headers)


def _header_bytes(headers: Iterable[tuple]) -> int:
    """Header lines as written (`name: value` and a line end each), and the blank line after them."""
    return sum(len(name) + len(value) + 4 for name, value in headers) + 2

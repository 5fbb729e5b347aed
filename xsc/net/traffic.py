"""What a client session's requests cost on the wire, both ways (request and status lines, headers, bodies),
counted as they are written and read, by the route they went to."""

from __future__ import annotations

from typing import Any, Iterable

import aiohttp
from yarl import URL


def counting(counter: Any) -> aiohttp.TraceConfig:
    """A trace for `aiohttp.ClientSession(trace_configs=[...])` that adds each request's bytes to `counter`, a
    Prometheus counter labelled (direction: "sent" or "received", route)."""
    trace = aiohttp.TraceConfig()
    children: dict[tuple[str, str], Any] = {}  # label children, looked up once each (labels() takes a lock)

    def count(way: str, route: str, size: int) -> None:
        child = children.get((way, route))
        if child is None:
            child = children[(way, route)] = counter.labels(way, route)
        child.inc(size)

    async def headers_sent(session, context, params) -> None:
        size = len(params.method) + len(params.url.raw_path_qs) + 13 + _header_bytes(params.headers.items())
        count("sent", route(params.url), size)

    async def chunk_sent(session, context, params) -> None:
        count("sent", route(params.url), len(params.chunk))

    async def chunk_received(session, context, params) -> None:
        count("received", route(params.url), len(params.chunk))

    async def answered(session, context, params) -> None:
        response = params.response
        count("received", route(params.url), len(response.reason or "") + 15 + _header_bytes(response.raw_headers))

    trace.on_request_headers_sent.append(headers_sent)
    trace.on_request_chunk_sent.append(chunk_sent)
    trace.on_response_chunk_received.append(chunk_received)
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


def _header_bytes(headers: Iterable[tuple]) -> int:
    """Header lines as written (`name: value` and a line end each), and the blank line after them."""
    return sum(len(name) + len(value) + 4 for name, value in headers) + 2

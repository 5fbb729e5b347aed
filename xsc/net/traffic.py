"""What a client session's requests cost on the wire, both ways (request and status lines, headers, bodies),
counted as they are written and read."""

from __future__ import annotations

from typing import Callable, Iterable

import aiohttp

Count = Callable[[int], None]


def counting(sent: Count, received: Count) -> aiohttp.TraceConfig:
    """A trace for `aiohttp.ClientSession(trace_configs=[...])` that calls `sent` and `received` with byte counts."""
    trace = aiohttp.TraceConfig()

    async def headers_sent(session, context, params) -> None:
        sent(len(params.method) + len(params.url.raw_path_qs) + 13 + _header_bytes(params.headers.items()))

    async def chunk_sent(session, context, params) -> None:
        sent(len(params.chunk))

    async def chunk_received(session, context, params) -> None:
        received(len(params.chunk))

    async def answered(session, context, params) -> None:
        received(len(params.response.reason or "") + 15 + _header_bytes(params.response.raw_headers))

    trace.on_request_headers_sent.append(headers_sent)
    trace.on_request_chunk_sent.append(chunk_sent)
    trace.on_response_chunk_received.append(chunk_received)
    trace.on_request_end.append(answered)
    return trace


def _header_bytes(headers: Iterable[tuple]) -> int:
    """Header lines as written (`name: value` and a line end each), and the blank line after them."""
    return sum(len(name) + len(value) + 4 for name, value in headers) + 2

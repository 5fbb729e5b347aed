"""Requests aiohttp cannot parse are answered with a problem body, as every other bad request, on each of the
node's runners: the node's own (connection caps, TLS sniffing), the in-process one and the web functions'; and
with an S3 error document by the S3 front (tests/s3/test_s3_conformance.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from xsc.devnet import free_port
from xsc.serve.connections import ProblemRunner
from xsc.serve.listener import GuardedNodeRunner, NodeRunner, NodeSite

MALFORMED = {
    "a Content-Length that is not a number": b"DELETE /v1/s3/buckets/x HTTP/1.1\r\nHost: n\r\nContent-Length: bL4(\r\n\r\n",
    "a header name with a space": b"GET /hello HTTP/1.1\r\nHost: n\r\nBad Name: 1\r\n\r\n",
    "a request line that is not HTTP": b"GET /hello HTTP/9\r\nHost: n\r\n\r\n",
    "a header past aiohttp's bound": b"GET /hello HTTP/1.1\r\nHost: n\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    "two Content-Lengths that differ": b"POST /hello HTTP/1.1\r\nHost: n\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
}


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/hello", _hello)
    return app


async def _serve(kind: str) -> tuple[web.AppRunner, int]:
    port = free_port()
    if kind == "node":
        runner: web.AppRunner = GuardedNodeRunner(_app(), max_connections=64, max_per_ip=16)
    elif kind == "in-process":
        runner = NodeRunner(_app())
    else:
        runner = ProblemRunner(_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port) if kind == "web" else NodeSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, port


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the answer to the connection's end (a malformed request closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.both_loops
@pytest.mark.parametrize("kind", ["node", "in-process", "web"])
async def test_a_request_aiohttp_cannot_parse_gets_a_problem_and_the_next_connection_is_served(kind):
    runner, port = await _serve(kind)
    try:
        for what, request in MALFORMED.items():
            status, headers, body = await _exchange(port, request)
            assert 400 <= status < 500, what
            assert headers["content-type"].startswith("application/problem+json"), what
            problem = json.loads(body)
            assert problem["code"] == "malformed-request" and problem["status"] == status, what
            assert problem["detail"].startswith("the request is not valid HTTP: ") and "\n" not in problem["detail"]
        status, _, body = await _exchange(port, b"GET /hello HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, b"hello")
    finally:
        await runner.cleanup()


@pytest.mark.both_loops
@pytest.mark.parametrize("kind", ["node", "in-process", "web"])
async def test_a_path_or_a_header_past_aiohttps_bound_is_said_in_words_not_as_the_bytes_repr(kind):
    """A need id of 9,000 characters pasted into `xsc market explain` or the dashboard makes a request line past
    aiohttp's 8,190 bytes: the problem says it is the path, and its bound, not aiohttp's `bytearray(b'...')`."""
    runner, port = await _serve(kind)
    try:
        for request, where in ((b"GET /v1/market/explain/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: n\r\n\r\n", "its path"),
                               (MALFORMED["a header past aiohttp's bound"], "one of its headers")):
            status, headers, body = await _exchange(port, request)
            problem = json.loads(body)
            assert status == 400 and problem["code"] == "malformed-request", problem
            assert problem["detail"] == (f"the request is not valid HTTP: {where} is over 8,190 bytes, longer than "
                                         "any id or name here (check what was pasted into it)"), problem["detail"]
    finally:
        await runner.cleanup()


@pytest.mark.both_loops
@pytest.mark.parametrize("kind", ["node", "in-process", "web"])
async def test_an_expectation_aiohttp_refuses_gets_a_problem_on_a_route_and_off_every_route(kind):
    runner, port = await _serve(kind)
    try:
        for path in ("/hello", "/nowhere"):
            status, headers, body = await _exchange(
                port, f"POST {path} HTTP/1.1\r\nHost: n\r\nExpect: ;\r\nContent-Length: 2\r\n\r\nab".encode())
            assert status == 417 and headers["content-type"].startswith("application/problem+json"), path
            problem = json.loads(body)
            assert problem["status"] == 417 and "Unknown Expect: ;" in problem["detail"], path
            assert problem["code"] == "malformed-request", path
        status, _, body = await _exchange(port, b"GET /hello HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, b"hello")
    finally:
        await runner.cleanup()

"""Web functions (compute/functions.py) against hostile output and hostile requests, on a real node: the `raw`
entrypoint of fixtures/wasm/cgi.wat answers its request body as it is, so each test writes the CGI response a
hostile function would; what reaches the caller is framed HTTP with headers the node checked, and the connection
it came on still serves the next request."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.compute import deploy
from tests.support.nodes import close_node, free_port, node_config, serve, silent_connections
from tests.support.waiting import eventually_async
from xsc.node import CLIENT_IDENTITY, CONFIG
from xsc.node.appkeys import NODE

QUIET = {"health": {"probe_interval": 3600}, "peers": {"gossip_interval": 3600}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def file_node(tmp_path_factory):
    """The node the file's `web` tests share (each on connections of its own), in place of the default one: it serves
    `raw` (its answer: the request's body) and `hello` (its CGI variables) on its web listener."""
    port = free_port()
    node = await serve(node_config(tmp_path_factory.mktemp("web"), "web", **QUIET,
                                   node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 1000}))
    module = await deploy(node, "cgi", wasi=True)
    for name, entrypoint in (("raw", "raw"), ("hello", "_start")):
        response = await node.post("/v1/compute/functions", json={"name": name, "module": module,
                                                                   "entrypoint": entrypoint})
        assert response.status == 201, await response.text()
    yield node
    await close_node(node)


@pytest.fixture
def web(file_node):
    """The node serving `raw` and `hello`, and its web listener's base URL."""
    return file_node, f"http://{file_node.app[CONFIG].node.web_listen}"


async def _exchange(base: str, *requests: bytes) -> bytes:
    """`requests` sent one after another on one connection (the last closing it), and all that came back."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"".join(requests))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def _post(path: str, body: bytes, method: bytes = b"POST", extra: bytes = b"") -> bytes:
    return (method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


LAST = b"GET /fn/hello/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _responses(data: bytes, head_only: bool = False) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """The responses in `data`, each framed by its Content-Length or its chunks (status line, headers, body;
    `head_only`: the first has no body, whatever its headers say, as the answer to a HEAD); what follows the last
    whole one, unframed, is a response of its own with no head."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.1 "):
            found.append((b"", {}, data))
            break
        status, *lines = head.split(b"\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
        if head_only and not found:
            body, data = b"", rest
        elif headers.get(b"transfer-encoding") == b"chunked":  # a run that streams its answer (on a worker)
            body, data = _dechunked(rest)
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, data = rest[:length], rest[length:]
        found.append((status, headers, body))
    return found


def _dechunked(data: bytes) -> tuple[bytes, bytes]:
    """The chunked body at the start of `data`, decoded, and what follows it."""
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        size = int(size.split(b";")[0], 16)
        if size == 0:
            return body, data.partition(b"\r\n")[2]  # (no trailers)
        body, data = body + data[:size], data[size + 2:]


HOSTILE_HEADS = [
    b"Status: 100\n\nHTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 0\r\n\r\n",  # interim: no answer follows
    b"Status: 101\n\nhello",  # a proxy would tunnel the connection from here on
    b"Status: 99\n\nx", b"Status: 1000 x\n\nx", b"Status: abc\n\nx", b"Status: 2_00\n\nx", b"Status: \n\nx",
    b"X-Split: a\rSet-Cookie: b=c\n\nbody",  # a lone CR
    b"X-Nul: a\x00b\n\nbody",
    b"X-Latin: caf\xe9\n\nbody",  # not UTF-8
    b"X(Bad: a\n\nbody", b": no name\n\nbody", b" folded: a\n\nbody",
    b"Content-Type: text/plain\n" * 4000,  # a head of 100 KB, no blank line
    # a length that is not what the function wrote: a cache in front would keep a cut answer as whole
    b"Content-Length: 100\n\nshort", b"Content-Length: 1\n\nlonger", b"Content-Length: x\n\nbody",
    b"Content-Length: 4\nContent-Length: 5\n\nbody",
]


async def _hello_served(port: int) -> None:
    """The web listener on `port` still serves the `hello` function."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/fn/hello/") as response:
            assert response.status == 200


async def _read_until_cut(reader: asyncio.StreamReader) -> bytes:
    """All the node sent before it closed the connection: a byte dripped after its close makes that close a reset."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def _dripped(writer: asyncio.StreamWriter, pieces: list[bytes], until: asyncio.Future, pace: float) -> None:
    """Write `pieces` one at a time, `pace` seconds apart (the caller's pace, not a wait for the node: what is
    awaited is `until`), until `until` is done."""
    for piece in pieces:
        if until.done():
            return
        writer.write(piece)
        await asyncio.wait([until], timeout=pace)


async def test_a_hostile_cgi_head_is_a_502_problem_and_the_connection_serves_the_next_request(web) -> None:
    node, base = web
    for head in HOSTILE_HEADS:
        answers = _responses(await _exchange(base, _post("/fn/raw/", head), LAST))
        assert [a[0] for a in answers] == [b"HTTP/1.1 502 Bad Gateway", b"HTTP/1.1 200 OK"], (head[:40], answers)
        (_, headers, body), (_, last_headers, _) = answers
        assert headers[b"content-type"].startswith(b"application/problem+json"), head[:40]
        assert json.loads(body)["code"] == "function-failed" and last_headers[b"x-hello"] == b"yes", head[:40]
    # What a function may say is kept as it said it: a UTF-8 value byte for byte, its Status beside a Location.
    status, headers, body = _responses(await _exchange(base, _post(
        "/fn/raw/", "Status: 200 OK\nLocation: /fn/hello/\nX-Name: café\n\nbody".encode(),
        extra=b"Connection: close\r\n")))[0]
    assert status == b"HTTP/1.1 200 OK" and headers[b"x-name"] == "café".encode() and body == b"body"
    status, headers, _ = _responses(await _exchange(base, _post("/fn/raw/", b"Location: /fn/hello/\n\n",
                                                                extra=b"Connection: close\r\n")))[0]
    assert status == b"HTTP/1.1 302 Found" and headers[b"location"] == b"/fn/hello/"
    # Headers that reach past the function to its origin (every function on the listener) are dropped, and so is
    # a cookie a browser would send as the dashboard's session (one with no name is sent as its value alone).
    status, headers, _ = _responses(await _exchange(base, _post(
        "/fn/raw/", b'Service-Worker-Allowed: /\nClear-Site-Data: "cookies"\nSet-Cookie: =xsc_session_1=stolen\n'
        b"Set-Cookie: XSC_session_1\nSet-Cookie: theirs=1; Path=/\nX-Kept: 1\n\n", extra=b"Connection: close\r\n")))[0]
    assert b"service-worker-allowed" not in headers and b"clear-site-data" not in headers
    assert headers[b"x-kept"] == b"1" and headers[b"set-cookie"] == b"theirs=1; Path=/"


async def test_a_streamed_answer_is_sent_with_its_declared_length_and_cut_short_if_it_writes_less(web) -> None:
    """An answer longer than the pipe's buffer waits for the loop to read it, so its head is sent before its run
    ends, with the length its function declares (a download's progress, a cache's check); what it wrote is checked
    at its end, and a caller told more than it wrote sees an incomplete body."""
    node, base = web
    written, declared = 4 << 20, 8 << 20
    answer = b"Content-Length: %d\n\n" % declared + b"z" * written
    data = await _exchange(base, _post("/fn/raw/", answer, extra=b"Connection: close\r\n"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"\r\ncontent-length: %d" % declared in head.lower(), head
    assert len(body) == written  # and then the connection was cut
    await _hello_served(int(base.rsplit(":", 1)[1]))


@pytest.mark.parametrize("method, status", [(b"HEAD", b"200"), (b"POST", b"204"), (b"POST", b"304")])
async def test_no_body_follows_the_head_of_a_head_request_or_a_204_or_304(web, method, status) -> None:
    """A long answer (on disk, sent in chunks) to a request whose answer has no body: its bytes, unframed, would
    be read by the caller as the answer to its next request on the connection."""
    node, base = web
    smuggled = b"HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 0\r\n\r\n"
    body = b"Status: " + status + b"\nX-First: yes\n\n" + smuggled + b"z" * (2 << 20)
    answers = _responses(await _exchange(base, _post("/fn/raw/", body, method), LAST), head_only=method == b"HEAD")
    assert [a[0][:12] for a in answers] == [b"HTTP/1.1 " + status, b"HTTP/1.1 200"], answers[1][:2]
    assert answers[0][1][b"x-first"] == b"yes" and answers[1][1][b"x-hello"] == b"yes"
    assert answers[0][2] == b""


async def test_cgi_variables_from_a_hostile_request_are_what_the_caller_sent_and_nothing_else(web) -> None:
    node, base = web
    request = (b"GET /fn/hello/a?next=%26admin%3Dtrue&q=a+b%2Fc HTTP/1.1\r\nHost: x\r\n"
               b"X-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.2\r\n"
               b"Proxy: http://evil:8080/\r\nX-Bin: caf\xe9\xff\r\nConnection: close\r\n\r\n")
    status, _, body = _responses(await _exchange(base, request))[0]
    assert status == b"HTTP/1.1 200 OK", body
    variables = dict(line.partition(b"=")[::2] for line in body.split(b"\n") if b"=" in line)
    assert variables[b"QUERY_STRING"] == b"next=%26admin%3Dtrue&q=a+b%2Fc"  # as sent: one parameter, not two
    assert variables[b"HTTP_X_FORWARDED_FOR"] == b"10.0.0.1, 10.0.0.2"  # not the one named with '_'
    assert b"HTTP_PROXY" not in variables
    assert variables[b"HTTP_X_BIN"] == "caf\ufffd\ufffd".encode()  # bytes that are not UTF-8, replaced
    # A path a function (or a proxy in front) would be walked past its prefix with, or one a NUL would cut short.
    for path in (b"/fn/hello/public/../private/x", b"/fn/hello/public/..%2Fprivate/x", b"/fn/hello/a%2Fb",
                 b"/fn/hello/%2e%2e/x", b"/fn/hello/a/./b", b"/fn/hello/a%00b"):
        status, headers, body = _responses(await _exchange(
            base, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[0]
        assert status == b"HTTP/1.1 400 Bad Request", (path, body)
        assert headers[b"content-type"].startswith(b"application/problem+json"), path
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/fn/hello/.well-known/x?u=%2F") as response:
            assert response.status == 200 and "PATH_INFO=/.well-known/x" in (await response.text()).splitlines()


async def test_cgi_variables_name_the_route_the_server_and_the_decoded_path_as_rfc_3875_and_wagi_do(web) -> None:
    """SCRIPT_NAME is the route's prefix, PATH_INFO what follows it decoded (X_RAW_PATH_INFO as sent), SERVER_NAME
    and SERVER_PORT the Host header's (else the listener's port).  A path that decodes to a control character is
    refused: in a variable, %0a would split the lines of a log or of a header the function writes it into."""
    node, base = web
    port = base.rsplit(":", 1)[1].encode()

    async def variables(target: bytes, host: bytes, method: bytes = b"GET") -> dict[bytes, bytes]:
        status, _, body = _responses(await _exchange(
            base, method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"))[0]
        assert status == b"HTTP/1.1 200 OK", (target, body)
        return dict(line.partition(b"=")[::2] for line in body.split(b"\n") if b"=" in line)

    found = await variables(b"/fn/hello/caf%C3%A9/a%20b%ff%25?x=%41", b"example.test:8443")
    assert found[b"SCRIPT_NAME"] == b"/fn/hello" and found[b"X_MATCHED_ROUTE"] == b"/fn/hello/..."
    assert found[b"PATH_INFO"] == "/caf\u00e9/a b\ufffd%".encode(), found  # decoded; a byte not UTF-8 replaced
    assert found[b"X_RAW_PATH_INFO"] == b"/caf%C3%A9/a%20b%ff%25" and found[b"QUERY_STRING"] == b"x=%41"
    assert (found[b"SERVER_NAME"], found[b"SERVER_PORT"]) == (b"example.test", b"8443")
    found = await variables(b"http://example.test/fn/hello/a%20b?x=1", b"example.test")  # an absolute-form target
    assert (found[b"SCRIPT_NAME"], found[b"PATH_INFO"], found[b"X_RAW_PATH_INFO"]) == (b"/fn/hello", b"/a b", b"/a%20b")
    found = await variables(b"/fn/hello", b"x", b"POST")  # (a GET of it is sent to /fn/hello/)
    assert (found[b"SERVER_NAME"], found[b"SERVER_PORT"], found[b"PATH_INFO"]) == (b"x", port, b"/"), found
    found = await variables(b"/fn/hello/", b"[::1]:9")
    assert (found[b"SERVER_NAME"], found[b"SERVER_PORT"]) == (b"[::1]", b"9"), found
    for path in (b"/fn/hello/a%0ab", b"/fn/hello/a%0Db", b"/fn/hello/%1b[31m", b"/fn/hello/a%7f"):
        status, headers, body = _responses(await _exchange(
            base, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[0]
        assert status == b"HTTP/1.1 400 Bad Request" and json.loads(body)["code"] == "bad-request", (path, body)


async def test_a_get_or_head_of_a_function_without_its_slash_is_redirected_there_and_nowhere_else(web) -> None:
    """A static site served at /fn/NAME would resolve its relative links against /fn/: a GET or HEAD is sent to
    /fn/NAME/ (301, its query kept), as static hosts redirect a directory; the Location is a path of this function's,
    whatever path, query or Host a caller sends.  Other methods are served there (a webhook is not bounced)."""
    node, base = web

    async def sent(target: bytes, method: bytes = b"GET", extra: bytes = b"") -> tuple[bytes, dict, bytes]:
        return _responses(await _exchange(base, method + b" " + target + b" HTTP/1.1\r\nHost: evil.example\r\n"
                                          + extra + b"Connection: close\r\n\r\n"), head_only=method == b"HEAD")[0]

    for target, location in ((b"/fn/hello", b"/fn/hello/"), (b"/fn/hello?a=1&b=%2F", b"/fn/hello/?a=1&b=%2F"),
                             (b"http://evil.example/fn/hello", b"/fn/hello/"),  # an absolute-form target
                             (b"/fn/hello?%0d%0aSet-Cookie:%20x=1", b"/fn/hello/?%0d%0aSet-Cookie:%20x=1")):
        for method in (b"GET", b"HEAD"):
            status, headers, body = await sent(target, method)
            assert status == b"HTTP/1.1 301 Moved Permanently", (target, method, status, body)
            assert headers[b"location"] == location and body == b"" and b"set-cookie" not in headers, headers
    # A path that would be another site's (//evil.example/...) is no function's: 404, never a redirect.
    for target in (b"//evil.example/fn/hello", b"/fn//evil.example", b"//evil.example", b"/fn/%2Fevil.example",
                   b"/fn/hello%2F"):
        status, headers, body = await sent(target)
        assert status == b"HTTP/1.1 404 Not Found" and b"location" not in headers, (target, status, headers)
    # A CR, LF or byte past ASCII in the target splits no header: aiohttp refuses it (400) or ends the request line
    # there (an LF), before any function's.
    for target in (b"/fn/hello?a\rLocation: //evil.example", b"/fn/hello?a\nLocation: //evil.example",
                   b"/fn/hello?caf\xc3\xa9"):
        data = await _exchange(base, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head = data.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert [line for line in head if line.startswith(b"location:") and b"evil" in line] == [], (target, data)
    for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
        status, _, body = await sent(b"/fn/hello", method, b"Content-Length: 0\r\n")
        assert status == b"HTTP/1.1 200 OK" and b"\nPATH_INFO=/\n" in body, (method, status, body[:200])
    # What a browser does: it follows the redirect to the page its links resolve against.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/fn/hello?x=1") as response:
            assert response.status == 200 and str(response.url) == f"{base}/fn/hello/?x=1"
            assert "SCRIPT_NAME=/fn/hello" in (await response.text()).splitlines()


def _variables(body: bytes) -> dict[bytes, bytes]:
    return dict(line.partition(b"=")[::2] for line in body.split(b"\n") if b"=" in line)


async def test_cgi_variables_are_every_one_wagi_sets_and_no_header_or_env_passes_for_one(web) -> None:
    """X_FULL_URL, REMOTE_HOST (the address: nothing is looked up), PATH_TRANSLATED, AUTH_TYPE and REMOTE_USER are
    set as WAGI sets them, SERVER_PROTOCOL is the request's, CONTENT_LENGTH is a chunked body's length once read.
    A header named like one of them is HTTP_<NAME>, never the variable; the owner's env does not replace one."""
    node, base = web
    module = await deploy(node, "cgi", wasi=True)
    response = await node.post("/v1/compute/functions", json={
        "name": "owned", "module": module, "env": {"X_FULL_URL": "owner", "REMOTE_HOST": "owner", "MODE": "kept"}})
    assert response.status == 201, await response.text()
    hostile = (b"X-Full-Url: http://evil/\r\nRemote-Host: evil\r\nPath-Translated: /etc/passwd\r\n"
               b"Proxy: http://evil:8080/\r\nAuth-Type: Basic\r\nServer-Protocol: HTTP/9\r\n")
    status, _, body = _responses(await _exchange(base, b"GET /fn/owned/caf%C3%A9/x?a=%41 HTTP/1.1\r\n"
                                                       b"Host: example.test:8443\r\n" + hostile
                                                       + b"Connection: close\r\n\r\n"))[0]
    assert status == b"HTTP/1.1 200 OK", body
    found = _variables(body)
    assert found[b"X_FULL_URL"] == b"http://example.test:8443/fn/owned/caf%C3%A9/x?a=%41", found
    assert found[b"REMOTE_HOST"] == found[b"REMOTE_ADDR"] == b"127.0.0.1"
    assert found[b"PATH_TRANSLATED"] == found[b"PATH_INFO"] == "/caf\u00e9/x".encode()
    assert (found[b"AUTH_TYPE"], found[b"REMOTE_USER"], found[b"CONTENT_TYPE"], found[b"CONTENT_LENGTH"]) == (
        b"", b"", b"", b"0")
    assert (found[b"GATEWAY_INTERFACE"], found[b"SERVER_PROTOCOL"], found[b"SERVER_SOFTWARE"]) == (
        b"CGI/1.1", b"HTTP/1.1", b"xsc")
    assert found[b"HTTP_X_FULL_URL"] == b"http://evil/" and found[b"HTTP_REMOTE_HOST"] == b"evil"
    assert found[b"HTTP_PATH_TRANSLATED"] == b"/etc/passwd" and found[b"HTTP_AUTH_TYPE"] == b"Basic"
    assert b"HTTP_PROXY" not in found and b"HTTP_CONNECTION" not in found and found[b"MODE"] == b"kept"
    # An HTTP/1.0 request is told as one; a path-less target's URL is the one sent.
    data = await _exchange(base, b"POST /fn/hello HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200 OK"), data[:200]
    found = _variables(data.partition(b"\r\n\r\n")[2])
    port = base.rsplit(":", 1)[1]
    assert found[b"SERVER_PROTOCOL"] == b"HTTP/1.0" and found[b"X_FULL_URL"] == f"http://x:{port}/fn/hello".encode()
    # A chunked body, small (tried in a runner or on the loop) and large (a worker's): its length once read.
    for size in (5, 100_000):
        chunk = b"z" * size
        status, _, body = _responses(await _exchange(base, (
            b"POST /fn/hello/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n" % size + chunk + b"\r\n0\r\n\r\n")))[0]
        assert status == b"HTTP/1.1 200 OK" and body.endswith(chunk), body[:200]
        assert _variables(body[:-size])[b"CONTENT_LENGTH"] == str(size).encode(), size


async def test_ranges_of_an_answer_follow_rfc_9110(web) -> None:
    node, base = web
    data = bytes(range(100))
    answer = b'ETag: "v2"\nLast-Modified: Sat, 28 Nov 2026 12:00:00 GMT\n\n' + data

    async def ranged(**headers) -> tuple[int, dict, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/fn/raw/", data=answer, headers=headers) as response:
                return response.status, dict(response.headers), await response.read()

    status, headers, body = await ranged(Range="bytes=200-")
    assert status == 416 and headers["Content-Range"] == "bytes */100", headers
    assert json.loads(body)["code"] == "range-not-satisfiable"
    assert (await ranged(Range="bytes=-0"))[1]["Content-Range"] == "bytes */100"
    status, headers, body = await ranged(Range="bytes=-3")
    assert status == 206 and body == data[-3:] and headers["Content-Range"] == "bytes 97-99/100"
    lying = b"Content-Range: bytes 0-99/100\n\n" + data  # a range of a 200 has the node's Content-Range alone
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/fn/raw/", data=lying, headers={"Range": "bytes=10-19"}) as response:
            assert response.status == 206 and response.headers.getall("Content-Range") == ["bytes 10-19/100"]
    assert (await ranged(Range="bytes=0-1,5-6"))[0] == 200  # several ranges: the whole answer, as RFC 9110 allows
    assert (await ranged(Range="bytes=\u0663-5"))[0] == 200  # digits of another script are no range
    assert (await ranged(Range=f"bytes={'9' * 5000}-"))[0] == 416  # more digits than int() reads: past the end
    # A caller resuming a download of an answer that has changed since gets it whole, not a splice of the two.
    for stale in ('"v1"', 'W/"v2"', "Sat, 28 Nov 2026 11:00:00 GMT"):
        status, _, body = await ranged(Range="bytes=50-", **{"If-Range": stale})
        assert status == 200 and body == data, stale
    for current in ('"v2"', "Sat, 28 Nov 2026 12:00:00 GMT"):
        status, _, body = await ranged(Range="bytes=50-", **{"If-Range": current})
        assert status == 206 and body == data[50:], current


async def test_a_conditional_get_of_an_answer_with_validators_is_304_without_a_body(web) -> None:
    """What a browser or a CDN revalidating its copy sends: a 304 when the answer's validator is the one it holds
    (RFC 9110 13.1), with the headers that refresh the copy and no body; the whole answer otherwise."""
    node, base = web
    answer = (b'ETag: "v1"\nLast-Modified: Sat, 28 Nov 2026 12:00:00 GMT\nCache-Control: max-age=60\n'
              b"Content-Type: text/plain\n\nbody")

    async def sent(method: str = "GET", data: bytes = answer, **headers) -> tuple[int, Any, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"{base}/fn/raw/", data=data, headers=headers) as response:
                return response.status, response.headers.copy(), await response.read()

    for condition in ({"If-None-Match": '"v1"'}, {"If-None-Match": 'W/"v0", W/"v1"'}, {"If-None-Match": "*"},
                      {"If-Modified-Since": "Sat, 28 Nov 2026 12:00:00 GMT"},
                      {"If-Modified-Since": "Sun, 29 Nov 2026 12:00:00 GMT"}):
        for method in ("GET", "HEAD"):
            status, headers, body = await sent(method, **condition)
            assert status == 304 and body == b"", (method, condition, status)
            assert headers["ETag"] == '"v1"' and headers["Cache-Control"] == "max-age=60", condition
            assert "Content-Type" not in headers, condition
    for condition in ({"If-None-Match": '"v0"'}, {"If-Modified-Since": "Sat, 28 Nov 2026 11:00:00 GMT"},
                      {"If-Modified-Since": "not a date"},
                      # If-None-Match decides when both are sent (RFC 9110 13.2.2)
                      {"If-None-Match": '"v0"', "If-Modified-Since": "Sun, 29 Nov 2026 12:00:00 GMT"}):
        status, _, body = await sent(**condition)
        assert status == 200 and body == b"body", condition
    assert (await sent("POST", **{"If-None-Match": '"v1"'}))[0] == 200  # a 304 answers only a GET or a HEAD
    no_validator = b"Content-Type: text/plain\n\nbody"
    assert (await sent(data=no_validator, **{"If-None-Match": '"v1"'}))[0] == 200
    status, headers, body = await sent(data=b"Status: 404\nETag: \"v1\"\n\ngone", **{"If-None-Match": '"v1"'})
    assert status == 404 and body == b"gone"


async def test_if_match_and_if_unmodified_since_that_do_not_hold_of_a_gets_answer_are_412(web) -> None:
    """What a client making sure it reads the version it holds sends (RFC 9110 13.1.1, 13.1.4): 412 when the answer's
    ETag is none of `If-Match`'s tags (strong comparison: a weak tag never matches), or, with no `If-Match`, it was
    modified after `If-Unmodified-Since`; judged before `If-None-Match` and `Range` (13.2.2), and only of a 2xx
    answer to a GET or HEAD.  Another method's conditions are its function's to judge: they reach it as HTTP_*."""
    node, base = web
    answer = b'ETag: "v1"\nLast-Modified: Sat, 28 Nov 2026 12:00:00 GMT\nContent-Type: text/plain\n\nbody'

    async def listed() -> dict | None:
        found = {f["name"]: f for f in (await (await node.get("/v1/compute/functions")).json())["functions"]}["raw"]
        return found if found["in_flight"] == 0 else None

    errors_before = (await eventually_async(listed, "the runs of the file's tests before ended"))["errors"]

    async def sent(method: str = "GET", data: bytes = answer, **headers) -> tuple[int, Any, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"{base}/fn/raw/", data=data, headers=headers) as response:
                return response.status, response.headers.copy(), await response.read()

    earlier, same, later = ("Sat, 28 Nov 2026 11:00:00 GMT", "Sat, 28 Nov 2026 12:00:00 GMT",
                            "Sun, 29 Nov 2026 12:00:00 GMT")
    for condition in ({"If-Match": '"v0"'}, {"If-Match": 'W/"v1"'}, {"If-Match": '"v0", W/"v1"'},
                      {"If-Unmodified-Since": earlier},
                      {"If-Match": '"v0"', "If-Unmodified-Since": later},
                      {"If-Match": '"v0"', "If-None-Match": '"v1"'},  # 412 before 304 (RFC 9110 13.2.2)
                      {"If-Match": '"v0"', "Range": "bytes=0-1"}, {"If-Unmodified-Since": earlier, "Range": "bytes=0-1"}):
        for method in ("GET", "HEAD"):
            status, headers, body = await sent(method, **condition)
            assert status == 412, (method, condition, status, body)
            assert headers["Content-Type"].startswith("application/problem+json"), condition
            if method == "GET":
                assert json.loads(body)["code"] == "precondition-failed", body
    for condition in ({"If-Match": '"v1"'}, {"If-Match": '"v0", "v1"'}, {"If-Match": "*"},
                      {"If-Unmodified-Since": same}, {"If-Unmodified-Since": later},
                      {"If-Unmodified-Since": "not a date"},
                      {"If-Match": '"v1"', "If-Unmodified-Since": earlier}):  # If-Unmodified-Since ignored then
        status, _, body = await sent(**condition)
        assert status == 200 and body == b"body", (condition, status, body)
    assert (await sent(**{"If-Match": '"v1"', "If-None-Match": '"v1"'}))[0] == 304
    status, _, body = await sent(**{"If-Match": '"v1"', "Range": "bytes=0-1"})
    assert status == 206 and body == b"bo"
    # A tag listed on two lines, or holding a ',', is matched whole.
    two_lines = b'If-Match: "v0"\r\nIf-Match: "v1"\r\nConnection: close\r\n'
    data = await _exchange(base, _post("/fn/raw/", answer, b"GET", two_lines))
    assert _responses(data)[0][0] == b"HTTP/1.1 200 OK", data[:300]
    comma = b'ETag: "a,b"\n\nbody'
    assert (await sent(data=comma, **{"If-Match": '"a,b"'}))[0] == 200
    assert (await sent(data=comma, **{"If-Match": '"a"'}))[0] == 412
    # A weak ETag never matches If-Match; no ETag, only `*`; no Last-Modified, If-Unmodified-Since is ignored.
    assert (await sent(data=b'ETag: W/"v1"\n\nbody', **{"If-Match": 'W/"v1"'}))[0] == 412
    no_validator = b"Content-Type: text/plain\n\nbody"
    assert (await sent(data=no_validator, **{"If-Match": '"v1"'}))[0] == 412
    assert (await sent(data=no_validator, **{"If-Match": "*"}))[0] == 200
    assert (await sent(data=no_validator, **{"If-Unmodified-Since": earlier}))[0] == 200
    # Only a 2xx answer is judged; another method's conditions are its function's, which sees them.
    status, _, body = await sent(data=b"Status: 404\nETag: \"v1\"\n\ngone", **{"If-Match": '"v0"'})
    assert status == 404 and body == b"gone"
    status, _, body = await sent("POST", **{"If-Match": '"v0"', "If-Unmodified-Since": earlier})
    assert status == 200 and body == b"body"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base}/fn/hello/doc", data=b"new",
                               headers={"If-Match": '"v0"', "If-Unmodified-Since": earlier}) as response:
            lines = (await response.text()).splitlines()
            assert response.status == 200 and 'HTTP_IF_MATCH="v0"' in lines, lines
            assert f"HTTP_IF_UNMODIFIED_SINCE={earlier}" in lines, lines

    # A 412 (or a 416) answers what its caller asked: no error of the function's in its owner's list.
    assert (await sent(Range="bytes=500-"))[0] == 416
    assert (await eventually_async(listed, "every request's run ended"))["errors"] == errors_before


async def test_a_bare_etag_a_function_writes_is_quoted_and_matched_and_one_no_quoting_mends_is_dropped(web) -> None:
    """An entity tag is quoted (RFC 9110 8.8.3), and a caller sends back the tag it was given: a function's bare
    `ETag: v1` is answered `"v1"` (and `W/v1`, `W/"v1"`), so that `If-Match` and `If-None-Match` with it hold; one that
    no quoting makes a tag (a space or a '"' inside) is not sent, and matches nothing but `*`."""
    node, base = web

    async def sent(data: bytes, **headers) -> tuple[int, Any, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/fn/raw/", data=data, headers=headers) as response:
                return response.status, response.headers.copy(), await response.read()

    bare = b"ETag: v1\nContent-Type: text/plain\n\nbody"
    status, headers, body = await sent(bare)
    assert status == 200 and headers["ETag"] == '"v1"' and body == b"body", headers
    status, _, body = await sent(bare, **{"If-Match": headers["ETag"]})
    assert status == 200 and body == b"body"
    assert (await sent(bare, **{"If-None-Match": headers["ETag"]}))[0] == 304
    status, headers, _ = await sent(bare, Range="bytes=1-2", **{"If-Range": '"v1"'})
    assert status == 206 and headers["ETag"] == '"v1"'
    weak = (await sent(b"ETag: W/v1\n\nbody"))[1]["ETag"]
    assert weak == 'W/"v1"' and (await sent(b"ETag: W/v1\n\nbody", **{"If-None-Match": '"v1"'}))[0] == 304
    for broken in (b"a b", b'a"b', b'"v1'):
        status, headers, body = await sent(b"ETag: " + broken + b"\n\nbody")
        assert status == 200 and "ETag" not in headers and body == b"body", (broken, headers)
        assert (await sent(b"ETag: " + broken + b"\n\nbody", **{"If-Match": '"' + broken.decode() + '"'}))[0] == 412
        assert (await sent(b"ETag: " + broken + b"\n\nbody", **{"If-Match": "*"}))[0] == 200


SMUGGLED = b"GET /fn/hello/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
AMBIGUOUS = {  # bodies a proxy in front and the node could frame two ways, each hiding SMUGGLED
    "Content-Length and chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "chunked and Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two lengths": b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "chunked, then another coding": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "an unknown coding": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "a space before the colon": b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "a folded coding": b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "a chunk size past 64 bits": b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"5\r\nx\r\n0\r\n\r\n" + SMUGGLED,
    "chunks ended by bare LFs": b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + SMUGGLED,
    "a signed length": b"Content-Length: +%d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
}


async def test_a_request_framed_two_ways_is_a_400_problem_and_smuggles_no_request(web) -> None:
    """Request smuggling: a body whose length a proxy in front and the node could read two ways would let a caller
    hide a request inside it (run by the node, answered to the next caller behind the proxy).  The node's parser
    refuses each such head, 400 with a problem body, and closes the connection: the hidden request never runs."""
    node, base = web
    for what, rest in AMBIGUOUS.items():
        data = await _exchange(base, b"POST /fn/raw/ HTTP/1.1\r\nHost: x\r\n" + rest, LAST)
        assert b" 400 Bad Request\r\n" in data and b"malformed-request" in data, (what, data[:300])
        assert b"smuggled" not in data and b"X-Hello" not in data, (what, data[:600])
    requests = [r["record"].get("job", {}).get("request", "")
                for r in node.app[NODE].compute.provenance_records.recent(200)]
    assert not [r for r in requests if "smuggled" in r], requests


async def test_a_body_sent_with_expect_100_continue_is_asked_for_only_if_the_function_would_take_it(web) -> None:
    """`Expect: 100-continue`: a caller waits to be told to send its body.  A request its function refuses whatever
    the body holds (none such, over its cap, a path that is no function's) is answered before the body is sent, with
    no 100 that would have the caller send it into a closed connection; one the function takes is told to go on, and
    answered."""
    _, base = web
    host, port = base.removeprefix("http://").split(":")
    for path, length, status in (("/fn/hello/x", 20_000_000, b"413"), ("/fn/nosuch/x", 20_000_000, b"404"),
                                 ("/elsewhere", 20_000_000, b"404"), ("/fn/raw/", 15, b"100")):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                         % (path.encode(), length))
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert first.startswith(b"HTTP/1.1 " + status + b" "), (path, first)
            if status == b"100":
                writer.write(b"Status: 200\n\nok")
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                assert answer.startswith(b"HTTP/1.1 200 "), answer
        finally:
            writer.close()


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_idle_timeout(node_factory) -> None:
    """Slowloris: a caller sending its head a byte at a time, each well within the idle timeout, is cut once the
    connection has been open that long without a whole request, however many bytes it trickled."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "idle_timeout": 1})
    await node.post("/v1/compute/functions", json={"name": "hello", "module": await deploy(node, "cgi", wasi=True)})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /fn/hello/ HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 20
    closed = asyncio.ensure_future(_read_until_cut(reader))
    try:
        await _dripped(writer, [head[i:i + 1] for i in range(len(head))], closed, pace=0.05)
        assert closed.done() and closed.result() == b"", "the node still reads a head that drips"
    finally:
        closed.cancel()
        writer.close()
    await _hello_served(port)


async def test_idle_connections_to_the_web_listener_are_capped_per_address_and_closed(node_factory) -> None:
    """Anyone may connect to the web listener: sockets that send nothing are capped per address (503 past it) and
    closed after node.idle_timeout, as on the node's own listener, not kept for an hour each until the node's
    descriptors run out."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "max_connections_per_ip": 16,
                                                    "idle_timeout": 2})
    await node.post("/v1/compute/functions", json={"name": "hello", "module": await deploy(node, "cgi", wasi=True)})
    answers = await silent_connections(port, 48)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 48 - 16 and all(b"too-many-connections" in a for a in refused)
    assert set(answers) - set(refused) <= {b""}  # the rest closed once idle
    await _hello_served(port)


async def test_a_caller_that_stops_reading_a_long_answer_is_cut_and_the_answer_removed(node_factory) -> None:
    """A caller that takes no bytes of an answer for node.idle_timeout seconds is cut, as on the user API: else it
    held its answer (on disk past 1 MiB) and its connection for as long as it stayed connected."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "idle_timeout": 1})
    module = await deploy(node, "cgi", wasi=True)
    await node.post("/v1/compute/functions", json={"name": "raw", "module": module, "entrypoint": "raw"})
    work_dir = node.app[NODE].functions.work_dir
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # what the kernel takes for it: little
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(_post("/fn/raw/", b"Content-Type: application/octet-stream\n\n" + b"x" * (12 << 20)))
    await writer.drain()
    await eventually_async(lambda: list(work_dir.glob("stdout-*")), "the answer written to its file")
    try:
        await eventually_async(lambda: not list(work_dir.glob("stdout-*")), "the stalled caller cut", 30)
    finally:
        writer.close()


async def test_a_caller_whose_body_stops_is_answered_408_and_frees_its_run(node_factory) -> None:
    """A body that stops coming holds one of its function's runs (its concurrency) and the budget held for it: after
    node.idle_timeout seconds without a byte it is answered 408, and the function serves others."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "idle_timeout": 1})
    module = await deploy(node, "cgi", wasi=True)
    await node.post("/v1/compute/functions", json={"name": "hello", "module": module, "concurrency": 1})
    for declared in (100, 10 << 20):  # tried on the loop first, or read to a worker's file
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /fn/hello/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nfirst bytes" % declared)
        try:  # one answer (the connection is closed after it, once aiohttp's lingering read ends)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status, headers, _ = _responses(head)[0]
            body = await reader.readexactly(int(headers[b"content-length"]))
        finally:
            writer.close()
        assert status == b"HTTP/1.1 408 Request Timeout" and json.loads(body)["code"] == "body-timeout", body
        ledger, owner = node.app[NODE].ledger, node.app[CLIENT_IDENTITY].public_key
        await eventually_async(lambda: ledger.held(owner) == 0, "its budget given back")  # (and runs' recorded)
    # A byte at a time, each within the idle timeout: at less than MIN_BODY_RATE bytes a second, 408 all the same.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /fn/hello/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    answered = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        await _dripped(writer, [b"x"] * 40, answered, pace=0.5)
        assert answered.done(), "the node still waits for a body that drips"
        assert _responses(answered.result())[0][0] == b"HTTP/1.1 408 Request Timeout"
    finally:
        answered.cancel()
        writer.close()
        await _hello_served(port)


async def test_callers_at_once_cannot_take_a_function_past_its_spend_cap_by_more_than_one_run(node_factory) -> None:
    """A cap far below what a run may cost (a careless owner's): callers arriving together while the hour is under
    it would each be admitted, and each run spend up to its budget past it.  What the runs in flight may still cost
    counts against the cap; one run at a time may always start."""
    port = free_port()
    node = await node_factory("web", **QUIET, node={"web_listen": f"127.0.0.1:{port}", "web_rate_limit": 1000})
    module = await deploy(node, "cgi", wasi=True)
    response = await node.post("/v1/compute/functions", json={
        "name": "capped", "module": module, "entrypoint": "trickle", "limits": {"timeout": 1.0}, "spend_cap": 1000})
    assert response.status == 201, await response.text()

    async def one(session) -> int | str:
        try:
            async with session.get(f"http://127.0.0.1:{port}/fn/capped/") as answer:
                await answer.read()
                return answer.status
        except aiohttp.ClientPayloadError:
            return "cut at its deadline"

    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(one(session) for _ in range(8)))
    assert statuses.count("cut at its deadline") == 1 and set(statuses) <= {"cut at its deadline", 503, 402}, statuses

    def runs() -> list[dict]:
        return [r["record"] for r in node.app[NODE].compute.provenance_records.recent(50)
                if r["record"].get("job", {}).get("function") == "capped"]

    ran = await eventually_async(lambda: runs(), "the one run recorded")
    listed = (await (await node.get("/v1/compute/functions")).json())["functions"][0]
    assert len(ran) == 1 and listed["spent_this_hour"] == ran[0]["charge"] and listed["in_flight"] == 0
    async with aiohttp.ClientSession() as session:
        assert await one(session) == 402  # the hour's cap reached: nothing more charged

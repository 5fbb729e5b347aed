"""The clients of a node's API read its answers no further than they need: a JSON answer past MAX_ANSWER is an error
said in one line (not a process that buffers whatever it is sent), a problem body is read as far as MAX_PROBLEM,
and an answer of exactly MAX_ANSWER bytes is read whole; a call's answer of no Content-Length (the node gives every
one) is refused in one line.  Against a server that answers what each path asks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import ThreadingHTTPServer

import pytest

from xsc.client import aio, sync
from xsc.errors import NodeNotRunning, NotFound, XscError

from tests.support.http_stub import QuietHandler, serving

LIMIT = 64 * 1024  # MAX_ANSWER in these tests
AT_LIMIT = json.dumps(["x" * (LIMIT - 6)]).encode()  # a JSON answer of exactly LIMIT bytes
OVER_LIMIT = json.dumps(["x" * (16 * LIMIT)]).encode()
PROBLEM = json.dumps({"code": "not-found", "status": 404, "detail": "no such file"}).encode()


class _Answers(QuietHandler):
    hosts: list[str] = []  # the Host header of each request

    def _answer(self) -> None:
        # One request a connection: a chunked body (post_stream's) is left unread, and must not be taken for the next.
        self.close_connection = True
        self.hosts.append(self.headers.get("Host", ""))
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/hang-up":
            return  # no answer: the connection is closed
        status, body, chunked = {
            "/at-limit": (200, AT_LIMIT, False),
            "/over-limit": (200, OVER_LIMIT, False),
            "/over-limit-chunked": (200, OVER_LIMIT, True),
            "/problem": (404, PROBLEM, False),
            "/problem-free": (200, b'{"ok": true}', False),
            "/not-json": (200, b"<html>a web page</html>", False),
            "/not-json-deep": (200, b"[" * 60_000, False),  # deeper than any parser goes, within LIMIT
            "/long-problem": (500, b"<" * (sync.MAX_PROBLEM * 8), False),
            "/long-problem-chunked": (500, b"<" * (sync.MAX_PROBLEM * 8), True),
        }[self.path.split("?")[0]]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for start in range(0, len(body), 8192):
                piece = body[start:start + 8192]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what these tests want

    do_GET = do_POST = _answer  # noqa: N815 (http.server's names)


@pytest.fixture
def url(monkeypatch):
    monkeypatch.setattr(sync, "MAX_ANSWER", LIMIT)
    monkeypatch.setattr(aio, "MAX_ANSWER", LIMIT)
    with serving(_Answers) as url:
        yield url


def test_an_answer_of_exactly_the_limit_is_read_whole(url: str) -> None:
    assert sync.NodeClient(url, "t").request("GET", "/at-limit") == json.loads(AT_LIMIT)


@pytest.mark.parametrize("path", ["/over-limit", "/over-limit-chunked"])
def test_an_answer_over_the_limit_is_an_error_not_a_buffer(url: str, path: str) -> None:
    said = (f"answered GET {path} with more than {LIMIT:,} bytes" if path == "/over-limit" else
            f"answered GET {path} so that it cannot be read: it has no Content-Length")
    with pytest.raises(XscError, match=said):
        sync.NodeClient(url, "t").request("GET", path)
    with pytest.raises(XscError, match="more than"):
        sync.NodeClient(url, "t").download(path).read()
    with pytest.raises(XscError, match=f"answered POST {path} with more than"):
        sync.NodeClient(url, "t").post_stream(path, iter([b"{}"]), "application/json")


def test_the_put_of_a_handed_file_bounds_its_answer_alike(url: str) -> None:
    """Its one request is written on a socket of its own (no http.client), its answer read as far as needed."""
    client = sync.NodeClient(url, "t")
    assert client.put_handed("/at-limit", {"local": "t"}, lambda: 0) == json.loads(AT_LIMIT)
    with pytest.raises(XscError, match=f"answered POST /over-limit with more than {LIMIT:,} bytes"):
        client.put_handed("/over-limit", {"local": "t"}, lambda: 0)
    with pytest.raises(NotFound, match="no such file"):
        client.put_handed("/problem", {"local": "t"}, lambda: 0)
    with pytest.raises(XscError, match="cannot be read: it has no Content-Length"):
        client.put_handed("/long-problem-chunked", {"local": "t"}, lambda: 0)


@pytest.mark.parametrize("path", ["/not-json", "/not-json-deep"])
def test_an_answer_said_to_be_json_that_is_not_is_said_so_in_one_line(url: str, path: str, tmp_path) -> None:
    """Something other than a node at --node: each way the clients read a JSON answer refuses it as one line, not a
    traceback (nesting too deep for the parser included)."""
    client, said = sync.NodeClient(url, "t"), f"answered {{}} {path} with a body that is not JSON"
    with pytest.raises(XscError, match=said.format("GET")):
        client.request("GET", path)
    with pytest.raises(XscError, match=said.format("POST")):
        client.put_handed(path, {"local": "t"}, lambda: 0)
    with pytest.raises(XscError, match=said.format("POST")):
        client.post_stream(path, iter([b"{}"]), "application/json")
    for size in (1000, sync.EXPECT_ABOVE + 1):  # read whole and sent as a call's body; streamed
        (tmp_path / "f").write_bytes(b"x" * size)
        with (tmp_path / "f").open("rb") as f, pytest.raises(XscError, match=said.format("POST")):
            client.upload(path, f, size=size)
    with pytest.raises(XscError, match=said.format("GET")):  # the S3 front's client, both ways it reads
        asyncio.run(_call(url, path))
    with pytest.raises(XscError, match=said.format("POST")):
        asyncio.run(_post_bytes(url, path))


def test_a_node_that_hangs_up_without_answering_is_said_so_in_one_line(url: str) -> None:
    with pytest.raises(NodeNotRunning, match="closed the connection without a whole answer"):
        sync.NodeClient(url, "t").request("GET", "/hang-up")


def test_a_call_to_a_node_at_an_ipv6_address_names_its_host_in_brackets() -> None:
    server = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})(("::1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert sync.NodeClient(f"http://[::1]:{port}", "t").request("GET", "/problem-free") == {"ok": True}
        assert _Answers.hosts[-1] == f"[::1]:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_problem_is_its_error_and_a_long_one_is_cut(url: str) -> None:
    client = sync.NodeClient(url, "t")
    with pytest.raises(NotFound, match="no such file"):
        client.request("GET", "/problem")
    with pytest.raises(XscError, match="answered HTTP 500") as raised:
        client.request("GET", "/long-problem")
    assert len(str(raised.value)) < 400


async def _call(url: str, path: str):
    api = aio.NodeApi(url, "t")
    await api.start()
    try:
        return await api.call("GET", path)
    finally:
        await api.close()


async def _post_bytes(url: str, path: str):
    api = aio.NodeApi(url, "t")
    await api.start()
    try:
        return await api.post_bytes(path, b"x")
    finally:
        await api.close()


def test_the_asynchronous_client_bounds_its_answers_alike(url: str) -> None:
    assert asyncio.run(_call(url, "/at-limit")) == json.loads(AT_LIMIT)
    for path in ("/over-limit", "/over-limit-chunked"):
        with pytest.raises(XscError, match=f"answered GET {path} with more than {LIMIT:,} bytes"):
            asyncio.run(_call(url, path))
    with pytest.raises(NotFound, match="no such file"):
        asyncio.run(_call(url, "/problem"))
    for path in ("/long-problem", "/long-problem-chunked"):
        with pytest.raises(XscError, match="answered HTTP 500"):
            asyncio.run(_call(url, path))

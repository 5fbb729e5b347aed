"""A small, synchronous client of the node's user API, the CLI's (stdlib http.client: fast to import, streams both
ways).  A node's problem body becomes the XscError it was (`error_from_problem`), for this client and aio.py's."""

from __future__ import annotations

import http.client
import os
import socket
import stat
import unicodedata
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import urlencode, urlsplit

from .. import codec
from .. import errors

CHUNK = 1024 * 1024
SENDFILE_CHUNK = 4 * CHUNK  # a put's file is sent by sendfile(2) this much at a time, its progress told after each
# A put's body at most this long is sent at once; a longer one waits for `Expect: 100-continue`, so the node can
# refuse it (token, space, credit: a dry quote of the put) before it is sent.  For a small body that round trip and
# the quote cost more than sending bytes the node may refuse.
EXPECT_ABOVE = 1024 * 1024


def _error_classes() -> dict[str, type[errors.XscError]]:
    found: dict[str, type[errors.XscError]] = {}
    stack: list[type[errors.XscError]] = [errors.XscError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def printable(text: Any) -> Any:
    """Text without control or format characters (a newline and a tab kept): a problem's detail may carry what a
    peer wrote, and a terminal escape sequence in it must not reach the operator's terminal."""
    if not isinstance(text, str):
        return text
    return "".join(ch for ch in text if ch in "\n\t" or not unicodedata.category(ch).startswith("C"))


def error_from_problem(status: int, body: bytes) -> errors.XscError:
    """Rebuild the node's error from its problem body, so the CLI maps it like a local one (its texts printable)."""
    try:
        problem = codec.loads(body)
        code, detail = problem["code"], printable(problem["detail"])
    except (ValueError, KeyError, TypeError):
        return errors.XscError(printable(f"the node answered HTTP {status}: {body[:200].decode(errors='replace')}"))
    cls = _error_classes().get(code, errors.XscError)
    extra = {k: v for k, v in problem.items() if k not in ("type", "code", "status", "detail", "hint")}
    hint = printable(problem.get("hint"))
    if cls is errors.Trap:
        return errors.Trap(detail, hint=hint, **extra)
    err = cls(detail, hint=hint, **extra)
    err.code = code
    return err


class NodeClient:
    def __init__(self, url: str, token: str, *, start_hint: str = "start one with: xsc node start",
                 timeout: float | None = 600.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise errors.InvalidArgument(f"not a node URL: {url!r}", hint="use http://HOST:PORT")
        self.url = url
        self._host, self._port = parts.hostname, parts.port or 80
        self._token = token
        self._start_hint = start_hint
        self._timeout = timeout

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _exchange(self, path: str, query: dict[str, Any] | None,
                  send: Callable[[http.client.HTTPConnection, str], None]
                  ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect, let `send` write the request, read the answer; map connection and HTTP errors."""
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        conn = self._connect()
        try:
            send(conn, path)
            response = conn.getresponse()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
            # The node may have answered (storage full, say) and closed while we were still sending.
            try:
                response = conn.getresponse()
            except Exception:
                conn.close()
                raise errors.NodeNotRunning(f"the node at {self.url} closed the connection "
                                            f"({errors.connection_reason(exc)})", hint="check the node's log") from None
        except OSError as exc:  # refused, unknown host, timed out: said once, in plain words
            conn.close()
            raise errors.NodeNotRunning(f"cannot reach the node at {self.url}: {errors.connection_reason(exc)}",
                                        hint=f"is it running? {self._start_hint.replace('start one', 'start it')}") from None
        if response.status >= 400:
            data = response.read()
            conn.close()
            raise error_from_problem(response.status, data)
        return conn, response

    def _send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              query: dict[str, Any] | None = None, encode_chunked: bool = False
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        all_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        return self._exchange(path, query, lambda conn, target: conn.request(
            method, target, body=body, headers=all_headers, encode_chunked=encode_chunked))

    def _send_expecting(self, path: str, body: Callable[[socket.socket], None], headers: dict[str, str],
                        query: dict[str, Any] | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """POST with `Expect: 100-continue`: the node can refuse (token, space, credit) before the body is sent
        (`body(socket)` sends it)."""

        def send(conn: http.client.HTTPConnection, target: str) -> None:
            conn.putrequest("POST", target)
            for name, value in {"Authorization": f"Bearer {self._token}", "Expect": "100-continue",
                                **headers}.items():
                conn.putheader(name, value)
            conn.endheaders()
            interim = b"HTTP/1.1 100 Continue\r\n\r\n"
            if conn.sock.recv(len(interim), socket.MSG_PEEK) == interim:
                conn.sock.recv(len(interim))
                body(conn.sock)

        return self._exchange(path, query, send)

    def request(self, method: str, path: str, *, json_body: Any = None, query: dict[str, Any] | None = None,
                body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {}
        if json_body is not None:
            body = codec.dumps(json_body)
            headers["Content-Type"] = "application/json"
        elif content_type:
            headers["Content-Type"] = content_type
        conn, response = self._send(method, path, body, headers, query)
        try:
            data = response.read()
        finally:
            conn.close()
        if response.headers.get_content_type().endswith("json"):
            return codec.loads(data) if data else None
        return data

    def upload(self, path: str, stream: BinaryIO, *, size: int | None, query: dict[str, Any] | None = None,
               on_progress: Callable[[int], None] | None = None) -> Any:
        """POST a stream; with a known size it is sent with Content-Length, else chunked."""

        def chunks() -> Iterator[bytes]:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    return
                if on_progress:
                    on_progress(len(chunk))
                yield chunk

        def send(sock: socket.socket) -> None:
            if _regular_file(stream):
                _send_file(sock, stream, size, on_progress)
            else:
                for chunk in chunks():
                    sock.sendall(chunk)

        headers = {"Content-Type": "application/octet-stream"}
        if size is None:
            conn, response = self._send("POST", path, chunks(), headers, query, encode_chunked=True)
        else:
            headers["Content-Length"] = str(size)
            conn, response = (self._send_expecting(path, send, headers, query) if size > EXPECT_ABOVE
                              else self._send("POST", path, chunks(), headers, query))
        try:
            data = response.read()
        finally:
            conn.close()
        return codec.loads(data)

    def post_stream(self, path: str, chunks: Iterator[bytes], content_type: str) -> Any:
        """POST a body of unknown length (chunked), as it is produced; the JSON answer."""
        conn, response = self._send("POST", path, chunks, {"Content-Type": content_type}, None, encode_chunked=True)
        try:
            data = response.read()
        finally:
            conn.close()
        return codec.loads(data)

    def download(self, path: str, *, query: dict[str, Any] | None = None) -> "Download":
        conn, response = self._send("GET", path, query=query)
        return Download(conn, response)


def _regular_file(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # not backed by a file descriptor (io.BytesIO, say)
        return False


def _send_file(sock: socket.socket, stream: BinaryIO, size: int, on_progress: Callable[[int], None] | None) -> None:
    """`size` bytes of a regular file from its position, by sendfile(2): the kernel moves them from the page cache to
    the socket, without the copy into this process and out again that reading and sending take, a fifth of the
    CLI's CPU on a large put.  A file that ends early sends what it has, as reading it would."""
    offset, end = stream.tell(), stream.tell() + size
    while offset < end:
        sent = sock.sendfile(stream, offset, min(SENDFILE_CHUNK, end - offset))
        if not sent:
            return
        offset += sent
        if on_progress:
            on_progress(sent)


class Download:
    """A streaming response: iterate for chunks; headers carry what the node says about the body."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn, self.response = conn, response
        self.headers = response.headers

    def __iter__(self) -> Iterator[memoryview]:
        """Chunks of up to 4 MiB; each is only valid until the next one is read."""
        buffer = memoryview(bytearray(4 * CHUNK))
        try:
            while True:
                n = self.response.readinto(buffer)
                if not n:
                    return
                yield buffer[:n]
        finally:
            self._conn.close()

    def close(self) -> None:
        self._conn.close()

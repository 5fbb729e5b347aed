"""A small, synchronous client of the node's user API, the CLI's.  A request with a body of known length (every JSON
call, the put of a handed-over file, an upload of at most EXPECT_ABOVE bytes) is written on a connection of its own
and its answer, which the node always gives a Content-Length, read there (`_ask`); streams (a larger upload's body or
one of unknown length, a download) go through stdlib http.client, imported only then.  A node's problem body becomes
the XscError it was (`error_from_problem`), for this client and aio.py's.

A large body is read on a connection of its own (`open_body`) and passed on to a file, a pipe or a socket with
`NodeBody.splice_to`: by splice(2) through a pipe, so its bytes never enter this process, where the system has it
(Linux) and the output takes it; else by reading and writing them.  The CLI's get and the S3 front's relay so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import threading
import time
import unicodedata
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, NamedTuple
from urllib.parse import urlencode, urlsplit

from .. import errors

if TYPE_CHECKING:  # imported where used: most commands do without it and its ssl and email, ~12 ms of a CLI's start
    import http.client
# xsc.codec, with the orjson and json it loads (~3 ms of the CLI's start), is imported where a JSON body is read or
# sent: a get's body is none.

CHUNK = 1024 * 1024
SENDFILE_CHUNK = 4 * CHUNK  # a put's file is sent by sendfile(2) this much at a time, its progress told after each
# A put's body at most this long is sent at once; a longer one waits for `Expect: 100-continue`, so the node can
# refuse it (token, space, credit: a dry quote of the put) before it is sent.  For a small body that round trip and
# the quote cost more than sending bytes the node may refuse.
EXPECT_ABOVE = 1024 * 1024
SPLICE = hasattr(os, "splice")  # Linux: a large body is passed on by splice(2)
ANSWER_TIMEOUT = 300.0  # seconds `open_body` waits for the node's answer to begin
HAND_OVER_TIMEOUT = 10.0  # seconds `hand_over` waits for the node to take the file
POLL_SECONDS = 0.2  # how often `put_handed` looks how far the node read
# Bytes of the node's answers read at most, whoever runs the node (`--node` may name another's): a JSON answer (a
# listing of many files; a group's answer naming the files its objects made garbage) and a problem body (past it,
# the body is cut, and an error of its status said instead).  A trap's problem carries what the WASI program wrote
# before it failed: up to 64 KiB each of stdout and stderr (compute/wasi_io.OUTPUT_CAP), which JSON may write as
# six bytes a byte (a control character is \u0000): 768 KiB and the problem's own fields.
MAX_ANSWER = 256 * 1024 * 1024
MAX_PROBLEM = 1024 * 1024
NDJSON = "application/x-ndjson"
_PIPE_SIZE = 1024 * 1024  # asked of the kernel for splice's pipe (it may give less: fs.pipe-max-size)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


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
    from .. import codec

    try:
        problem = codec.loads(body)
        code, detail = problem["code"], printable(problem["detail"])
    except (ValueError, KeyError, TypeError):
        return errors.NotANode(printable(f"the node answered HTTP {status}: {body[:200].decode(errors='replace')}"))
    cls = _error_classes().get(code, errors.XscError)
    extra = {k: v for k, v in problem.items() if k not in ("type", "code", "status", "detail", "hint")}
    hint = printable(problem.get("hint"))
    if cls is errors.Trap:
        return errors.Trap(detail, hint=hint, **extra)
    err = cls(detail, hint=hint, **extra)
    err.code = code
    return err


def read_answer(response: http.client.HTTPResponse, what: str) -> bytes:
    """The body of `response`, or an XscError if it is longer than MAX_ANSWER (read no further than a byte past it)."""
    data = response.read(MAX_ANSWER + 1)
    if len(data) > MAX_ANSWER:
        raise errors.NotANode(f"the node answered {what} with more than {MAX_ANSWER:,} bytes",
                              hint="check that --node (or the data dir) names an XSC node")
    return data


class NodeClient:
    def __init__(self, url: str, token: str, *, start_hint: str = "start one with: xsc node start",
                 timeout: float | None = 600.0) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port  # urllib checks the port only when asked: a typo (:7O70, :70700) raises here
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            raise errors.InvalidArgument(f"not a node URL: {url!r}", hint="use http://HOST:PORT")
        self.url = url
        self._host, self._port = parts.hostname, port or 80
        self._token = token
        self._start_hint = start_hint
        self._timeout = timeout

    def _connect(self) -> http.client.HTTPConnection:
        import http.client

        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _exchange(self, path: str, query: dict[str, Any] | None,
                  send: Callable[[http.client.HTTPConnection, str], None]
                  ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect, let `send` write the request, read the answer; map connection and HTTP errors."""
        import http.client

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
            raise self._unreachable(exc) from None
        if response.status >= 400:
            data = response.read(MAX_PROBLEM)
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
                body: bytes | None = None, content_type: str | None = None,
                sent: Callable[[], None] | None = None) -> Any:
        """`method path` with a body of known length (`json_body` encoded, or `body` of `content_type`), and the
        answer: its JSON (an empty answer: b"").  `sent()` is called once the request is sent whole."""
        if json_body is not None:
            from .. import codec

            body, content_type = codec.dumps(json_body), "application/json"
        wait = None if sent is None else lambda sock: sent()
        headers, data = self._call(method, path, query, body or b"", content_type, wait)
        if not data:
            return data
        answered = _media_type(headers.get("content-type"))
        if not answered.endswith("json"):  # every answer of the user API with a body is JSON: this is not a node's
            raise _not_from_a_node(f"{method} {path}", answered, "JSON")
        return json_answer(data, f"{method} {path}")

    def _call(self, method: str, path: str, query: dict[str, Any] | None, body: bytes = b"",
              content_type: str | None = None, wait: Callable[[socket.socket], None] | None = None
              ) -> tuple[dict[str, str], bytes]:
        """One request with a body of known length, on a connection of its own (`_ask`: no http.client, whose import
        with the ssl and email it loads is ~12 ms of a command's start), and its answer's headers and body (read no
        further than MAX_ANSWER, a problem's than MAX_PROBLEM, which raises its XscError)."""
        if query:
            path_query = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        else:
            path_query = path
        typed = f"Content-Type: {content_type}\r\n" if content_type else ""
        try:
            answer = _ask(self._host, self._port, f"{method} {path_query} HTTP/1.1\r\nAuthorization: Bearer "
                          f"{self._token}\r\n{typed}Content-Length: {len(body)}\r\n", body, wait, self._timeout)
            with answer.sock:
                limit = min(answer.length, MAX_ANSWER if answer.status < 400 else MAX_PROBLEM)
                data = _read_on(answer.sock, answer.head, limit)[:limit]  # nothing past what it announced
        except UnreadableAnswer as exc:
            raise errors.NotANode(f"the node at {self.url} answered {method} {path} so that it cannot be read: {exc}",
                                  hint="check that --node (or the data dir) names an XSC node") from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        if answer.status >= 400:
            raise error_from_problem(answer.status, data)
        if len(data) < answer.length:
            raise errors.NotANode(f"the node answered {method} {path} with more than {MAX_ANSWER:,} bytes",
                                  hint="check that --node (or the data dir) names an XSC node")
        return answer.headers, data

    def upload(self, path: str, stream: BinaryIO, *, size: int | None, query: dict[str, Any] | None = None,
               on_progress: Callable[[int], None] | None = None) -> Any:
        """POST a stream; with a known size it is sent with Content-Length (at most EXPECT_ABOVE bytes: read whole and
        sent as a call's body is, `_call`), else chunked."""
        if size is not None and size <= EXPECT_ABOVE:
            body = stream.read(size)
            if on_progress:
                on_progress(len(body))
            answer = self._call("POST", path, query, body, "application/octet-stream")[1]
            return json_answer(answer, f"POST {path}")

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
            conn, response = self._send_expecting(path, send, headers, query)
        return _read_json(conn, response, f"POST {path}")

    def put_handed(self, path: str, query: dict[str, Any], offset: Callable[[], int],
                   on_progress: Callable[[int], None] | None = None) -> Any:
        """POST `path`, the put of a file handed to the node (`hand_over`: no body), and its JSON answer, waited for
        as long as the node reads on: `offset()` says how far it read (told to `on_progress` as it moves); the
        client's timeout passed without a byte read fails the put."""

        def wait(sock: socket.socket) -> None:
            watch, last = _Watch(None, self._timeout or float("inf")), offset()
            while not select.select([sock], [], [], POLL_SECONDS)[0]:
                now = offset()
                if now != last:
                    watch.moved()
                    if on_progress:
                        on_progress(now - last)
                    last = now
                try:
                    watch.check()
                except TimeoutError:
                    raise errors.NodeNotRunning(f"the node read nothing of the file for {watch.idle:.0f} s",
                                                hint="check the node's log") from None

        return json_answer(self._call("POST", path, query, wait=wait)[1], f"POST {path}")

    def post_stream(self, path: str, chunks: Iterator[bytes], content_type: str,
                    sent: Callable[[], None] | None = None) -> Any:
        """POST a body of unknown length (chunked), as it is produced; the JSON answer.  `sent()` is called once
        the request is sent whole (its last chunk too)."""
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": content_type}

        def send(conn: http.client.HTTPConnection, target: str) -> None:
            conn.request("POST", target, body=chunks, headers=headers, encode_chunked=True)
            if sent is not None:
                sent()

        conn, response = self._exchange(path, None, send)
        return _read_json(conn, response, f"POST {path}")

    def request_with_progress(self, method: str, path: str, progress: Callable[[dict], None]) -> Any:
        """`method path` of a long operation, its answer asked as lines (NDJSON): each {"progress": ...} told to
        `progress` as it comes, {"result": ...}'s returned, {"problem": ...} raised as its XscError.  An answer of
        plain JSON (a node that does not send lines) is returned as `request` returns it."""
        from .. import codec

        what = f"{method} {path}"
        conn, response = self._send(method, path, headers={"Accept": NDJSON})
        try:
            if _media_type(response.headers.get("Content-Type")) != NDJSON:
                return json_answer(read_answer(response, what), what)
            while line := response.readline(MAX_ANSWER):
                item = json_answer(line, what) if line.strip() else {}
                item = item if isinstance(item, dict) else {}
                if "progress" in item:
                    progress(item["progress"])
                elif "result" in item:
                    return item["result"]
                elif "problem" in item:
                    raise error_from_problem(item["problem"].get("status", 500), codec.dumps(item["problem"]))
        except OSError as exc:
            raise errors.NodeNotRunning(f"the node at {self.url} stopped answering {what} "
                                        f"({errors.connection_reason(exc)})", hint="check the node's log") from None
        finally:
            conn.close()
        raise errors.NodeNotRunning(f"the node at {self.url} stopped answering {what} before it was done",
                                    hint="check the node's log")

    def download(self, path: str, *, query: dict[str, Any] | None = None, media_type: str | None = None) -> "Download":
        """GET `path`, its body to stream; one of another Content-Type than `media_type` (if given) is refused."""
        conn, response = self._send("GET", path, query=query)
        if media_type is not None:
            try:
                expect_media_type(response.headers.get("Content-Type"), media_type, f"GET {path}")
            except errors.XscError:
                conn.close()
                raise
        return Download(conn, response, f"GET {path}")

    def open_body(self, path: str) -> "NodeBody":
        """GET `path`, a large body to pass on with `NodeBody.splice_to` (see open_body)."""
        try:
            body = open_body(self._host, self._port, f"Bearer {self._token}", path)
        except OSError as exc:
            raise self._unreachable(exc) from None
        body.idle = self._timeout or body.idle
        return body

    def _unreachable(self, exc: OSError) -> errors.NodeNotRunning:
        return errors.NodeNotRunning(f"cannot reach the node at {self.url}: {errors.connection_reason(exc)}",
                                     hint=f"is it running? {self._start_hint.replace('start one', 'start it')}")


def _read_json(conn: http.client.HTTPConnection, response: http.client.HTTPResponse, what: str) -> Any:
    """The JSON answer of `response` (bounded: read_answer), its connection closed."""
    try:
        data = read_answer(response, what)
    finally:
        conn.close()
    return json_answer(data, what)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _not_from_a_node(what: str, answered: str, wanted: str) -> errors.XscError:
    """The error of an answer of another media type than the node gives (a web server's page at --node)."""
    return errors.NotANode(printable(f"the node answered {what} with {answered or 'no Content-Type'}, not {wanted}"),
                           hint="check that --node (or the data dir) names an XSC node")


def expect_media_type(content_type: str | None, wanted: str, what: str) -> None:
    """Refuse a body the node would not have answered `what` with (its Content-Type is not `wanted`)."""
    answered = _media_type(content_type)
    if answered != wanted:
        raise _not_from_a_node(what, answered, wanted)


def json_answer(data: bytes, what: str) -> Any:
    """The JSON of the node's answer to `what` (e.g. "GET /v1/health"); one that is not JSON (not a node's: --node
    names something else) is an XscError said in one line."""
    from .. import codec

    try:
        return codec.loads(data)
    except ValueError:
        raise errors.NotANode(f"the node answered {what} with a body that is not JSON",
                              hint="check that --node (or the data dir) names an XSC node") from None


def hand_over(path: str, fd: int) -> tuple[str, int] | None:
    """Pass the open file `fd` to the node on the Unix socket `path` (xsc/serve/handoff.py): the token its put
    names it by, and its size as the node saw it; None if no node takes files there (no socket, nobody listening,
    an answer not understood).  The node's refusal raises its XscError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HAND_OVER_TIMEOUT)
        sock.connect(path)
        try:
            socket.send_fds(sock, [b"put"], [fd])
        except BrokenPipeError:
            pass  # the node refused this caller before reading (its uid) and closed: its answer waits all the same
        data = b""
        while not data.endswith(b"\n") and len(data) <= MAX_PROBLEM:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        return None
    finally:
        sock.close()
    from .. import codec

    try:
        answer = codec.loads(data)
        if "token" in answer:
            return str(answer["token"]), int(answer["size"])
    except (ValueError, KeyError, TypeError):
        return None
    raise error_from_problem(0, data)


def open_body(host: str, port: int, authorization: str, path: str, first: int | None = None,
              last: int | None = None) -> "NodeBody":
    """GET `path` (bytes first..last of it, inclusive) on a connection of its own, read up to its body's start: the
    rest stays in the socket, for `NodeBody.splice_to`.  Blocking.  The node's refusal raises its XscError; a
    connection that fails, or an answer cut short or without a Content-Length, raises OSError."""
    ranged = f"Range: bytes={first}-{last}\r\n" if first is not None else ""
    answer = _ask(host, port, f"GET {path} HTTP/1.1\r\nAuthorization: {authorization}\r\n{ranged}")
    sock, length = answer.sock, answer.length
    try:
        if answer.status >= 400:
            raise error_from_problem(answer.status, _read_on(sock, answer.head, min(length, MAX_PROBLEM)))
        sock.settimeout(None)
        head = _read_on(sock, answer.head, min(length, 1))  # its start: the node answered
        # a file's bytes are always application/octet-stream: anything else is not the node's (nor the file)
        expect_media_type(answer.headers.get("content-type"), "application/octet-stream", f"GET {path}")
        return NodeBody(sock, head, length)
    except BaseException:
        sock.close()
        raise


class UnreadableAnswer(ConnectionError):
    """An answer that is not one `_ask` reads: its head past 64 KiB or malformed, or its body of no Content-Length."""


class _Answer(NamedTuple):
    sock: socket.socket
    status: int
    headers: dict[str, str]  # their names in lower case
    length: int  # the body's, from its Content-Length
    head: bytes  # what of the body came with the headers


def _ask(host: str, port: int, request: str, body: bytes = b"", wait: Callable[[socket.socket], None] | None = None,
         timeout: float | None = ANSWER_TIMEOUT) -> _Answer:
    """Send `request` (its request line and header lines, each ending in CRLF; Host and Connection are added) and
    `body` on a connection of its own, let `wait(socket)` wait for the answer, and read the answer's head.  Blocking;
    `timeout`: seconds each read may wait.  A connection that fails or an answer cut short raises OSError, an answer
    not one this reads UnreadableAnswer (an OSError too), its socket closed.  The node's answers on these paths always
    have a Content-Length, and one request a connection leaves no connection to keep: what http.client would add is
    not needed here, and a CLI's start spares its import."""
    # getaddrinfo encodes a str host with the idna codec, whose import costs a CLI's start ~1 ms: an ASCII name (an
    # address, a node's usual URL) is passed as the bytes that codec would give.
    sock = socket.create_connection((host.encode() if host.isascii() else host, port), timeout=10)
    try:
        sock.settimeout(timeout)  # a loaded node may take long to open a file, not forever
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets
        try:
            sock.sendall(f"{request}Host: {authority}\r\nConnection: close\r\n\r\n".encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node refused before reading it all (a token, a size) and closed: its answer waits all the same
        if wait is not None:
            wait(sock)
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("the node closed the connection without a whole answer")
            if len(data) > 65536:
                raise UnreadableAnswer("its head is longer than 64 KiB")
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, sep, value in (line.partition(":") for line in lines)
                   if sep}
        try:
            status = int(status_line.split()[1])
            length = int(headers.get("content-length", "-1"))
        except (ValueError, IndexError):
            raise UnreadableAnswer(f"its status line is malformed: {status_line[:80]!r}") from None
        if length < 0 or "chunked" in headers.get("transfer-encoding", ""):
            raise UnreadableAnswer("it has no Content-Length")
        return _Answer(sock, status, headers, length, rest)
    except BaseException:
        sock.close()
        raise


def _read_on(sock: socket.socket, data: bytes, length: int) -> bytes:
    """`data` read on from `sock` to at least `length` bytes; ConnectionError if the node closes before."""
    parts, got = [data], len(data)
    while got < length:
        more = sock.recv(min(length - got, CHUNK))
        if not more:
            raise ConnectionError("the node closed the connection before the body")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class IncompleteBody(ConnectionError):
    """The node closed its connection before the whole body (it cuts a get it cannot finish so)."""


class _Watch:
    """A transfer's guard: it fails once `stop` is set, or after `idle` seconds without progress."""

    def __init__(self, stop: threading.Event | None, idle: float) -> None:
        self.stop, self.idle, self.last = stop, idle, time.monotonic()

    def moved(self) -> None:
        self.last = time.monotonic()

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise ConnectionError("the relay was stopped")
        if time.monotonic() - self.last > self.idle:
            raise TimeoutError(f"no progress in {self.idle:.0f} s")


def _wait(fds: dict[int, int]) -> None:
    """Until one of `fds` (descriptor -> poll event) is ready, or 200 ms (so a guard is checked)."""
    poller = select.poll()
    for fd, event in fds.items():
        poller.register(fd, event)
    poller.poll(200)


class NodeBody:
    """A body on the node's connection: `head` (read with the answer's headers, or by `peek`) and the rest, still
    in the socket (`left` bytes), to be passed on with `splice_to`, which counts what it passed on in `passed`."""

    def __init__(self, sock: socket.socket, head: bytes, length: int) -> None:
        self.sock, self.head, self.length = sock, head, length
        self.left = length - len(head)
        self.passed = 0
        self.idle = 60.0  # seconds without progress before `splice_to` gives up, unless told

    def close(self) -> None:
        self.sock.close()

    def peek(self, n: int) -> bytes:
        """The body's first `n` bytes (fewer if it is shorter, or ends early): read on into `head`.  TimeoutError
        after `idle` seconds without a byte."""
        self.sock.settimeout(self.idle)
        while len(self.head) < n and self.left:
            more = self.sock.recv(min(self.left, n - len(self.head)))
            if not more:
                break  # `splice_to` says the body is short
            self.head += more
            self.left -= len(more)
        return self.head[:n]

    def splice_to(self, out: int | BinaryIO, stop: threading.Event | None = None, idle: float | None = None,
                  progress: Callable[[int], None] | None = None, head: bool = False) -> None:
        """Pass the bytes after `head` (with `head=True`, `head` first) on to `out`, a descriptor which this closes,
        as it does the node's connection (give it a dup of one owned by someone else): by splice(2) through a pipe
        where the system has it and `out` takes it (not a file opened for appending, say), else by reading and
        writing them (so always to a binary file object given as `out`, which is left open).  Blocking (run it in a
        thread, or in a program's only one): returns when all are passed on; raises ConnectionError when either side
        ends early (IncompleteBody: the node's) or `stop` is set, TimeoutError after `idle` seconds without
        progress.  `progress(n)`: n more bytes were passed on."""
        watch = _Watch(stop, self.idle if idle is None else idle)
        # Never blocked in a read, so `stop` and `idle` are seen: a TCP socket's splice waits for data unless the
        # socket itself is non-blocking (SPLICE_F_NONBLOCK is the pipe's).
        self.sock.setblocking(False)
        try:
            if head:
                self._write(out, self.head, watch, progress)
            if not (SPLICE and isinstance(out, int) and self._splice(out, watch, progress)):
                self._copy(out, watch, progress)
            if not isinstance(out, int):
                out.flush()
        finally:
            if isinstance(out, int):
                os.close(out)
            self.sock.close()

    def _write(self, out: int | BinaryIO, data: bytes | memoryview, watch: _Watch,
               progress: Callable[[int], None] | None) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(out, view) if isinstance(out, int) else out.write(view) or len(view)
            except BlockingIOError:  # a non-blocking socket's buffer is full
                watch.check()
                _wait({out: select.POLLOUT})
                continue
            view = view[n:]
            self.passed += n
            watch.moved()
            if progress:
                progress(n)

    def _copy(self, out: int | BinaryIO, watch: _Watch, progress: Callable[[int], None] | None) -> None:
        buffer = memoryview(bytearray(CHUNK))
        while self.left:
            watch.check()
            try:
                n = self.sock.recv_into(buffer, min(self.left, CHUNK))
            except BlockingIOError:
                _wait({self.sock.fileno(): select.POLLIN})
                continue
            if not n:
                raise IncompleteBody(f"the node ended the file {self.left} bytes short")
            self.left -= n
            watch.moved()
            self._write(out, buffer[:n], watch, progress)

    def _splice(self, out: int, watch: _Watch, progress: Callable[[int], None] | None) -> bool:
        """The bytes left, passed on by splice(2); False when `out` takes none (then what the pipe held is written
        out, and the rest is left to `_copy`)."""
        read_end, write_end = os.pipe()
        try:
            try:
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # the default pipe size only means more rounds
            room = fcntl.fcntl(write_end, _F_GETPIPE_SZ)
            src, queued = self.sock.fileno(), 0
            flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
            ended = False  # the node closed early: what is in the pipe still goes out, then it is an error
            while (self.left and not ended) or queued:
                watch.check()
                moved = False
                if self.left and not ended and queued < room:
                    try:
                        n = os.splice(src, write_end, min(self.left, room - queued), flags=flags)
                    except BlockingIOError:
                        n = -1
                    if n == 0:
                        ended = moved = True
                    if n > 0:
                        self.left, queued, moved = self.left - n, queued + n, True
                if queued:
                    try:
                        n = os.splice(read_end, out, queued, flags=flags)
                    except BlockingIOError:
                        n = 0
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        while queued:
                            data = os.read(read_end, queued)
                            queued -= len(data)
                            self._write(out, data, watch, progress)
                        if ended:
                            raise IncompleteBody(f"the node ended the file {self.left} bytes short") from None
                        return False
                    if n:
                        queued, self.passed, moved = queued - n, self.passed + n, True
                        if progress:
                            progress(n)
                if moved:
                    watch.moved()
                    continue
                ready = {out: select.POLLOUT} if queued else {}
                if self.left and not ended and queued < room:
                    ready[src] = select.POLLIN
                _wait(ready)
            if ended:
                raise IncompleteBody(f"the node ended the file {self.left} bytes short")
            return True
        finally:
            os.close(read_end)
            os.close(write_end)


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

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, what: str) -> None:
        self._conn, self.response, self._what = conn, response, what
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

    def read(self) -> bytes:
        """The whole body, of at most MAX_ANSWER bytes (iterating keeps only one chunk at a time: joining its chunks
        would join one buffer)."""
        try:
            return read_answer(self.response, self._what)
        finally:
            self._conn.close()

    def close(self) -> None:
        self._conn.close()

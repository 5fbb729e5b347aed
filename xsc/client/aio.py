"""The asynchronous client of a node's user API, the S3 front's (the same API, token and paths the CLI uses).

Asynchronous (aiohttp) and streaming both ways: a put sends the body as it arrives, a get yields the
file as the node sends it.  The node's problem bodies become XscErrors (as in the CLI); a node that
does not answer is NodeNotRunning, which the front answers with 503 ServiceUnavailable.

A large read can also be relayed (`open_body`, then `NodeBody.splice_to`): the file's bytes go from the
node's socket to the S3 client's through a pipe by splice(2), without entering this process, so the front
costs the machine next to nothing per byte (on a loaded machine its CPU time is what the reader waits for).
"""

from __future__ import annotations

import email.parser
import fcntl
import os
import select
import socket
import threading
import time
from typing import Any, AsyncIterator
from urllib.parse import quote, urlsplit

import aiohttp

from .. import codec
from ..errors import NodeNotRunning, NotFound, XscError
from .sync import EXPECT_ABOVE, error_from_problem

CHUNK = 1024 * 1024
SPLICE = hasattr(os, "splice")  # Linux: large reads are relayed by splice(2)
ANSWER_TIMEOUT = 300.0  # seconds a relayed read waits for the node's answer to begin
_PIPE_SIZE = 1024 * 1024  # asked of the kernel for a relay's pipe (it may give less: fs.pipe-max-size)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class NodeApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "NodeApi.start() first"
        return self._session

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            body = await response.read()
            response.release()
            raise error_from_problem(response.status, body)

    def _down(self, exc: Exception) -> NodeNotRunning:
        return NodeNotRunning(f"the node at {self.url} is not answering: {exc}", hint="start it: xsc node start")

    async def call(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                   raw: bytes | None = None) -> Any:
        """A request to the node's API with a JSON body (or `raw` bytes); its JSON answer."""
        if raw is not None:
            data, headers = raw, {"Content-Type": "application/octet-stream"}
        else:
            data = None if body is None else codec.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self.session.request(method, self.url + path, params=params, data=data,
                                            headers=headers) as response:
                await self._raise_for(response)
                return await response.json(content_type=None)
        except XscError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None

    async def put_file(self, chunks: AsyncIterator[bytes], size: int | None, name: str) -> dict:
        """Store a stream as one XSC file (a `store put`: market, payment, placement); its put result."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        source_error: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            # The source's own refusal (a body not matching its signature, say) cuts the upload short, so
            # the node aborts it; it is that refusal, not the cut connection, that the caller must see.
            try:
                async for chunk in chunks:
                    yield chunk
            except BaseException as exc:
                source_error.append(exc)
                raise

        try:
            async with self.session.post(self.url + "/v1/store/files", params={"name": name}, data=body(),
                                         headers=headers, expect100=size is not None and size > EXPECT_ABOVE
                                         ) as response:
                await self._raise_for(response)
                if source_error:
                    raise source_error[0]
                return await response.json(content_type=None)
        except XscError:
            if source_error:
                raise source_error[0] from None
            raise
        except (aiohttp.ClientError, OSError) as exc:
            if source_error:
                raise source_error[0] from None
            raise self._down(exc) from None

    async def read_file(self, cap: str, first: int | None = None, last: int | None = None
                        ) -> AsyncIterator[bytes]:
        """The bytes of a file (or of bytes first..last, inclusive), as the node streams them.
        The node is asked before the first chunk is yielded; a cut stream raises NodeNotRunning."""
        headers = {"Range": f"bytes={first}-{last}"} if first is not None else {}
        try:
            response = await self.session.get(f"{self.url}/v1/store/files/{quote(cap, safe=':')}", headers=headers)
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None
        await self._raise_for(response)
        return self._stream(response)

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None
        finally:
            response.release()

    def open_body(self, cap: str, first: int | None = None, last: int | None = None) -> "NodeBody":
        """Ask the node for a file's bytes (or bytes first..last) on a connection of their own, to be relayed
        with `NodeBody.splice_to`.  Blocking (run it in a thread); the node's refusal raises its XscError."""
        where = urlsplit(self.url)
        try:
            sock = socket.create_connection((where.hostname, where.port or 80), timeout=10)
        except OSError as exc:
            raise self._down(exc) from None
        try:
            sock.settimeout(ANSWER_TIMEOUT)  # a loaded node may take long to open a file, not forever
            ranged = f"Range: bytes={first}-{last}\r\n" if first is not None else ""
            sock.sendall((f"GET /v1/store/files/{quote(cap, safe=':')} HTTP/1.1\r\nHost: {where.netloc}\r\n"
                          f"Authorization: {self._headers['Authorization']}\r\n{ranged}Connection: close\r\n\r\n"
                          ).encode("latin-1"))
            data = b""
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more or len(data) > 65536:
                    raise ConnectionError("the node closed the connection without a whole answer")
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            status_line, _, fields = head.decode("latin-1").partition("\r\n")
            status = int(status_line.split()[1])
            headers = email.parser.Parser().parsestr(fields, headersonly=True)
            length = int(headers.get("Content-Length", "-1"))
            if length < 0 or "chunked" in headers.get("Transfer-Encoding", ""):
                raise ConnectionError("the node's answer has no Content-Length")
            while len(rest) < min(length, 1 if status < 400 else length):  # the body's start (or a problem's whole)
                more = sock.recv(65536)
                if not more:
                    raise ConnectionError("the node closed the connection before the body")
                rest += more
            if status >= 400:
                raise error_from_problem(status, rest)
            sock.settimeout(None)
            return NodeBody(sock, rest, length)
        except XscError:
            sock.close()
            raise
        except (OSError, ValueError, IndexError) as exc:
            sock.close()
            raise self._down(exc) from None

    async def delete_file(self, cap: str) -> None:
        """Remove a file from the store (its deals end); one already gone is fine."""
        try:
            await self.call("DELETE", f"/v1/store/files/{quote(cap, safe=':')}")
        except NotFound:
            pass

    async def files(self) -> list[dict]:
        return (await self.call("GET", "/v1/store/files"))["files"]


class NodeBody:
    """A file's bytes on the node's connection: `head` (already read with the answer's headers) and the
    rest, still in the socket, to be passed on with `splice_to`."""

    def __init__(self, sock: socket.socket, head: bytes, length: int) -> None:
        self.sock, self.head, self.length = sock, head, length

    def close(self) -> None:
        self.sock.close()

    def splice_to(self, out: int, stop: threading.Event, idle: float = 60.0) -> None:
        """Pass the bytes after `head` on to the socket `out` (which this closes, as it does the node's
        connection: give it a dup of a descriptor owned by someone else), through a pipe by splice(2).
        Blocking (run it in a thread): returns when all are passed on; raises ConnectionError when either
        side ends early, TimeoutError after `idle` seconds without progress, or when `stop` is set."""
        read_end, write_end = os.pipe()
        try:
            try:
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # the default pipe size only means more rounds
            room = fcntl.fcntl(write_end, _F_GETPIPE_SZ)
            src, left, queued = self.sock.fileno(), self.length - len(self.head), 0
            flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
            last_progress = time.monotonic()
            ended = False  # the node closed early: what is in the pipe still goes out, then it is an error
            while (left and not ended) or queued:
                if stop.is_set():
                    raise ConnectionError("the relay was stopped")
                moved = False
                if left and not ended and queued < room:
                    try:
                        n = os.splice(src, write_end, min(left, room - queued), flags=flags)
                    except BlockingIOError:
                        n = -1
                    if n == 0:
                        ended = moved = True
                    if n > 0:
                        left, queued, moved = left - n, queued + n, True
                if queued:
                    try:
                        n = os.splice(read_end, out, queued, flags=flags)
                        queued, moved = queued - n, True
                    except BlockingIOError:
                        pass
                if moved:
                    last_progress = time.monotonic()
                    continue
                if time.monotonic() - last_progress > idle:
                    raise TimeoutError(f"no progress in {idle:.0f} s")
                poller = select.poll()
                if left and not ended and queued < room:
                    poller.register(src, select.POLLIN)
                if queued:
                    poller.register(out, select.POLLOUT)
                poller.poll(200)
            if ended:
                raise ConnectionError(f"the node ended the file {left} bytes short")
        finally:
            os.close(read_end)
            os.close(write_end)
            os.close(out)
            self.sock.close()

"""The asynchronous client of a node's user API, the S3 front's (the same API, token and paths the CLI uses).

Asynchronous (aiohttp) and streaming both ways: a put sends the body as it arrives, a get yields the
file as the node sends it.  The node's problem bodies become XscErrors (as in the CLI); a node that
does not answer is NodeNotRunning, which the front answers with 503 ServiceUnavailable.

A large read can also be relayed (`open_body`, then sync.NodeBody's `splice_to`, which the CLI's get uses too):
the file's bytes go from the node's socket to the S3 client's through a pipe by splice(2), without entering this
process, so the front costs the machine next to nothing per byte (on a loaded machine its CPU time is what the
reader waits for).

A small object's put (`post_bytes`: a group of them, or one alone) goes on the client's own kept-alive connections
(xsc/net/kept.py, as a node's paid invokes to a peer), not aiohttp's: the request written in one piece and its answer
read straight from the socket cost the front a fraction of the CPU aiohttp's client spends on one (docs/s3.md,
"Small objects").
"""

from __future__ import annotations

import ssl
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from .. import codec
from ..errors import InvalidArgument, NodeNotRunning, NotANode, NotFound, XscError
from ..net.kept import Cut, Kept, TooLarge, Unreached
from .sync import EXPECT_ABOVE, MAX_ANSWER, MAX_PROBLEM, NodeBody, error_from_problem, json_answer, open_body

CHUNK = 1024 * 1024


class NodeApi:
    def __init__(self, url: str, token: str, *, start_hint: str = "start it: xsc node start") -> None:
        self.url = url.rstrip("/")
        self._start_hint = start_hint  # the command that starts this node (with the --data-dir it was given)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None
        try:
            where = urlsplit(self.url)
            port = where.port  # checked only when asked: a typo'd port raises here
        except ValueError:
            raise InvalidArgument(f"not a node URL: {url!r}", hint="use http://HOST:PORT") from None
        tls = where.scheme == "https"  # as aiohttp's client would speak to it: the system's trusted roots
        self._host, self._port, self._authority = where.hostname or "", port or (443 if tls else 80), where.netloc
        self._tls = ssl.create_default_context() if tls else None
        self._kept = Kept()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        self._kept.close()
        if self._session is not None:
            await self._session.close()

    @property
    def kept_opened(self) -> int:
        """Connections `post_bytes` has opened so far (tests, status)."""
        return self._kept.opened

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "NodeApi.start() first"
        return self._session

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            body = await _read_at_most(response, MAX_PROBLEM)
            response.close()  # what is left of a longer body is not read
            raise error_from_problem(response.status, body)

    async def _answer(self, response: aiohttp.ClientResponse, what: str) -> Any:
        """The node's JSON answer (None for an empty one), of at most MAX_ANSWER bytes."""
        data = await _read_at_most(response, MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
            raise _too_large(what)
        return json_answer(data, what) if data.strip() else None

    def _down(self, exc: Exception) -> NodeNotRunning:
        return NodeNotRunning(f"the node at {self.url} is not answering: {exc}", hint=self._start_hint)

    async def call(self, method: str, path: str, *, params: dict | None = None, body: Any = None) -> Any:
        """A request to the node's API with a JSON body; its JSON answer."""
        data = None if body is None else codec.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self.session.request(method, self.url + path, params=params, data=data,
                                            headers=headers) as response:
                await self._raise_for(response)
                return await self._answer(response, f"{method} {path}")
        except XscError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None

    async def post_bytes(self, path: str, data: bytes, params: dict[str, str] | None = None) -> Any:
        """A POST of `data` (a path of the API's, already encoded) on the client's own kept-alive connections; the
        node's JSON answer, of at most MAX_ANSWER bytes.  Its refusal raises its XscError."""
        target = f"{path}?{urlencode(params, quote_via=quote)}" if params else path
        head = (f"POST {target} HTTP/1.1\r\nHost: {self._authority}\r\n"
                f"Authorization: {self._headers['Authorization']}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        try:
            status, _, answer = await self._kept.request(self._host, self._port, self._tls, head, data, timeout=None,
                                                         max_size=MAX_ANSWER)
        except TooLarge:
            raise _too_large(f"POST {path}") from None
        except (Unreached, Cut) as failed:
            raise self._down(failed.cause) from None
        if status >= 400:
            raise error_from_problem(status, answer)
        return json_answer(answer, f"POST {path}")

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
                return await self._answer(response, "POST /v1/store/files")
        except XscError:
            if source_error:
                raise source_error[0] from None
            raise
        except (aiohttp.ClientError, OSError) as exc:
            if source_error:
                raise source_error[0] from None
            raise self._down(exc) from None

    async def read_file(self, cap: str, first: int | None = None, last: int | None = None) -> FileStream:
        """The bytes of a file (or of bytes first..last, inclusive), as the node streams them: iterate, then close.
        The node is asked before this returns; a cut stream raises NodeNotRunning."""
        headers = {"Range": f"bytes={first}-{last}"} if first is not None else {}
        try:
            response = await self.session.get(f"{self.url}/v1/store/files/{quote(cap, safe=':')}", headers=headers)
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None
        await self._raise_for(response)
        return FileStream(response, self._down)

    def open_body(self, cap: str, first: int | None = None, last: int | None = None) -> NodeBody:
        """Ask the node for a file's bytes (or bytes first..last) on a connection of their own, to be relayed
        with `NodeBody.splice_to`.  Blocking (run it in a thread); the node's refusal raises its XscError."""
        where = urlsplit(self.url)
        try:
            return open_body(where.hostname, where.port or 80, self._headers["Authorization"],
                             f"/v1/store/files/{quote(cap, safe=':')}", first, last)
        except OSError as exc:
            raise self._down(exc) from None

    async def delete_file(self, cap: str) -> None:
        """Remove a file from the store (its deals end); one already gone is fine."""
        try:
            await self.call("DELETE", f"/v1/store/files/{quote(cap, safe=':')}")
        except NotFound:
            pass

    async def files(self) -> list[dict]:
        return (await self.call("GET", "/v1/store/files"))["files"]


class FileStream:
    """A file's bytes as the node streams them (`NodeApi.read_file`).  `aclose()` gives the response back at once,
    read or not: a body closed unread closes its connection (the node's get ends), rather than holding it until
    the response is collected."""

    def __init__(self, response: aiohttp.ClientResponse, down: Callable[[Exception], XscError]) -> None:
        self._response, self._down = response, down

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise self._down(exc) from None
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.release()  # its connection goes back to the pool only if the body was read to its end


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `response` as far as `limit` bytes: what a body says of its length is not trusted."""
    data = bytearray()
    while len(data) < limit and (chunk := await response.content.read(limit - len(data))):
        data += chunk
    return bytes(data)


def _too_large(what: str) -> XscError:
    return NotANode(f"the node answered {what} with more than {MAX_ANSWER:,} bytes",
                    hint="check that the node's URL names an XSC node")

"""An object's bytes, read from the part files that hold them: sent as the node's user API sends a file (in the node's
own process a large one is passed to the socket by its get's threads), or for a large body relayed from the node's
socket to the client's by splice(2) without passing through Python (a front over the node's user API, where the
system has splice: `NodeLink.relays`)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from aiohttp import web

from ..errors import InvalidCapability, XscError
from ..serve.direct import send_body
from ..storage.core.capability import Capability
from ..tasks import in_pool
from .link import NodeLink

log = logging.getLogger(__name__)


def _file_size(cap: str) -> int | None:
    """The size of the file `cap` names, as its capability says (None: no capability)."""
    try:
        return Capability.parse(cap).size
    except InvalidCapability:
        return None


class ObjectBodies:
    def __init__(self, node: NodeLink, stall: float | None = None) -> None:
        """`stall`: seconds a client may take no bytes of a body before it is cut (serve/direct.send_body)."""
        self.node, self.stall = node, stall
        self.relays = ThreadPoolExecutor(64, thread_name_prefix="xsc-s3-relay")  # blocking, not CPU: many

    def close(self) -> None:
        self.relays.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def pieces(record: dict, first: int, last: int) -> list[tuple[str, int | None, int | None]]:
        """Which part files hold bytes first..last (inclusive) of an object, and which of their bytes
        (None, None: all of them)."""
        pieces, offset = [], 0
        for part in record["parts"]:
            end = offset + part["size"]
            if part["size"] and end > first and offset <= last:
                a, b = max(first, offset) - offset, min(last, end - 1) - offset
                # Whole only if the record's size is its file's: the node sends a whole file to its end, and bytes
                # past the Content-Length the record's size made would be read as the next answer on the connection.
                whole = a == 0 and b == part["size"] - 1 and _file_size(part["cap"]) == part["size"]
                pieces.append((part["cap"], None if whole else a, None if whole else b))
            offset = end
            if offset > last:
                break
        return pieces

    async def read(self, record: dict, first: int, last: int) -> AsyncIterator[bytes]:
        """Bytes first..last (inclusive) of an object: from each part file that holds some of them, only those."""
        for cap, a, b in self.pieces(record, first, last):
            body = await self.node.open_file(cap, a, b)
            try:
                async for chunk in body:
                    yield chunk
            finally:
                await body.aclose()

    async def send(self, request: web.Request, response: web.StreamResponse, record: dict, first: int, last: int,
                   name: str) -> web.StreamResponse:
        """A GetObject body, each part file's slice sent as the node's user API sends a file (`send_body`: in the
        node's own process, a large slice of shares all held here is passed to the socket by its get's threads).
        The first part is opened before the headers go out, so a file the node cannot read is still an S3 error; a
        later failure, or a client gone, cuts the connection (a short body, never wrong bytes)."""
        pieces = self.pieces(record, first, last)
        body = await self.node.open_file(*pieces[0])
        try:
            await response.prepare(request)
            for i, piece in enumerate(pieces):
                if i:
                    await body.aclose()
                    body = await self.node.open_file(*piece)
                await send_body(request, response, body, stall=self.stall)
        except (XscError, OSError) as err:
            _cut_short(name, err, request.transport)
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            await body.aclose()
        await response.write_eof()
        return response

    async def relay(self, request: web.Request, response: web.StreamResponse, record: dict, first: int, last: int,
                    name: str) -> web.StreamResponse:
        """A large GetObject body, relayed from the node's socket to the client's by splice(2) (see
        xsc.client.sync.NodeBody).  The first part is asked for before the headers go out, so a file the node
        cannot read is still an S3 error; a later failure cuts the connection (a short body, never wrong bytes)."""
        pieces = self.pieces(record, first, last)
        body = await in_pool(self.relays, self.node.open_body, *pieces[0])
        stop = threading.Event()
        transport = request.transport
        try:
            await response.prepare(request)
        except BaseException:
            body.close()
            raise
        transport.pause_reading()  # as asyncio's own sendfile does: the socket is ours until the body is out
        try:
            for i, piece in enumerate(pieces):
                if i:
                    body = await in_pool(self.relays, self.node.open_body, *piece)
                try:
                    await response.write(body.head)  # the headers too, the first time
                    while transport.get_write_buffer_size():  # what aiohttp holds goes out before the spliced bytes
                        if transport.is_closing():
                            raise ConnectionResetError("the client went away")
                        await asyncio.sleep(0.001)
                    sock = transport.get_extra_info("socket")
                    if sock is None:
                        raise ConnectionResetError("the client went away")
                    out = os.dup(sock.fileno())
                except BaseException:
                    body.close()
                    raise
                await in_pool(self.relays, body.splice_to, out, stop)  # it closes `out` and the node's connection
        except (XscError, OSError) as err:
            _cut_short(name, err, transport)
            transport.close()
            return response
        finally:
            stop.set()  # a relay whose request was cancelled ends within its poll interval
            if not transport.is_closing():
                transport.resume_reading()
        await response.write_eof()
        return response


def _cut_short(name: str, err: BaseException, transport: asyncio.BaseTransport | None) -> None:
    """Log a GetObject body cut short: a client that went away (its connection closing: a reader that had enough, a
    retry) is no fault of the front's or the node's, said as info; anything else (the node failing mid-body) is an
    error the operator is to see."""
    if transport is None or transport.is_closing():
        log.info("get of %s cut short: the client went away (%s)", name, err)
    else:
        log.error("get of %s stopped: %s", name, err)

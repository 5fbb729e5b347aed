"""Every peer route is priced before work (node/peer_routes.py), on a real node: the table names every peer route
the node serves, and for each one a stranger's largest request is refused before a byte of its body is read, or
charged to that stranger's work quota on its headers; a share upload's body is bounded by what the share holds."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from tests.support.shares import DEAL_PRICE, SHARE, EncodedFile, lease
from xsc.identity import Identity, sign_request
from xsc.net import PeerClient
from xsc.storage.holder_client import RemoteHolder
from xsc.node import IDENTITY
from xsc.node.appkeys import NODE, PEER_WORK
from xsc.node.auth import PEER_PREFIX
from xsc.node.peer_routes import PEER_ROUTES, WORK_BURST
from xsc.storage.core.wire import MAX_PUT_BYTES

WORK_RATE = 5.0  # units a second: a burst of 40, less than any route's largest request but the smallest ones'
FILLERS = {"si": "ab" * 32, "share": "1", "upload": "u" * 16, "first": "0", "authorization": "cd" * 32, "job": "ef" * 16,
           "offset": "0", "output": "0", "name": "hello", "id": "01" * 16}


def _served(app) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None and route.resource.canonical.startswith(PEER_PREFIX)
            and route.method != "HEAD"}


async def _headers_only(node, stranger: Identity, method: str, path: str, size: int) -> tuple[int, bytes]:
    """Send a signed request declaring a body of `size` bytes, and none of it: the status line that comes back."""
    headers = sign_request(stranger, method, path, b"", receiver=node.app[IDENTITY].id)
    url = node.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [f"{method} {path} HTTP/1.1", f"Host: {url.host}:{url.port}", f"Content-Length: {size}",
            "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(head).encode())
    await writer.drain()
    try:
        status_line = await asyncio.wait_for(reader.readline(), 20)  # a handler reading the body: 408 after 30 s
    finally:
        writer.close()
    return int(status_line.split()[1]), status_line


async def test_every_peer_route_is_refused_before_its_body_or_charged_to_its_sender(node_factory) -> None:
    node = await node_factory(peers={"min_difficulty": 0, "work_rate": WORK_RATE})
    served = _served(node.app)
    assert served == set(PEER_ROUTES), ("peer routes without a price", sorted(served - set(PEER_ROUTES)),
                                        "priced routes the node does not serve", sorted(set(PEER_ROUTES) - served))
    burst = WORK_RATE * WORK_BURST
    for (method, template), price in sorted(PEER_ROUTES.items()):
        path = re.sub(r"\{(\w+)\}", lambda m: FILLERS[m.group(1)], template)
        stranger = Identity.generate()
        units = price.units(price.max_body)
        if units > burst:  # its largest request costs more than a sender may spend: refused from its headers
            status, line = await _headers_only(node, stranger, method, path, price.max_body)
            assert status in (403, 404, 413, 429), (method, template, line)
        else:  # small enough to be read: charged to the sender before it is
            body = b"\0" * price.max_body
            headers = sign_request(stranger, method, path, body, receiver=node.app[IDENTITY].id)
            response = await node.request(method, path, data=body, headers={**headers, "Authorization": ""})
            assert response.status < 500, (method, template, response.status, await response.text())
            left = node.app[PEER_WORK].tokens(stranger.id, time.monotonic())
            assert left <= burst - units + 1, (method, template, left, units)


async def test_a_share_upload_body_is_bounded_by_what_the_share_holds_before_it_is_read(node_factory) -> None:
    """A share of a few hundred bytes takes segment bodies of a few hundred bytes: one declaring 16 MiB is
    refused (413) before a byte of it is read, and the share's own blocks still go in."""
    node = await node_factory()
    uploader = Identity.generate()
    f = EncodedFile(300)
    async with aiohttp.ClientSession() as session:
        holder = RemoteHolder(PeerClient(uploader, session, 30.0), node.app[IDENTITY].id, node.app[NODE].peers.url,
                              DEAL_PRICE, uploader.id)
        upload = await holder.begin(f.si, SHARE, f.size, f.segment_size, lease())
        status, line = await _headers_only(node, uploader, "PUT", f"/v1/peer/uploads/{upload}/segments/0",
                                           MAX_PUT_BYTES)
        assert status == 413, line
        await holder.put_segments(upload, 0, f.blocks[SHARE])
        await holder.commit(upload, f.hashes[SHARE], f.manifest.encode())
    assert len(node.app[NODE].share_holder) == 0 and node.app[NODE].gateway.store.shares_held == 1
